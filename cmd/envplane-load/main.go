// Command envplane-load measures envplane's throughput and latency on this
// machine: it starts a server in process on a loopback port (or targets
// --url, which must be a loopback address) and drives it with concurrent
// Connect clients for a bounded time. `make bench` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/app"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "envplane-load:", err)
		os.Exit(1)
	}
}

func run() error {
	target := flag.String("url", "", "base URL of a running server on loopback (default: start one in process)")
	duration := flag.Duration("duration", 10*time.Second, "how long each scenario runs")
	concurrency := flag.Int("concurrency", 16, "concurrent clients")
	maxCreates := flag.Int("max-creates", 2000, "upper bound on environments created")
	flag.Parse()

	ctx := context.Background()
	base := *target
	if base == "" {
		dir, err := os.MkdirTemp("", "envplane-load-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg, err := config.Parse([]string{"--listen=127.0.0.1:0", "--data-dir=" + dir}, func(string) string { return "" }, io.Discard)
		if err != nil {
			return err
		}
		var srv *server.Server
		fxApp := fx.New(app.Options(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))), fx.NopLogger, fx.Populate(&srv))
		if err := fxApp.Start(ctx); err != nil {
			return err
		}
		defer fxApp.Stop(context.Background()) //nolint:errcheck // best effort at exit
		base = "http://" + srv.Addr()
	} else if err := requireLoopback(base); err != nil {
		return err
	}

	client := environmentv1connect.NewEnvironmentServiceClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency}}, base)
	org, err := client.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{
		Slug: fmt.Sprintf("load-%d", time.Now().UnixNano()%1e9),
	}))
	if err != nil {
		return fmt.Errorf("create organization: %w", err)
	}
	orgID := org.Msg.GetOrganization().GetId()
	fmt.Printf("envplane-load: %s, %d clients, %s per scenario\n\n", base, *concurrency, *duration)

	var created atomic.Int64
	create := measure("CreateEnvironment (sqlite)", *duration, *concurrency, func(ctx context.Context) error {
		n := created.Add(1)
		if n > int64(*maxCreates) {
			return errStop
		}
		_, err := client.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: orgID, Slug: fmt.Sprintf("env-%d", n), Driver: "sqlite",
		}))
		return err
	})
	fmt.Println(create)

	first, err := client.ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{OrganizationId: orgID, PageSize: 100}))
	if err != nil || len(first.Msg.GetEnvironments()) == 0 {
		return fmt.Errorf("list environments: %v", err)
	}
	envs := first.Msg.GetEnvironments()
	var i atomic.Int64
	get := measure("GetEnvironment", *duration, *concurrency, func(ctx context.Context) error {
		id := envs[int(i.Add(1))%len(envs)].GetId()
		_, err := client.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: id}))
		return err
	})
	fmt.Println(get)
	resolve := measure("ResolveHostname", *duration, *concurrency, func(ctx context.Context) error {
		h := envs[int(i.Add(1))%len(envs)].GetHostname()
		_, err := client.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: h}))
		return err
	})
	fmt.Println(resolve)
	return nil
}

var errStop = errors.New("stop")

type result struct {
	name      string
	ops       int
	errs      int
	elapsed   time.Duration
	latencies []time.Duration
}

func (r result) String() string {
	if r.ops == 0 {
		return fmt.Sprintf("%-28s no successful calls (%d errors)", r.name, r.errs)
	}
	slices.Sort(r.latencies)
	p := func(q float64) time.Duration { return r.latencies[int(q*float64(len(r.latencies)-1))] }
	return fmt.Sprintf("%-28s %8.0f ops/s  %7d ok  %4d err  p50 %-9s p99 %-9s max %s",
		r.name, float64(r.ops)/r.elapsed.Seconds(), r.ops, r.errs,
		p(0.50).Round(time.Microsecond), p(0.99).Round(time.Microsecond), r.latencies[len(r.latencies)-1].Round(time.Microsecond))
}

// measure runs call from concurrency goroutines until duration passes or a
// call returns errStop.
func measure(name string, duration time.Duration, concurrency int, call func(context.Context) error) result {
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var mu sync.Mutex
	res := result{name: name}
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			for ctx.Err() == nil {
				t0 := time.Now()
				err := call(ctx)
				if errors.Is(err, errStop) {
					break
				}
				if err != nil {
					if ctx.Err() == nil {
						errs++
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.errs += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.latencies)
	return res
}

func requireLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--url: %s is not a loopback address; this tool only loads servers on this machine", host)
}
