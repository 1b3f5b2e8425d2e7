package drivertest

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// pagingEntry is a record of the paging model: its id and its n (nil for
// NULL).
type pagingEntry struct {
	id string
	n  any
}

// pagingCompare orders a and b as a query in order does: NULL n first
// ascending and last descending, ties by id ascending.
func pagingCompare(order []driver.OrderBy, a, b pagingEntry) int {
	for _, o := range order {
		c := compareNullableInt(a.n, b.n)
		if o.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return strings.Compare(a.id, b.id)
}

func compareNullableInt(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return cmp.Compare(a.(int64), b.(int64))
}

// testPagingStableUnderConcurrentInserts walks pages of 4 while records are
// inserted before and after the position and not-yet-seen records are
// deleted between page fetches, with a writer goroutine inserting and
// deleting records of its own throughout. Keyset paging must serve no record
// twice, every record that lived through the walk exactly once, in order,
// nothing deleted before the fetch that served it, and anything else only in
// its place.
func testPagingStableUnderConcurrentInserts(t *testing.T, d driver.Driver) {
	for _, tc := range []struct {
		name  string
		order []driver.OrderBy
	}{
		{"Asc", asc("n")},
		{"Desc", desc("n")},
		{"ID", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pagingWalkUnderWrites(t, d, "paging_"+strings.ToLower(tc.name), tc.order)
		})
	}
}

func pagingWalkUnderWrites(t *testing.T, d driver.Driver, name string, order []driver.OrderBy) {
	obj := object(t, name, []schema.Field{integer("n"), text("s")})
	migrate(t, d, nil, obj)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(7, uint64(len(name))))

	// The model of the records the walk's own loop writes.
	var (
		used     = map[string]bool{}
		entries  = map[string]pagingEntry{} // every record the loop wrote, by id
		live     = map[string]bool{}
		stable   = map[string]bool{}   // initial records, never deleted (so far)
		deleted  = map[string]bool{}   // deleted before the current fetch
		inserted = map[string]string{} // inserted during the walk: "before" or "after"
		seq      int
	)
	newEntry := func(suffix string, r *rand.Rand) pagingEntry {
		for {
			id := fmt.Sprintf("r%04d%s", r.IntN(10000), suffix)
			if suffix != "" || !used[id] {
				var n any
				if r.IntN(8) > 0 {
					n = int64(r.IntN(40))
				}
				return pagingEntry{id: id, n: n}
			}
		}
	}
	write := func(e pagingEntry) {
		t.Helper()
		seq++
		fields := map[string]any{"s": "v" + e.id}
		if e.n != nil {
			fields["n"] = e.n
		}
		insert(t, d, obj, rec(e.id, seq, fields))
		used[e.id] = true
		entries[e.id] = e
		live[e.id] = true
	}
	for range 30 {
		e := newEntry("", rng)
		write(e)
		stable[e.id] = true
	}

	// The writer goroutine inserts records of its own (ids end in "w", so
	// they never collide with the loop's) and deletes some of them, while
	// the walk goes on: they may or may not be served, but only once and in
	// their place.
	var (
		mu    sync.Mutex
		noise = map[string]pagingEntry{}
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		r := rand.New(rand.NewPCG(11, uint64(len(name))))
		var mine []string
		for i := 0; i < 60; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e := newEntry("w", r)
			mu.Lock()
			_, dup := noise[e.id]
			if !dup {
				noise[e.id] = e
			}
			mu.Unlock()
			if dup {
				continue
			}
			fields := map[string]any{"s": "w" + e.id}
			if e.n != nil {
				fields["n"] = e.n
			}
			if err := d.Insert(ctx, obj, rec(e.id, 1000+i, fields)); err != nil {
				t.Errorf("writer: Insert(%s): %v", e.id, err)
				return
			}
			mine = append(mine, e.id)
			if i%3 == 2 {
				id := mine[r.IntN(len(mine))]
				if err := d.Delete(ctx, obj, id, ""); err != nil && !errors.Is(err, driver.ErrNotFound) {
					t.Errorf("writer: Delete(%s): %v", id, err)
					return
				}
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()

	q := driver.Query{Order: order, Limit: 4}
	var (
		served   []pagingEntry
		seen     = map[string]bool{}
		position *pagingEntry
	)
	for page := 0; ; page++ {
		if page > 60 {
			t.Fatalf("more than 60 pages; served %d records", len(served))
		}
		recs, err := d.Query(ctx, obj, q)
		if err != nil {
			t.Fatalf("Query(page %d, after %v): %v", page, q.After, err)
		}
		if len(recs) > q.Limit {
			t.Fatalf("page %d has %d records, more than the limit %d", page, len(recs), q.Limit)
		}
		for _, r := range recs {
			id, _ := r[schema.FieldID].(string)
			got := pagingEntry{id: id, n: r["n"]}
			if seen[id] {
				t.Fatalf("page %d: %s served twice", page, id)
			}
			seen[id] = true
			want, ours := entries[id]
			if !ours {
				mu.Lock()
				want, ours = noise[id]
				mu.Unlock()
			}
			switch {
			case !ours:
				t.Errorf("page %d: served %s, which was never inserted", page, id)
			case compareNullableInt(got.n, want.n) != 0:
				t.Errorf("page %d: %s has n = %v, want %v", page, id, got.n, want.n)
			case deleted[id]:
				t.Errorf("page %d: served %s, deleted before the fetch", page, id)
			case inserted[id] == "before":
				t.Errorf("page %d: served %s, inserted before the position %v", page, id, q.After)
			}
			if position != nil && pagingCompare(order, *position, want) >= 0 {
				t.Errorf("page %d: %s (n=%v) served after %s (n=%v): out of order", page, id, want.n, position.id, position.n)
			}
			served = append(served, want)
			position = &served[len(served)-1]
		}
		if len(recs) < q.Limit {
			break
		}
		q.After = after(recs[len(recs)-1], order)
		if page >= 12 {
			continue // stop writing, so that the walk ends
		}

		// Between fetches: insert records before and after the position,
		// and delete one not yet served (and, every third page, the record
		// the page ended on).
		pos := *position
		var wantBefore, wantAfter = 1, 1
		for tries := 0; (wantBefore > 0 || wantAfter > 0) && tries < 1000; tries++ {
			e := newEntry("", rng)
			if used[e.id] {
				continue
			}
			switch c := pagingCompare(order, e, pos); {
			case c < 0 && wantBefore > 0:
				wantBefore--
				write(e)
				inserted[e.id] = "before"
			case c > 0 && wantAfter > 0:
				wantAfter--
				write(e)
				inserted[e.id] = "after"
			}
		}
		var ahead []string
		for id := range live {
			if !seen[id] && pagingCompare(order, entries[id], pos) > 0 {
				ahead = append(ahead, id)
			}
		}
		if len(ahead) > 0 {
			// Map order is random; pick deterministically.
			slices.Sort(ahead)
			pagingDelete(t, d, obj, ahead[rng.IntN(len(ahead))], live, stable, deleted)
		}
		if page%3 == 2 && live[pos.id] {
			pagingDelete(t, d, obj, pos.id, live, stable, deleted)
		}
	}

	var noiseServed, afterServed int
	for _, e := range served {
		switch {
		case strings.HasSuffix(e.id, "w"):
			noiseServed++
		case inserted[e.id] == "after":
			afterServed++
		}
	}
	t.Logf("served %d records (%d inserted after the position, %d by the writer); %d stable, %d inserted, %d deleted",
		len(served), afterServed, noiseServed, len(stable), len(inserted), len(deleted))
	for id := range stable {
		if !seen[id] {
			t.Errorf("%s (n=%v) lived through the walk but was never served", id, entries[id].n)
		}
	}
}

func pagingDelete(t *testing.T, d driver.Driver, obj *schema.Object, id string, live, stable, deleted map[string]bool) {
	t.Helper()
	if err := d.Delete(t.Context(), obj, id, ""); err != nil {
		t.Fatalf("Delete(%s): %v", id, err)
	}
	delete(live, id)
	delete(stable, id)
	deleted[id] = true
}
