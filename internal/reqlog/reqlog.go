// Package reqlog carries the request id in the context, so every log line a
// request causes, in any layer, can be tied back to it; inner layers annotate
// the request (token, environment) for the one line the log interceptor
// writes when the call ends.
package reqlog

import (
	"context"
	"log/slog"
	"sync"
)

type key struct{}

// entry belongs to one request; inner interceptors fill it in.
type entry struct {
	id    string
	mu    sync.Mutex
	attrs []any
}

// With returns ctx carrying the request id.
func With(ctx context.Context, requestID string) context.Context {
	return context.WithValue(ctx, key{}, &entry{id: requestID})
}

// ID returns the request id in ctx, or "".
func ID(ctx context.Context) string {
	if e, ok := ctx.Value(key{}).(*entry); ok {
		return e.id
	}
	return ""
}

// Annotate adds key/value attributes to the request's closing log line.
func Annotate(ctx context.Context, attrs ...any) {
	if e, ok := ctx.Value(key{}).(*entry); ok {
		e.mu.Lock()
		e.attrs = append(e.attrs, attrs...)
		e.mu.Unlock()
	}
}

// Annotations returns the attributes added with Annotate.
func Annotations(ctx context.Context) []any {
	if e, ok := ctx.Value(key{}).(*entry); ok {
		e.mu.Lock()
		defer e.mu.Unlock()
		return append([]any(nil), e.attrs...)
	}
	return nil
}

// Logger returns log with the request id of ctx attached.
func Logger(ctx context.Context, log *slog.Logger) *slog.Logger {
	if id := ID(ctx); id != "" {
		return log.With("request_id", id)
	}
	return log
}
