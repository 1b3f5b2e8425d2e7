// Package reqlog carries the request id in the context, so every log line a
// request causes, in any layer, can be tied back to it.
package reqlog

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns ctx carrying the request id.
func With(ctx context.Context, requestID string) context.Context {
	return context.WithValue(ctx, key{}, requestID)
}

// ID returns the request id in ctx, or "".
func ID(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// Logger returns log with the request id of ctx attached.
func Logger(ctx context.Context, log *slog.Logger) *slog.Logger {
	if id := ID(ctx); id != "" {
		return log.With("request_id", id)
	}
	return log
}
