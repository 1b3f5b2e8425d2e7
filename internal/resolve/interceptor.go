package resolve

import (
	"context"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/reqlog"
)

// environmentScoped is implemented by every request message of an
// environment-scoped service (the generated GetEnvironmentId).
type environmentScoped interface {
	GetEnvironmentId() string
}

type envKey struct{}

// From returns the environment the call was resolved to. Handlers of
// environment-scoped services can rely on it: the interceptor ran first.
//
// The environment is shared by the whole call and cached by the resolver:
// callers read it and never change it. Outside a resolved call it is a zero
// environment (ok false).
func From(ctx context.Context) (*controlplane.Environment, bool) {
	if env, ok := ctx.Value(envKey{}).(*controlplane.Environment); ok {
		return env, true
	}
	return new(controlplane.Environment), false
}

// WithEnvironment returns ctx carrying env (a pointer: an environment is
// hundreds of bytes, which a value in a context would copy onto the heap
// for every call).
func WithEnvironment(ctx context.Context, env *controlplane.Environment) context.Context {
	return context.WithValue(ctx, envKey{}, env)
}

// Interceptor resolves the environment of each call, authorizes the caller
// for it, carries it in the context and echoes its id in the response's
// X-Environment-Id header. It runs after authentication and validation.
func (r *Resolver) Interceptor() connect.Interceptor {
	return interceptor{r}
}

type interceptor struct{ r *Resolver }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		h := Hints{Host: req.Header().Get("Host"), Header: req.Header().Get(HeaderEnvironmentID)}
		if m, ok := req.Any().(environmentScoped); ok {
			h.EnvironmentID = m.GetEnvironmentId()
		}
		env, source, err := i.r.resolve(ctx, h, auth.From(ctx))
		if err != nil {
			return nil, err
		}
		reqlog.Annotate(ctx, "environment_id", env.ID, "resolved_by", source)
		resp, err := next(WithEnvironment(ctx, env), req)
		if resp != nil {
			resp.Header().Set(HeaderEnvironmentID, env.ID)
		} else if ce, ok := err.(*connect.Error); ok {
			ce.Meta().Set(HeaderEnvironmentID, env.ID)
		}
		return resp, err
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		h := Hints{Host: conn.RequestHeader().Get("Host"), Header: conn.RequestHeader().Get(HeaderEnvironmentID)}
		env, source, err := i.r.resolve(ctx, h, auth.From(ctx))
		if err != nil {
			return err
		}
		reqlog.Annotate(ctx, "environment_id", env.ID, "resolved_by", source)
		conn.ResponseHeader().Set(HeaderEnvironmentID, env.ID)
		return next(WithEnvironment(ctx, env), conn)
	}
}
