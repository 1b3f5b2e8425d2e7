package server

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// Readiness tells whether the process can serve calls now: its control
// plane answers and, with several replicas, its invalidation listener is up.
// Liveness (/healthz) stays a cheap "the process runs".
type Readiness interface {
	Ready(ctx context.Context) error
}

// readyTimeout bounds one readiness probe.
const readyTimeout = 2 * time.Second

// healthChecker answers gRPC health checks from Readiness: SERVING when
// ready, NOT_SERVING otherwise (a load balancer then stops routing here).
type healthChecker struct {
	services []string
	ready    Readiness
	log      *slog.Logger
}

func (h healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && !slices.Contains(h.services, req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := h.ready.Ready(ctx); err != nil {
		h.log.Debug("not ready", "error", err)
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// readyz serves GET /readyz: 200 when ready, 503 otherwise, with no detail
// (the cause may name servers; it goes to the debug log).
func (h healthChecker) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.ready.Ready(ctx); err != nil {
		h.log.Debug("not ready", "error", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
