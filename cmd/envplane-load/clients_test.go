package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// The REST client checks every answer's status and content type, and
// decodes (and checks) one in decodeEvery.
func TestRESTClientChecks(t *testing.T) {
	t.Parallel()
	answer := `{"records":[]}` // an empty page: wrong, but only a decoded answer shows it
	contentType := "application/json"
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(srv.Close)
	ctx := t.Context()

	d := &restData{http: srv.Client(), base: srv.URL, auth: "Bearer tok", decodeEvery: 4}
	for i := 1; i <= 8; i++ {
		err := d.list(ctx, "env", 20)
		if decoded := i%4 == 0; decoded != errors.Is(err, errEmptyPage) {
			t.Errorf("call %d: %v (decoded: %v)", i, err, decoded)
		}
	}
	d = &restData{http: srv.Client(), base: srv.URL, auth: "Bearer tok", decodeEvery: 1}
	if err := d.get(ctx, "env", "r1"); err == nil || !strings.Contains(err.Error(), "no record") {
		t.Errorf("an answer without an id: %v", err)
	}
	answer = `{"id":"r1"}`
	if err := d.get(ctx, "env", "r1"); err != nil {
		t.Errorf("a record: %v", err)
	}
	contentType = "text/html"
	if err := d.get(ctx, "env", "r1"); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("an HTML answer: %v", err)
	}
	contentType, status = "application/json", http.StatusInternalServerError
	if err := d.get(ctx, "env", "r1"); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("a server error: %v", err)
	}
	d.auth = "Bearer other"
	if err := d.create(ctx, "env", 1); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("a refused token: %v", err)
	}
}

// The baseline serves records the REST client accepts.
func TestBaseline(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- serveBaseline(ctx, addr) }()
	d := &restData{http: http.DefaultClient, base: "http://" + addr, decodeEvery: 1}
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := d.record(ctx, http.MethodGet, "/records/7", nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("baseline: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serveBaseline: %v", err)
	}
}

// The spread's cost compares throughputs, not call counts: a run over many
// environments that ran longer is not cheaper for it.
func TestCost(t *testing.T) {
	t.Parallel()
	one := result{ops: 1000, elapsed: time.Second}
	for _, c := range []struct {
		many result
		want string
	}{
		{result{ops: 800, elapsed: time.Second}, "20%"},
		{result{ops: 1600, elapsed: 2 * time.Second}, "20%"},
		{result{ops: 1100, elapsed: time.Second}, "-10%"},
		{result{ops: 0, elapsed: time.Second}, "-"},
	} {
		if got := cost(one, c.many); got != c.want {
			t.Errorf("cost(%+v, %+v) = %s, want %s", one, c.many, got, c.want)
		}
	}
	dp := &dataPlane{org: "o", envs: []string{"a", "b"}, ids: [][]string{{"1"}, {"2"}}}
	if first := dp.first(); len(first.envs) != 1 || first.envs[0] != "a" || first.ids[0][0] != "1" {
		t.Errorf("first() = %+v", first)
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	first := errors.New("first")
	a := result{ops: 2, errs: 1, firstErr: first, elapsed: time.Second, latencies: []time.Duration{1, 5}}
	b := result{ops: 1, errs: 2, firstErr: errors.New("second"), elapsed: 2 * time.Second, latencies: []time.Duration{3}}
	m := merge(merge(result{}, a), b)
	if m.ops != 3 || m.errs != 3 || m.firstErr != first || m.elapsed != 3*time.Second || !slices.Equal(m.latencies, []time.Duration{1, 3, 5}) {
		t.Errorf("merge = %+v", m)
	}
	if m.quantile(0.5) != 3 {
		t.Errorf("median %v, want 3", m.quantile(0.5))
	}
}
