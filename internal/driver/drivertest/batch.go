package drivertest

import (
	"errors"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// orders and lines are the two objects batches write across; lines.sku is
// unique.
func orders(t *testing.T) *schema.Object {
	return object(t, "orders", []schema.Field{text("title"), {Name: "total", Type: schema.TypeNumber}})
}

func lines(t *testing.T) *schema.Object {
	return object(t, "lines", []schema.Field{{Name: "sku", Type: schema.TypeText, Unique: true}, integer("qty")})
}

// batchFixture makes both tables with order a1 and lines b1 (sku "x") and
// b2 (sku "w").
func batchFixture(t *testing.T, d driver.Driver) (ord, lin *schema.Object, a1, b1, b2 driver.Record) {
	ord, lin = orders(t), lines(t)
	migrate(t, d, nil, ord)
	migrate(t, d, nil, lin)
	a1 = rec("a1", 1, map[string]any{"title": "first", "total": 10.0})
	b1 = rec("b1", 2, map[string]any{"sku": "x", "qty": int64(1)})
	b2 = rec("b2", 3, map[string]any{"sku": "w", "qty": int64(2)})
	insert(t, d, ord, a1)
	insert(t, d, lin, b1, b2)
	return ord, lin, a1, b1, b2
}

func testBatch(t *testing.T, d driver.Driver) {
	ord, lin, a1, _, b2 := batchFixture(t, d)
	a2 := rec("a2", 4, map[string]any{"title": "second"})
	b3 := rec("b3", 5, map[string]any{"sku": "x", "qty": int64(3)}) // takes b1's sku, freed earlier in the batch
	setA1 := changes("a1", 2, map[string]any{"total": 12.5, "title": nil})
	setA2 := changes("a2", 2, map[string]any{"total": 1.0})
	setB2 := changes("b2", 2, map[string]any{"qty": int64(20)})
	ops := []driver.Op{
		{Kind: driver.OpInsert, Object: ord, Record: a2},
		{Kind: driver.OpUpdate, Object: ord, ID: "a1", Record: setA1, IfETag: "v1-a1"},
		{Kind: driver.OpDelete, Object: lin, ID: "b1", IfETag: "v1-b1"},
		{Kind: driver.OpInsert, Object: lin, Record: b3},
		// Later writes see earlier ones of the same batch.
		{Kind: driver.OpUpdate, Object: ord, ID: "a2", Record: setA2, IfETag: "v1-a2"},
		{Kind: driver.OpUpdate, Object: lin, ID: "b2", Record: setB2},
		{Kind: driver.OpDelete, Object: lin, ID: "b3", IfETag: "v1-b3"},
	}
	got, err := d.Batch(t.Context(), ops)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	want := []driver.Record{a2, merged(a1, setA1), nil, b3, merged(a2, setA2), merged(b2, setB2), nil}
	if len(got) != len(want) {
		t.Fatalf("Batch returned %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if want[i] == nil {
			if len(got[i]) != 0 {
				t.Errorf("Batch result %d (delete) = %v, want nil", i, got[i])
			}
			continue
		}
		wantRecord(t, want[i], got[i])
	}
	wantStored(t, d, ord, merged(a1, setA1))
	wantStored(t, d, ord, merged(a2, setA2))
	wantStored(t, d, lin, merged(b2, setB2))
	wantGone(t, d, lin, "b1")
	wantGone(t, d, lin, "b3")
	wantCount(t, d, ord, 2)
	wantCount(t, d, lin, 1)
}

func testBatchEmpty(t *testing.T, d driver.Driver) {
	got, err := d.Batch(t.Context(), nil)
	if err != nil || len(got) != 0 {
		t.Errorf("Batch(nil) = %v, %v; want nothing", got, err)
	}
}

// testBatchAtomic runs batches whose third write (index 2) fails, each on a
// fresh database, and checks nothing of them is visible afterwards. The
// first two writes insert a2 and move b1 from sku "x" to "y" (changing its
// etag), so third writes can collide with earlier writes of the batch.
func testBatchAtomic(t *testing.T, open func(*testing.T) driver.Driver) {
	wantIs := func(target error) func(*testing.T, error) {
		return func(t *testing.T, err error) {
			t.Helper()
			if !errors.Is(err, target) {
				t.Errorf("error = %v; want %v", err, target)
			}
		}
	}
	tests := []struct {
		name  string
		third func(ord, lin *schema.Object) driver.Op
		check func(t *testing.T, err error)
	}{
		{
			name: "duplicate id",
			third: func(ord, _ *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpInsert, Object: ord, Record: rec("a1", 9, nil)}
			},
			check: wantIs(driver.ErrAlreadyExists),
		},
		{
			name: "id inserted earlier in the batch",
			third: func(ord, _ *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpInsert, Object: ord, Record: rec("a2", 9, nil)}
			},
			check: wantIs(driver.ErrAlreadyExists),
		},
		{
			name: "etag changed earlier in the batch",
			third: func(_, lin *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpUpdate, Object: lin, ID: "b1", Record: changes("b1", 3, nil), IfETag: "v1-b1"}
			},
			check: wantIs(driver.ErrEtagMismatch),
		},
		{
			name: "delete etag mismatch",
			third: func(_, lin *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpDelete, Object: lin, ID: "b2", IfETag: "v7-b2"}
			},
			check: wantIs(driver.ErrEtagMismatch),
		},
		{
			name: "unique violation with an earlier write",
			third: func(_, lin *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpInsert, Object: lin, Record: rec("b4", 9, map[string]any{"sku": "y"})}
			},
			check: func(t *testing.T, err error) { wantUnique(t, err, "lines", "sku") },
		},
		{
			name: "unique violation with a stored record",
			third: func(_, lin *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpInsert, Object: lin, Record: rec("b4", 9, map[string]any{"sku": "w"})}
			},
			check: func(t *testing.T, err error) { wantUnique(t, err, "lines", "sku") },
		},
		{
			name: "delete of a missing record",
			third: func(ord, _ *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpDelete, Object: ord, ID: "nope"}
			},
			check: wantIs(driver.ErrNotFound),
		},
		{
			name: "update of a missing record",
			third: func(ord, _ *schema.Object) driver.Op {
				return driver.Op{Kind: driver.OpUpdate, Object: ord, ID: "nope", Record: changes("nope", 2, nil)}
			},
			check: wantIs(driver.ErrNotFound),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := open(t)
			ord, lin, a1, b1, b2 := batchFixture(t, d)
			ops := []driver.Op{
				{Kind: driver.OpInsert, Object: ord, Record: rec("a2", 4, map[string]any{"title": "new"})},
				{Kind: driver.OpUpdate, Object: lin, ID: "b1", Record: changes("b1", 2, map[string]any{"sku": "y"}), IfETag: "v1-b1"},
				tc.third(ord, lin),
				{Kind: driver.OpDelete, Object: ord, ID: "a1"},
			}
			got, err := d.Batch(t.Context(), ops)
			if err == nil {
				t.Fatalf("Batch succeeded: %v", got)
			}
			var be *driver.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("Batch error %v is not a *BatchError", err)
			}
			if be.Index != 2 {
				t.Errorf("BatchError.Index = %d, want 2 (%v)", be.Index, err)
			}
			tc.check(t, err)

			// Nothing of the batch is visible.
			wantGone(t, d, ord, "a2")
			wantGone(t, d, lin, "b4")
			wantStored(t, d, ord, a1)
			wantStored(t, d, lin, b1)
			wantStored(t, d, lin, b2)
			wantCount(t, d, ord, 1)
			wantCount(t, d, lin, 2)
			// And the tables still take writes, with the batch's sku free.
			insert(t, d, lin, rec("b5", 6, map[string]any{"sku": "y"}))
		})
	}
}
