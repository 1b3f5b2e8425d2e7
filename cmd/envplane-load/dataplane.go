package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
)

// Data-plane scenarios.
const (
	scenarioCreate = "create"
	scenarioGet    = "get"
	scenarioList   = "list"
)

// errEmptyPage is a list that found nothing in an environment seeded with
// records: the call worked, the answer is wrong.
var errEmptyPage = errors.New("list returned no records")

// maxBatch is the most writes BatchWriteRecords takes at once.
const maxBatch = 500

// dataPlane is the organization the data-plane scenarios run in: its
// environments, each with the object items, and the ids of the records
// seeded into each.
type dataPlane struct {
	org  string
	envs []string   // environment ids, in creation order
	ids  [][]string // ids[k]: records seeded into envs[k]
}

// itemsObject is the object definition every environment gets.
func itemsObject() *metadatav1.ObjectDefinition {
	return &metadatav1.ObjectDefinition{
		Name:        objectName,
		DisplayName: "Items",
		Fields: []*metadatav1.Field{
			{Name: "name", Type: "text", Required: true, MaxLength: 200},
			{Name: "n", Type: "integer"},
			{Name: "tag", Type: "select", Options: tags[:]},
		},
	}
}

// setupDataPlane creates an organization with o.environments environments
// of o.driver (turso: each brings its own database, turso.urls[k]), puts the object items into each and seeds each with o.seed
// records, o.setupConcurrency calls at a time, and reports how long each
// step took.
func setupDataPlane(ctx context.Context, cl *clients, o options, turso *tursodbFleet) (*dataPlane, error) {
	org, err := cl.env.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{
		Slug: fmt.Sprintf("load-data-%d", time.Now().UnixNano()%1e9), DisplayName: "envplane-load data plane",
	}))
	if err != nil {
		return nil, fmt.Errorf("create organization: %w", err)
	}
	dp := &dataPlane{org: org.Msg.GetOrganization().GetId(), envs: make([]string, o.environments), ids: make([][]string, o.environments)}
	fmt.Printf("setup: %d %s environments, object %q, %d records each, %d calls at a time\n",
		o.environments, o.driver, objectName, o.seed, o.setupConcurrency)

	// step calls call(k) for every environment k and reports the rate in
	// units (environments, or records for the seeding).
	step := func(what string, n int, units int, unit string, call func(ctx context.Context, k int) error) error {
		start := time.Now()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(o.setupConcurrency)
		for k := range n {
			g.Go(func() error { return call(gctx, k) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
		d := time.Since(start)
		fmt.Printf("  %-26s %8s  (%.0f %s/s)\n", what, d.Round(time.Millisecond), float64(units)/d.Seconds(), unit)
		return nil
	}

	setupStart := time.Now()
	err = step(fmt.Sprintf("create %d environments", o.environments), o.environments, o.environments, "environments", func(ctx context.Context, k int) error {
		req := &environmentv1.CreateEnvironmentRequest{
			OrganizationId: dp.org, Slug: fmt.Sprintf("data-%05d", k), Driver: o.driver,
		}
		if turso != nil { // bring-your-own: the environment's local tursodb
			req.DatabaseUrl, req.DatabaseSecret = turso.urls[k], tursoSecret
		}
		resp, err := cl.env.CreateEnvironment(ctx, connect.NewRequest(req))
		if err != nil {
			return fmt.Errorf("create environment %d: %w", k, err)
		}
		env := resp.Msg.GetEnvironment()
		dp.envs[k] = env.GetId() // each k its own element: no lock needed
		if env.GetStatus() != "active" {
			return fmt.Errorf("environment %d is %s: %s", k, env.GetStatus(), env.GetStatusMessage())
		}
		return nil
	})
	if err != nil {
		dp.cleanupOnError(cl, o)
		return nil, err
	}
	err = step(fmt.Sprintf("put object in %d", o.environments), o.environments, o.environments, "objects", func(ctx context.Context, k int) error {
		_, err := cl.meta.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: dp.envs[k], Name: objectName, Object: itemsObject(),
		}))
		if err != nil {
			return fmt.Errorf("put object in environment %d: %w", k, err)
		}
		return nil
	})
	if err != nil {
		dp.cleanupOnError(cl, o)
		return nil, err
	}
	err = step(fmt.Sprintf("seed %d records", o.environments*o.seed), o.environments, o.environments*o.seed, "records", func(ctx context.Context, k int) error {
		ids := make([]string, 0, o.seed)
		for len(ids) < o.seed {
			writes := make([]*datav1.RecordWrite, 0, maxBatch)
			for j := len(ids); j < o.seed && len(writes) < maxBatch; j++ {
				writes = append(writes, &datav1.RecordWrite{Operation: &datav1.RecordWrite_Create{Create: &datav1.CreateRecordRequest{
					Object: objectName, Record: item(int64(j)),
				}}})
			}
			resp, err := cl.setup.BatchWriteRecords(ctx, connect.NewRequest(&datav1.BatchWriteRecordsRequest{
				EnvironmentId: dp.envs[k], Writes: writes,
			}))
			if err != nil {
				return fmt.Errorf("seed environment %d: %w", k, err)
			}
			for _, r := range resp.Msg.GetResults() {
				ids = append(ids, r.GetRecord().GetFields()["id"].GetStringValue())
			}
		}
		dp.ids[k] = ids
		return nil
	})
	if err != nil {
		dp.cleanupOnError(cl, o)
		return nil, err
	}
	fmt.Printf("  %-26s %8s\n", "setup total", time.Since(setupStart).Round(time.Millisecond))
	return dp, nil
}

// run measures one scenario over one protocol, going round-robin over the
// environments: call i goes to environment i mod N (and a get reads that
// environment's seeded record (i div N) mod seed).
func (dp *dataPlane) run(ctx context.Context, c dataClient, scenario string, o options) result {
	n := int64(len(dp.envs))
	var call func(ctx context.Context, i int64) error
	switch scenario {
	case scenarioCreate:
		call = func(ctx context.Context, i int64) error { return c.create(ctx, dp.envs[i%n], i) }
	case scenarioGet:
		call = func(ctx context.Context, i int64) error {
			k := i % n
			ids := dp.ids[k]
			return c.get(ctx, dp.envs[k], ids[(i/n)%int64(len(ids))])
		}
	case scenarioList:
		call = func(ctx context.Context, i int64) error { return c.list(ctx, dp.envs[i%n], o.pageSize) }
	default:
		panic("unknown scenario " + scenario)
	}
	return measure(ctx, scenario, o.duration, o.concurrency, o.maxOps, call)
}

// first is the data plane of the first environment alone (--compare-one).
func (dp *dataPlane) first() *dataPlane {
	return &dataPlane{org: dp.org, envs: dp.envs[:1], ids: dp.ids[:1]}
}

// cleanup deletes the environments the setup created (on --url; an
// in-process server's directory goes away whole).
func (dp *dataPlane) cleanup(cl *clients, concurrency int) {
	deleteEnvironments(cl, dp.envs, concurrency)
}

func (dp *dataPlane) cleanupOnError(cl *clients, o options) {
	if o.url != "" && !o.keep {
		dp.cleanup(cl, o.setupConcurrency)
	}
}

// deleteEnvironments deletes ids (skipping empty ones), forcing past the
// default-environment guard. It uses a fresh context so an interrupted run
// still cleans up, bounded in time.
func deleteEnvironments(cl *clients, ids []string, concurrency int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	var failed, deleted int
	var mu sync.Mutex
	for _, id := range ids {
		if id == "" {
			continue
		}
		g.Go(func() error {
			_, err := cl.env.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: id, Force: true}))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
			} else {
				deleted++
			}
			return nil
		})
	}
	_ = g.Wait()
	fmt.Printf("cleanup: deleted %d environments in %s", deleted, time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		fmt.Printf(" (%d deletes failed)", failed)
	}
	fmt.Println()
}
