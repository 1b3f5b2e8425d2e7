package auth

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/cache"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/reqlog"
)

// Cache bounds of token lookups. Revocation invalidates through the event
// bus at once; the TTL only bounds how long a missed event could matter.
const (
	cacheSize   = 10_000
	cacheTTL    = 30 * time.Second
	negativeTTL = 5 * time.Second
	// maxStale bounds how long a known token keeps working while the control
	// plane cannot be reached.
	maxStale = 5 * time.Minute
	// touchEvery bounds the writes that record token use.
	touchEvery = time.Minute
)

// TokenLookup is what the Authenticator needs of the control plane.
type TokenLookup interface {
	GetTokenBySecretHash(ctx context.Context, hash []byte) (controlplane.Token, error)
	TouchToken(ctx context.Context, id string, at time.Time) error
}

// Authenticator is the interceptor that turns "Authorization: Bearer …" into
// the Principal of the call, or UNAUTHENTICATED.
type Authenticator struct {
	store TokenLookup
	// known caches tokens by secret hash; unknown remembers hashes that match
	// no token, briefly, so a client retrying a wrong token costs no reads. A
	// real secret cannot be presented before its token exists, so a negative
	// entry never hides a new token.
	known   *cache.Cache[string, controlplane.Token]
	unknown *expirable.LRU[string, struct{}]
	log     *slog.Logger
	now     func() time.Time

	// guard keeps a read that raced a token invalidation out of the cache:
	// a read from before a revocation would keep the revoked token working
	// until the TTL.
	guard cache.Guard
}

// NewAuthenticator returns an Authenticator reading tokens from store and
// dropping cached ones on KindToken events (and everything on KindAll).
func NewAuthenticator(store TokenLookup, events invalidate.Subscriber, log *slog.Logger) *Authenticator {
	a := &Authenticator{
		store:   store,
		known:   cache.New[string, controlplane.Token](cacheSize, cacheTTL, maxStale),
		unknown: expirable.NewLRU[string, struct{}](cacheSize, nil, negativeTTL),
		log:     log.With("component", "auth"),
		now:     time.Now,
	}
	events.Subscribe(a.invalidate)
	return a
}

func (a *Authenticator) invalidate(ev invalidate.Event) {
	if ev.Kind != invalidate.KindAll && ev.Kind != invalidate.KindToken {
		return
	}
	defer a.guard.Invalidate()()
	switch ev.Kind {
	case invalidate.KindAll:
		a.known.Purge()
		a.unknown.Purge()
	case invalidate.KindToken:
		for _, key := range a.known.Keys() {
			if tok, ok := a.known.PeekAny(key); ok && tok.ID == ev.TokenID {
				a.known.Remove(key)
			}
		}
	}
}

// Authenticate returns the principal of an Authorization header value.
func (a *Authenticator) Authenticate(ctx context.Context, authorization string) (*Principal, error) {
	secret, present, ok := ParseAuthorization(authorization)
	if !present {
		return nil, unauthenticated(ReasonTokenMissing, `this call needs "Authorization: Bearer <token>"`)
	}
	if !ok {
		return nil, unauthenticated(ReasonTokenMalformed, `the Authorization header is not "Bearer envp_…" with a well-formed token`)
	}
	hash := HashSecret(secret)
	key := string(hash)
	gen := a.guard.Begin()
	if a.unknown.Contains(key) {
		return nil, unauthenticated(ReasonTokenUnknown, "the token is not known")
	}
	tok, hit := a.known.Get(key)
	if !hit {
		var err error
		tok, err = a.store.GetTokenBySecretHash(ctx, hash)
		switch {
		case errors.Is(err, controlplane.ErrNotFound):
			a.unknown.Add(key, struct{}{})
			return nil, unauthenticated(ReasonTokenUnknown, "the token is not known")
		case err != nil:
			stale, ok := a.known.Stale(key)
			if !ok {
				reqlog.Logger(ctx, a.log).Warn("token lookup failed and the token is not known from before")
				reqlog.Logger(ctx, a.log).Debug("token lookup failure", "error", err)
				return nil, apierr.New(connect.CodeUnavailable, apierr.ReasonControlPlaneUnavailable, "cannot check the token now; retry")
			}
			// The control plane is unreachable: a token seen recently keeps
			// working (revocations still arrive as events and remove it).
			reqlog.Logger(ctx, a.log).Warn("control plane unreachable; accepting a recently seen token")
			tok = stale
		default:
			a.cache(key, tok, gen)
		}
	}
	now := a.now()
	if !tok.RevokeTime.IsZero() {
		return nil, unauthenticated(ReasonTokenRevoked, "the token was revoked")
	}
	if !tok.ExpireTime.IsZero() && !now.Before(tok.ExpireTime) {
		return nil, unauthenticated(ReasonTokenExpired, "the token has expired")
	}
	a.touch(ctx, key, tok, now, gen)
	return &Principal{
		TokenID:        tok.ID,
		Name:           tok.Name,
		OrganizationID: tok.OrganizationID,
		Role:           tok.Role,
		PlatformAdmin:  tok.PlatformAdmin,
		EnvironmentIDs: tok.EnvironmentIDs,
		ExpireTime:     tok.ExpireTime,
	}, nil
}

// touch records the token's use at most once per touchEvery, off the
// request path, so authentication stays a cache read.
func (a *Authenticator) touch(ctx context.Context, key string, tok controlplane.Token, now time.Time, gen uint64) {
	if now.Sub(tok.LastUseTime) < touchEvery {
		return
	}
	tok.LastUseTime = now
	a.cache(key, tok, gen)
	id := tok.ID
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.store.TouchToken(ctx, id, now); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			a.log.Debug("recording token use failed", "token_id", id, "error", err)
		}
	}()
}

// cache remembers tok unless a token invalidation happened since gen was
// read: tok may then predate it.
func (a *Authenticator) cache(key string, tok controlplane.Token, gen uint64) {
	a.guard.Add(gen, func() { a.known.Add(key, tok) })
}

// WrapUnary implements connect.Interceptor.
func (a *Authenticator) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p, err := a.Authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		reqlog.Annotate(ctx, "token_id", p.TokenID)
		return next(WithPrincipal(ctx, p), req)
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (a *Authenticator) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (a *Authenticator) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p, err := a.Authenticate(ctx, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		reqlog.Annotate(ctx, "token_id", p.TokenID)
		return next(WithPrincipal(ctx, p), conn)
	}
}
