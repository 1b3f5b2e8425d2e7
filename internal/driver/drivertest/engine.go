package drivertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// testIsolation checks that two drivers are two environments: nothing made
// in one is visible in the other.
func testIsolation(t *testing.T, open func(*testing.T) driver.Driver) {
	one, two := open(t), open(t)
	shared := things(t)
	migrate(t, one, nil, shared)
	migrate(t, two, nil, shared)
	r := rec("r1", 1, map[string]any{"title": "in one"})
	insert(t, one, shared, r)
	wantGone(t, two, shared, "r1")
	wantCount(t, two, shared, 0)
	// The same id is free in the other environment.
	r2 := rec("r1", 2, map[string]any{"title": "in two"})
	insert(t, two, shared, r2)
	wantStored(t, one, shared, r)
	wantStored(t, two, shared, r2)

	only := object(t, "only_one", []schema.Field{{Name: "code", Type: schema.TypeText, Unique: true}})
	migrate(t, one, nil, only)
	insert(t, one, only, rec("o1", 1, map[string]any{"code": "x"}))
	if _, err := two.Query(t.Context(), only, driver.Query{}); err == nil {
		t.Error("a table made in one environment is visible in another")
	}
	// Making it there too finds nothing of the first: no rows, no index
	// name clash.
	migrate(t, two, nil, only)
	wantCount(t, two, only, 0)
	insert(t, two, only, rec("o1", 2, map[string]any{"code": "x"}))
	if err := two.DropObject(t.Context(), only.Name); err != nil {
		t.Fatalf("DropObject: %v", err)
	}
	wantCount(t, one, only, 1)
}

// concurrency is how many goroutines the concurrency cases run.
const concurrency = 8

// testConcurrentWriters runs writers and readers at once on one driver.
func testConcurrentWriters(t *testing.T, d driver.Driver) {
	obj := object(t, "counters", []schema.Field{integer("n"), {Name: "owner", Type: schema.TypeText, Indexed: true}})
	migrate(t, d, nil, obj)
	const perWriter = 15
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, concurrency*perWriter*4)
	for g := range concurrency {
		owner := fmt.Sprintf("g%d", g)
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("%s-%02d", owner, i)
				if err := d.Insert(ctx, obj, rec(id, i, map[string]any{"n": int64(i), "owner": owner})); err != nil {
					errs <- fmt.Errorf("Insert(%s): %w", id, err)
					return
				}
				if _, err := d.Update(ctx, obj, id, changes(id, 2, map[string]any{"n": int64(i * 10)}), "v1-"+id); err != nil {
					errs <- fmt.Errorf("Update(%s): %w", id, err)
					return
				}
				if _, err := d.Query(ctx, obj, driver.Query{Filter: eq("owner", owner), Order: desc("n"), Limit: 5}); err != nil {
					errs <- fmt.Errorf("query: %w", err)
					return
				}
				if _, err := d.Count(ctx, obj, nil); err != nil {
					errs <- fmt.Errorf("count: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wantCount(t, d, obj, concurrency*perWriter)
	for g := range concurrency {
		owner := fmt.Sprintf("g%d", g)
		n, err := d.Count(ctx, obj, eq("owner", owner))
		if err != nil || n != perWriter {
			t.Errorf("Count(owner = %s) = %d, %v; want %d", owner, n, err, perWriter)
		}
		id := owner + "-03"
		wantStored(t, d, obj, merged(rec(id, 3, map[string]any{"n": int64(3), "owner": owner}), changes(id, 2, map[string]any{"n": int64(30)})))
	}
}

// testConcurrentCompareAndSwap increments one counter from many goroutines
// with etag-guarded updates: the etag check and the write must be one step,
// or increments are lost.
func testConcurrentCompareAndSwap(t *testing.T, d driver.Driver) {
	obj := object(t, "counters", []schema.Field{integer("n")})
	migrate(t, d, nil, obj)
	insert(t, d, obj, rec("c", 1, map[string]any{"n": int64(0)}))
	const increments = 10
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for g := range concurrency {
		wg.Go(func() {
			for i := 0; i < increments; {
				cur, err := d.Get(ctx, obj, "c")
				if err != nil {
					errs <- fmt.Errorf("get: %w", err)
					return
				}
				n, _ := cur["n"].(int64)
				set := driver.Record{"n": n + 1, schema.FieldETag: fmt.Sprintf("g%d-%d", g, i), schema.FieldUpdatedAt: at(0)}
				_, err = d.Update(ctx, obj, "c", set, cur[schema.FieldETag].(string))
				switch {
				case errors.Is(err, driver.ErrEtagMismatch):
					continue // someone else won; read again
				case err != nil:
					errs <- fmt.Errorf("update: %w", err)
					return
				}
				i++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := get(t, d, obj, "c")["n"]; got != int64(concurrency*increments) {
		t.Errorf("counter = %v, want %d", got, concurrency*increments)
	}
}

// testNoAliasing checks that records handed in and out share no memory with
// the store: a caller changing a map it gave or got changes nothing stored.
func testNoAliasing(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	in := rec("r1", 1, map[string]any{"title": "t", "data": map[string]any{"list": []any{"a"}, "m": map[string]any{"k": "v"}}})
	want := rec("r1", 1, map[string]any{"title": "t", "data": map[string]any{"list": []any{"a"}, "m": map[string]any{"k": "v"}}})
	insert(t, d, obj, in)
	scribble(in)
	wantStored(t, d, obj, want)

	got := get(t, d, obj, "r1")
	scribble(got)
	wantStored(t, d, obj, want)

	recs, err := d.Query(t.Context(), obj, driver.Query{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("Query = %v, %v", recs, err)
	}
	scribble(recs[0])
	wantStored(t, d, obj, want)

	set := changes("r1", 2, map[string]any{"data": map[string]any{"list": []any{"b"}}})
	want = merged(want, changes("r1", 2, map[string]any{"data": map[string]any{"list": []any{"b"}}}))
	updated := update(t, d, obj, "r1", set, "")
	scribble(set)
	scribble(updated)
	wantStored(t, d, obj, want)

	batchRec := rec("r2", 2, map[string]any{"data": []any{map[string]any{"k": "v"}}})
	wantBatch := rec("r2", 2, map[string]any{"data": []any{map[string]any{"k": "v"}}})
	out, err := d.Batch(t.Context(), []driver.Op{{Kind: driver.OpInsert, Object: obj, Record: batchRec}})
	if err != nil || len(out) != 1 {
		t.Fatalf("Batch = %v, %v", out, err)
	}
	scribble(batchRec)
	scribble(out[0])
	wantStored(t, d, obj, wantBatch)
}

// scribble overwrites every value of r, and inside its JSON values.
func scribble(r driver.Record) {
	for k, v := range r {
		scribbleJSON(v)
		if k != schema.FieldID {
			r[k] = "scribbled"
		}
	}
	r["extra"] = "scribbled"
}

func scribbleJSON(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			scribbleJSON(e)
			x[k] = "scribbled"
		}
		x["extra"] = "scribbled"
	case []any:
		for i, e := range x {
			scribbleJSON(e)
			x[i] = "scribbled"
		}
	}
}

func testCanceledContext(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	insert(t, d, obj, rec("r1", 1, nil))
	ctx := ctxCanceled(t)
	calls := map[string]func() error{
		"Get": func() error { _, err := d.Get(ctx, obj, "r1"); return err },
		"Insert": func() error {
			return d.Insert(ctx, obj, rec("r2", 2, nil))
		},
		"Query": func() error { _, err := d.Query(ctx, obj, driver.Query{}); return err },
		"Count": func() error { _, err := d.Count(ctx, obj, nil); return err },
		"Update": func() error {
			_, err := d.Update(ctx, obj, "r1", changes("r1", 2, nil), "")
			return err
		},
		"Delete": func() error { return d.Delete(ctx, obj, "r1", "") },
		"Batch": func() error {
			_, err := d.Batch(ctx, []driver.Op{{Kind: driver.OpDelete, Object: obj, ID: "r1"}})
			return err
		},
		"Migrate": func() error {
			return d.Migrate(ctx, driver.Change{Object: obj, Steps: []schema.Step{{Kind: schema.StepAddField, Target: "x", Field: &schema.Field{Name: "x", Type: schema.TypeText}}}})
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v; want context.Canceled", name, err)
		}
	}
	wantStored(t, d, obj, rec("r1", 1, nil))
	wantGone(t, d, obj, "r2")
}

// testClose checks every call after Close fails, without panicking.
func testClose(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	insert(t, d, obj, rec("r1", 1, nil))
	if err := d.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	calls := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return d.Ping(ctx) }},
		{"Get", func() error { _, err := d.Get(ctx, obj, "r1"); return err }},
		{"Insert", func() error { return d.Insert(ctx, obj, rec("r2", 2, nil)) }},
		{"Query", func() error { _, err := d.Query(ctx, obj, driver.Query{}); return err }},
		{"Count", func() error { _, err := d.Count(ctx, obj, nil); return err }},
		{"Update", func() error { _, err := d.Update(ctx, obj, "r1", changes("r1", 2, nil), ""); return err }},
		{"Delete", func() error { return d.Delete(ctx, obj, "r1", "") }},
		{"Batch", func() error {
			_, err := d.Batch(ctx, []driver.Op{{Kind: driver.OpDelete, Object: obj, ID: "r1"}})
			return err
		}},
		{"Migrate", func() error { return d.Migrate(ctx, driver.Change{Object: obj, Steps: schema.Plan(nil, obj)}) }},
		{"DropObject", func() error { return d.DropObject(ctx, obj.Name) }},
	}
	for _, c := range calls {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s after Close panicked: %v", c.name, p)
				}
			}()
			if err := c.call(); err == nil {
				t.Errorf("%s after Close succeeded", c.name)
			}
		}()
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("a second Close panicked: %v", p)
			}
		}()
		_ = d.Close()
	}()
}
