package driversql_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

// rows is a result set whose Scan, like some drivers', writes nothing into
// the destination of a NULL column (a nil value here).
type rows struct {
	values [][]any
	next   int
	err    error
}

func (r *rows) Next() bool {
	r.next++
	return r.next <= len(r.values)
}

func (r *rows) Scan(dest ...any) error {
	for i, v := range r.values[r.next-1] {
		if v != nil {
			*dest[i].(*any) = v
		}
	}
	return nil
}

func (r *rows) Err() error { return r.err }

func TestScanRecords(t *testing.T) {
	obj := &schema.Object{Name: "items", Fields: []schema.Field{
		{Name: "name", Type: schema.TypeText}, {Name: "n", Type: schema.TypeInteger},
	}}
	row := func(id string, name, n any) []any { return []any{id, int64(1), int64(2), "e", name, n} }
	rs := &rows{values: [][]any{
		row("a", "first", int64(7)),
		row("b", nil, nil), // every field NULL, after a row with them all
		row("c", "third", nil),
	}}
	for _, limit := range []int{0, 2, 5000} {
		rs.next = 0
		got, err := driversql.ScanRecords(sqlitedialect.Dialect{}, obj, rs, limit)
		if err != nil {
			t.Fatalf("ScanRecords(limit %d): %v", limit, err)
		}
		for _, rec := range got {
			delete(rec, schema.FieldCreatedAt)
			delete(rec, schema.FieldUpdatedAt)
			delete(rec, schema.FieldETag)
		}
		want := []driver.Record{
			{schema.FieldID: "a", "name": "first", "n": int64(7)},
			{schema.FieldID: "b"},
			{schema.FieldID: "c", "name": "third"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ScanRecords(limit %d) (-want +got):\n%s", limit, diff)
		}
	}

	failed := errors.New("connection lost")
	if _, err := driversql.ScanRecords(sqlitedialect.Dialect{}, obj, &rows{values: rs.values, err: failed}, 0); !errors.Is(err, failed) {
		t.Errorf("ScanRecords with a failing result set = %v, want %v", err, failed)
	}
	bad := &rows{values: [][]any{{"a", int64(1), int64(2), "e", int64(5), nil}}}
	if _, err := driversql.ScanRecords(sqlitedialect.Dialect{}, obj, bad, 0); err == nil {
		t.Error("ScanRecords accepted an integer in a text column")
	}
}
