package driversqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/schema"
)

// Writes that queue behind a busy writer commit in one transaction, each
// answered as if it had run alone: the failing ones are rolled back alone,
// one whose caller left before its turn is not written, the others commit.
func TestGroupCommitAnswersEachWriteAlone(t *testing.T) {
	d, obj := contacts(t)
	ctx := t.Context()
	for _, id := range []string{"taken", "stale"} {
		if err := d.Insert(ctx, obj, driver.Record{"id": id, "name": "before", "etag": "e1"}); err != nil {
			t.Fatal(err)
		}
	}

	gone, leave := context.WithCancel(ctx)
	leave() // before its turn
	writes := []struct {
		name string
		ctx  context.Context
		call func(ctx context.Context) error
		want error // nil: written
	}{
		{"first", ctx, func(ctx context.Context) error { return d.Insert(ctx, obj, driver.Record{"id": "first", "name": "a"}) }, nil},
		{"new", ctx, func(ctx context.Context) error { return d.Insert(ctx, obj, driver.Record{"id": "new", "name": "b"}) }, nil},
		{"taken id", ctx, func(ctx context.Context) error { return d.Insert(ctx, obj, driver.Record{"id": "taken", "name": "c"}) }, driver.ErrAlreadyExists},
		{"stale etag", ctx, func(ctx context.Context) error {
			_, err := d.Update(ctx, obj, "stale", driver.Record{"name": "d", "etag": "e3"}, "e2")
			return err
		}, driver.ErrEtagMismatch},
		{"caller gone", gone, func(ctx context.Context) error { return d.Insert(ctx, obj, driver.Record{"id": "gone", "name": "e"}) }, context.Canceled},
		{"update", ctx, func(ctx context.Context) error {
			_, err := d.Update(ctx, obj, "taken", driver.Record{"name": "f", "etag": "e2"}, "e1")
			return err
		}, nil},
		{"delete", ctx, func(ctx context.Context) error { return d.Delete(ctx, obj, "new", "") }, nil},
	}
	calls := make([]func() error, len(writes))
	for i, w := range writes {
		calls[i] = func() error { return w.call(w.ctx) }
	}
	errs := grouped(t, d, calls...)

	for i, w := range writes {
		if (w.want == nil) != (errs[i] == nil) || (w.want != nil && !errors.Is(errs[i], w.want)) {
			t.Errorf("%s: %v, want %v", w.name, errs[i], w.want)
		}
	}
	if d.writes.commits != 1 {
		t.Errorf("%d group commits, want 1", d.writes.commits)
	}
	for id, want := range map[string]any{"first": "a", "taken": "f", "stale": "before", "new": nil, "gone": nil} {
		rec, err := d.Get(ctx, obj, id)
		switch {
		case want == nil && !errors.Is(err, driver.ErrNotFound):
			t.Errorf("%s: %v, %v; want it absent", id, rec, err)
		case want != nil && (err != nil || rec["name"] != want):
			t.Errorf("%s: %v, %v; want name %v", id, rec, err, want)
		}
	}
}

// Many writers at once: every write answered ok is there, every one
// refused is not, whatever groups they fell into.
func TestGroupCommitUnderLoad(t *testing.T) {
	d, obj := contacts(t)
	ctx := t.Context()
	const writers, each = 16, 40
	var mu sync.Mutex
	written := map[string]bool{}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				// Writers g and g+1 share half their ids: one of each pair wins.
				id := fmt.Sprintf("r%d-%d", (g+i%2)%writers, i)
				err := d.Insert(ctx, obj, driver.Record{"id": id, "name": fmt.Sprint(g)})
				mu.Lock()
				switch {
				case err == nil && written[id]:
					t.Errorf("%s written twice", id)
				case err == nil:
					written[id] = true
				case !errors.Is(err, driver.ErrAlreadyExists):
					t.Errorf("%s: %v", id, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n, err := d.Count(ctx, obj, nil)
	if err != nil {
		t.Fatal(err)
	}
	if int(n) != len(written) {
		t.Errorf("%d records, %d answered written", n, len(written))
	}
	for id := range written {
		if _, err := d.Get(ctx, obj, id); err != nil {
			t.Errorf("%s answered written: %v", id, err)
		}
	}
}

// A write that panics fails alone, whether it runs alone or in a group, and
// the writer goes on: nothing waits forever, nothing else fails.
func TestGroupCommitSurvivesAPanic(t *testing.T) {
	d, obj := contacts(t)
	ctx := t.Context()
	boom := func(context.Context, querier) (driver.Record, error) { panic("boom") }
	if _, err := d.writes.do(ctx, boom); err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("a panicking write alone: %v", err)
	}

	errs := grouped(t, d,
		func() error { return d.Insert(ctx, obj, driver.Record{"id": "a", "name": "a"}) },
		func() error { _, err := d.writes.do(ctx, boom); return err },
		func() error { return d.Insert(ctx, obj, driver.Record{"id": "b", "name": "b"}) },
	)
	if errs[0] != nil || errs[2] != nil || errs[1] == nil || !strings.Contains(errs[1].Error(), "panicked: boom") {
		t.Errorf("answers %v", errs)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := d.Get(ctx, obj, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if err := d.Insert(ctx, obj, driver.Record{"id": "c", "name": "c"}); err != nil {
		t.Errorf("a write after: %v", err)
	}
}

// contacts opens a driver with the object contact (one text field, name).
func contacts(t *testing.T) (*Driver, *schema.Object) {
	t.Helper()
	d, _ := openTest(t)
	obj := &schema.Object{Name: "contact", Fields: []schema.Field{{Name: "name", Type: schema.TypeText}}}
	if err := d.Migrate(t.Context(), drivertest.Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatal(err)
	}
	return d, obj
}

// grouped runs calls so that they form a group: it holds the writer's only
// connection, starts the calls in order (the first waits for the connection,
// the others queue behind it), lets go and returns each call's error.
func grouped(t *testing.T, d *Driver, calls ...func() error) []error {
	t.Helper()
	conn, err := d.writer.db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, call := range calls {
		wg.Go(func() { errs[i] = call() })
		waitFor(t, func() bool {
			d.writes.mu.Lock()
			defer d.writes.mu.Unlock()
			return d.writes.running && len(d.writes.pending) == i
		})
	}
	_ = conn.Close()
	wg.Wait()
	return errs
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
