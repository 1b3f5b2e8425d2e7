package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

type readiness struct{ err error }

func (r readiness) Ready(context.Context) error { return r.err }

func TestReadinessDrivesHealthAndReadyz(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err    error
		status grpchealth.Status
		http   int
	}{
		{nil, grpchealth.StatusServing, http.StatusOK},
		{errors.New("control plane down"), grpchealth.StatusNotServing, http.StatusServiceUnavailable},
	} {
		h := healthChecker{services: []string{"a.v1.A"}, ready: readiness{c.err}, log: slog.New(slog.DiscardHandler)}
		for _, svc := range []string{"", "a.v1.A"} {
			resp, err := h.Check(t.Context(), &grpchealth.CheckRequest{Service: svc})
			if err != nil || resp.Status != c.status {
				t.Errorf("Check(%q) with %v = %v, %v; want %v", svc, c.err, resp, err, c.status)
			}
		}
		rec := httptest.NewRecorder()
		h.readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != c.http {
			t.Errorf("/readyz with %v = %d, want %d", c.err, rec.Code, c.http)
		}
	}
	h := healthChecker{services: []string{"a.v1.A"}, ready: readiness{}, log: slog.New(slog.DiscardHandler)}
	if _, err := h.Check(t.Context(), &grpchealth.CheckRequest{Service: "unknown.v1.X"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("unknown service: %v, want NOT_FOUND", err)
	}
}
