package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"time"
)

// The baseline is the yardstick the data-plane targets are stated against:
// "a bare net/http + encoding/json handler" measured with a load generator
// on the same machine. Machines of one kind differ by up to 2× from day to
// day, so a figure means something only next to the baseline of the same
// run: `make bench` measures both.

// serveBaseline serves GET /records/{id}, a record of the shape the data
// plane answers, encoded by encoding/json, on addr until ctx ends.
func serveBaseline(ctx context.Context, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /records/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id":         r.PathValue("id"),
			"name":       "item-1",
			"n":          1,
			"tag":        "green",
			"created_at": "2026-11-27T14:00:00.000000Z",
			"updated_at": "2026-11-27T14:00:00.000000Z",
			"etag":       "1",
		})
	})
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("baseline: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Printf("baseline handler (net/http + encoding/json) on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runBaseline measures GET /records/{id} on the baseline server at
// --baseline-url with the REST client of the data-plane scenarios.
func runBaseline(ctx context.Context, o options) error {
	cl := newClients(o.baselineURL, "", o.concurrency, o.decodeEvery)
	defer cl.close()
	rest := cl.data[protoREST].(*restData)
	fmt.Printf("envplane-load: baseline at %s; GOMAXPROCS %d; %d clients; at most %s and %d calls; decodes 1 answer in %d\n\n",
		o.baselineURL, runtime.GOMAXPROCS(0), o.concurrency, o.duration, o.maxOps, o.decodeEvery)
	printHeader()
	printRow("baseline", "get", "-", measure(ctx, "baseline", o.duration, o.concurrency, o.maxOps, func(ctx context.Context, i int64) error {
		return rest.record(ctx, http.MethodGet, "/records/"+strconv.FormatInt(i, 10), nil)
	}))
	return ctx.Err()
}
