package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/internal/apierr"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
)

// headerEnvironmentID names, on a data-plane answer, the environment it was
// served from.
const headerEnvironmentID = "X-Environment-Id"

// reasonDatabaseUnavailable is the ErrorInfo reason of an environment whose
// database could not be opened: every hostname change drops the driver on
// every replica, and changes every few milliseconds can keep a replica from
// reopening it. A clean, retryable failure.
const reasonDatabaseUnavailable = "DATABASE_UNAVAILABLE"

// swapCallTimeout bounds each call of the swap scenario.
const swapCallTimeout = 5 * time.Second

// swapStats is what the swap scenario counted.
type swapStats struct {
	calls, ok, clean, unavailable, violations, unexpected atomic.Int64

	mu            sync.Mutex
	firstBad      string // first violation
	firstUnexpect string // first unexpected error
}

func (s *swapStats) note(first *string, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *first == "" {
		*first = fmt.Sprintf(format, args...)
	}
}

// runSwap is the --swap-hostnames scenario: two environments of o.driver,
// each with one record in items titled after its slug ("one", "two"), are
// read by hostname over Connect by o.concurrency readers spread over urls,
// while one writer swaps their hostnames through urls[0] (in three steps,
// via a temporary hostname, since hostnames are unique). Every successful
// answer must hold exactly the records of the environment its
// X-Environment-Id header names; a failure must be clean
// (FAILED_PRECONDITION or NOT_FOUND while a hostname names nothing, or
// DATABASE_UNAVAILABLE). It returns an error on any violation or unexpected
// failure.
func runSwap(ctx context.Context, cl *clients, o options, urls []string, token string) error {
	nonce := time.Now().UnixNano() % 1e9
	org, err := cl.env.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{
		Slug: fmt.Sprintf("load-swap-%d", nonce), DisplayName: "envplane-load hostname swap",
	}))
	if err != nil {
		return fmt.Errorf("create organization: %w", err)
	}
	orgID := org.Msg.GetOrganization().GetId()
	h1 := fmt.Sprintf("h1-%d.swap.test", nonce)
	h2 := fmt.Sprintf("h2-%d.swap.test", nonce)
	tmp := fmt.Sprintf("tmp-%d.swap.test", nonce)
	fmt.Printf("setup: 2 %s environments (one on %s, two on %s), object %q with one record each\n", o.driver, h1, h2, objectName)

	var envs []string
	if o.url != "" && !o.keep {
		defer func() { deleteEnvironments(cl, envs, 2) }()
	}
	slugOf := map[string]string{}
	for _, e := range []struct{ slug, host string }{{"one", h1}, {"two", h2}} {
		resp, err := cl.env.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: orgID, Slug: e.slug, Driver: o.driver, Hostname: proto.String(e.host),
		}))
		if err != nil {
			return fmt.Errorf("create environment %s: %w", e.slug, err)
		}
		env := resp.Msg.GetEnvironment()
		envs = append(envs, env.GetId())
		if env.GetStatus() != "active" {
			return fmt.Errorf("environment %s is %s: %s", e.slug, env.GetStatus(), env.GetStatusMessage())
		}
		slugOf[env.GetId()] = e.slug
		if _, err := cl.meta.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: env.GetId(), Name: objectName,
			Object: &metadatav1.ObjectDefinition{Name: objectName, DisplayName: "Items", Fields: []*metadatav1.Field{{Name: "title", Type: "text"}}},
		})); err != nil {
			return fmt.Errorf("put object in %s: %w", e.slug, err)
		}
		if _, err := cl.setup.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{
			EnvironmentId: env.GetId(), Object: objectName,
			Record: &structpb.Struct{Fields: map[string]*structpb.Value{"title": structpb.NewStringValue(e.slug)}},
		})); err != nil {
			return fmt.Errorf("create the record of %s: %w", e.slug, err)
		}
	}
	e1, e2 := envs[0], envs[1]

	// One Connect data client per URL, sharing the HTTP/1.1 pool.
	hc := &http.Client{Transport: cl.http1}
	readers := make([]datav1connect.DataServiceClient, len(urls))
	for k, u := range urls {
		readers[k] = datav1connect.NewDataServiceClient(hc, u, connect.WithInterceptors(bearer(token)))
	}

	fmt.Printf("\nswap: %d readers over %d URL(s), one writer swapping through %s, at most %s and %d reads\n",
		o.concurrency, len(urls), urls[0], o.duration, o.maxOps)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var st swapStats
	var wg sync.WaitGroup
	hosts := [2]string{h1, h2}
	for g := range o.concurrency {
		url, dc := urls[g%len(urls)], readers[g%len(urls)]
		wg.Go(func() {
			for i := g; runCtx.Err() == nil; i++ {
				if st.calls.Add(1) > int64(o.maxOps) {
					st.calls.Add(-1)
					return
				}
				host := hosts[i%2]
				env, titles, err := swapList(runCtx, dc, host)
				if err != nil {
					if runCtx.Err() != nil { // cut short by the end of the run: not counted
						st.calls.Add(-1)
						return
					}
					switch code := connect.CodeOf(err); {
					case code == connect.CodeFailedPrecondition || code == connect.CodeNotFound:
						st.clean.Add(1)
					case apierr.Reason(err) == reasonDatabaseUnavailable:
						st.clean.Add(1)
						st.unavailable.Add(1)
					default:
						st.unexpected.Add(1)
						st.note(&st.firstUnexpect, "%s on %s: %v", host, url, err)
					}
					continue
				}
				slug, known := slugOf[env]
				if !known || !slices.Equal(titles, []string{slug}) {
					st.violations.Add(1)
					st.note(&st.firstBad, "%s on %s: %s %q holds records %q", host, url, headerEnvironmentID, env, titles)
					continue
				}
				st.ok.Add(1)
			}
		})
	}

	// The writer: h1 ↔ h2 in three steps, and back, through urls[0].
	set := func(id, host string) error {
		cctx, ccancel := context.WithTimeout(ctx, swapCallTimeout)
		defer ccancel()
		_, err := cl.env.UpdateEnvironment(cctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: id, Hostname: proto.String(host)}))
		if err != nil {
			return fmt.Errorf("set the hostname of %s to %s: %w", slugOf[id], host, err)
		}
		return nil
	}
	steps := []struct{ id, host string }{
		{e1, tmp}, {e2, h1}, {e1, h2}, // swapped
		{e1, tmp}, {e2, h2}, {e1, h1}, // back
	}
	start := time.Now()
	swaps, updates := 0, 0
	var writeErr error
	for runCtx.Err() == nil && updates < o.maxOps {
		for k, s := range steps {
			if writeErr = set(s.id, s.host); writeErr != nil {
				break
			}
			updates++
			if k%3 == 2 {
				swaps++
			}
		}
		if writeErr != nil {
			break
		}
	}
	cancel()
	wg.Wait()
	elapsed := time.Since(start)

	fmt.Printf("  %d hostname swaps (%d updates) in %s\n", swaps, updates, elapsed.Round(time.Millisecond))
	fmt.Printf("  %d reads: %d successes, %d clean failures (%d of them %s), %d violations, %d unexpected errors\n",
		st.calls.Load(), st.ok.Load(), st.clean.Load(), st.unavailable.Load(), reasonDatabaseUnavailable, st.violations.Load(), st.unexpected.Load())
	if st.firstBad != "" {
		fmt.Printf("  first violation: %s\n", st.firstBad)
	}
	if st.firstUnexpect != "" {
		fmt.Printf("  first unexpected error: %s\n", st.firstUnexpect)
	}
	var errs []error
	if writeErr != nil && ctx.Err() == nil {
		errs = append(errs, writeErr)
	}
	if n := st.violations.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%d answers held another environment's records than the one %s named", n, headerEnvironmentID))
	}
	if n := st.unexpected.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%d reads failed with an unexpected error", n))
	}
	if st.ok.Load() == 0 && ctx.Err() == nil {
		errs = append(errs, errors.New("no read succeeded"))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ctx.Err()
}

// swapList lists items by Host over Connect and returns the environment the
// answer names and the titles of its records.
func swapList(ctx context.Context, dc datav1connect.DataServiceClient, host string) (env string, titles []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, swapCallTimeout)
	defer cancel()
	req := connect.NewRequest(&datav1.ListRecordsRequest{Object: objectName, OrderBy: "title"})
	req.Header().Set("Host", host) // connect-go sends it as the request's Host
	resp, err := dc.ListRecords(ctx, req)
	if err != nil {
		return "", nil, err
	}
	for _, rec := range resp.Msg.GetRecords() {
		titles = append(titles, rec.GetFields()["title"].GetStringValue())
	}
	return resp.Header().Get(headerEnvironmentID), titles, nil
}
