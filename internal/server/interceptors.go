package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime/debug"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/reqlog"
)

// HeaderRequestID carries the request id in both directions: a caller may
// supply one (to correlate with its own logs), otherwise the server makes one.
const HeaderRequestID = "X-Request-Id"

// ReasonValidation is the ErrorInfo reason of a request the contract refuses.
const ReasonValidation = "VALIDATION_FAILED"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Interceptors returns the interceptor chain, outermost first, because the
// order matters: log → recover → authenticate → validate → handler. Logging
// sits outside recovery (unlike STYLE.md's sketch) so a recovered panic still
// gets its one line with request id and code INTERNAL; authentication comes
// before validation so an anonymous caller learns nothing about the contract
// from its errors. Environment resolution follows validation: the services
// that are environment-scoped (metadata, data) add it as their own
// interceptor (server.Service.Interceptors), inside this chain.
func Interceptors(log *slog.Logger, authn connect.Interceptor) ([]connect.Interceptor, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}
	return []connect.Interceptor{
		logInterceptor{log: log},
		recoverInterceptor{log: log},
		authn,
		validateInterceptor{validator: validator},
	}, nil
}

// recoverInterceptor turns a handler panic into INTERNAL so one bad request
// cannot take the process down; the stack goes to the log, not the client.
// It also turns an error that is not a Connect error (which Connect would
// answer as UNKNOWN, with the error's text) into INTERNAL: only errors made
// for clients reach them, and UNKNOWN never comes from a handler.
type recoverInterceptor struct{ log *slog.Logger }

func (i recoverInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
		defer func() {
			if r := recover(); r != nil {
				reqlog.Logger(ctx, i.log).Error("handler panicked",
					"procedure", procedure(ctx, req), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				resp, err = nil, apierr.Internal()
			}
		}()
		resp, err = next(ctx, req)
		if err != nil {
			err = i.forClient(ctx, procedure(ctx, req), err)
		}
		return resp, err
	}
}

// forClient passes Connect errors on, and context errors, which Connect
// answers as CANCELED or DEADLINE_EXCEEDED; anything else is logged and
// answered INTERNAL.
func (i recoverInterceptor) forClient(ctx context.Context, procedure string, err error) error {
	if ce := new(connect.Error); errors.As(err, &ce) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	reqlog.Logger(ctx, i.log).Error("handler returned an error not meant for clients", "procedure", procedure, "error", err)
	return apierr.Internal()
}

func (i recoverInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i recoverInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		defer func() {
			if r := recover(); r != nil {
				reqlog.Logger(ctx, i.log).Error("handler panicked",
					"procedure", conn.Spec().Procedure, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = apierr.Internal()
			}
		}()
		return next(ctx, conn)
	}
}

// logInterceptor assigns the request id and writes one line per call with
// procedure, protocol, code and duration. It logs no message bodies and no
// error causes: those may hold secrets; handlers log causes at debug level.
type logInterceptor struct{ log *slog.Logger }

func (i logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		id := requestID(req.Header().Get(HeaderRequestID))
		ctx = reqlog.With(ctx, id)
		start := time.Now()
		resp, err := next(ctx, req)
		if resp != nil {
			resp.Header().Set(HeaderRequestID, id)
		} else if ce := new(connect.Error); errors.As(err, &ce) {
			ce.Meta().Set(HeaderRequestID, id)
		}
		procedure, protocol := procedureOf(ctx, req)
		i.record(ctx, procedure, protocol, start, err)
		return resp, err
	}
}

func (i logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		id := requestID(conn.RequestHeader().Get(HeaderRequestID))
		ctx = reqlog.With(ctx, id)
		conn.ResponseHeader().Set(HeaderRequestID, id)
		start := time.Now()
		err := next(ctx, conn)
		i.record(ctx, conn.Spec().Procedure, conn.Peer().Protocol, start, err)
		return err
	}
}

func (i logInterceptor) record(ctx context.Context, procedure, protocol string, start time.Time, err error) {
	code := "ok"
	level := slog.LevelInfo
	reason := ""
	if err != nil {
		c := connect.CodeOf(err)
		code, reason = c.String(), apierr.Reason(err)
		switch c {
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
			level = slog.LevelError
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
			level = slog.LevelWarn
		}
	}
	// Written to the handler directly: a logger would look up its caller
	// (which no handler here prints), and a logger With the request id
	// would be built for the one line (together a third of this line's cost,
	// on every call).
	h := i.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	attrs := make([]any, 0, 16)
	if id := reqlog.ID(ctx); id != "" {
		attrs = append(attrs, "request_id", id)
	}
	attrs = append(attrs, "procedure", procedure, "protocol", protocol, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	if reason != "" {
		attrs = append(attrs, "reason", reason)
	}
	attrs = append(attrs, reqlog.Annotations(ctx)...)
	attrs = append(attrs, "code", code)
	r := slog.NewRecord(time.Now(), level, "rpc", 0)
	r.Add(attrs...)
	_ = h.Handle(ctx, r)
}

func requestID(supplied string) string {
	if requestIDPattern.MatchString(supplied) {
		return supplied
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validateInterceptor enforces the protovalidate rules of the contract before
// any handler runs, answering INVALID_ARGUMENT with a BadRequest listing
// every violation.
type validateInterceptor struct{ validator protovalidate.Validator }

func (i validateInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if msg, ok := req.Any().(proto.Message); ok {
			if err := i.check(msg); err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

func (i validateInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i validateInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (i validateInterceptor) check(msg proto.Message) error {
	err := i.validator.Validate(msg)
	if err == nil {
		return nil
	}
	var ve *protovalidate.ValidationError
	if !errors.As(err, &ve) {
		return apierr.Internal()
	}
	violations := make([]apierr.FieldViolation, 0, len(ve.Violations))
	for _, v := range ve.Violations {
		violations = append(violations, apierr.FieldViolation{
			Field:       protovalidate.FieldPathString(v.Proto.GetField()),
			Description: v.Proto.GetMessage(),
		})
	}
	msg0 := "the request is invalid"
	if len(violations) > 0 {
		msg0 = fmt.Sprintf("invalid request: %s: %s", violations[0].Field, violations[0].Description)
		if len(violations) > 1 {
			msg0 += fmt.Sprintf(" (and %d more)", len(violations)-1)
		}
	}
	return apierr.InvalidArgument(ReasonValidation, msg0, violations...)
}
