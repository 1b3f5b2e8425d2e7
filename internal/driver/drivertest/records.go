package drivertest

import (
	"errors"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// things has a field of every type.
func things(t *testing.T) *schema.Object {
	return object(t, "things", []schema.Field{
		text("title"),
		integer("count"),
		{Name: "price", Type: schema.TypeNumber},
		{Name: "done", Type: schema.TypeBoolean},
		{Name: "due", Type: schema.TypeTimestamp},
		{Name: "day", Type: schema.TypeDate},
		{Name: "data", Type: schema.TypeJSON},
		{Name: "kind", Type: schema.TypeSelect, Options: []string{"a", "b", "c"}},
	})
}

func testRoundTrip(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	oslo := time.FixedZone("UTC+2", 2*60*60)
	tests := []struct {
		name      string
		in, want  driver.Record
		wantEqual bool // want is in
	}{
		{name: "ordinary", wantEqual: true, in: rec("r1", 1, map[string]any{
			"title": "héllo wörld ✓ 🚀",
			"count": int64(42),
			"price": 19.99,
			"done":  true,
			"due":   time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC),
			"day":   "2024-02-29",
			"data": map[string]any{
				"name":   "x",
				"n":      float64(3),
				"nested": map[string]any{"list": []any{1.5, "two", true, nil}},
				"empty":  map[string]any{},
				"none":   nil,
			},
			"kind": "b",
		})},
		{name: "large integers", wantEqual: true, in: rec("r2", 2, map[string]any{
			"count": int64(maxInt),
			"price": -1.5e300,
			"data":  []any{},
		})},
		{name: "smallest integer", wantEqual: true, in: rec("r3", 3, map[string]any{
			"count": int64(minInt),
			"price": 0.1,
			"data":  "plain string",
		})},
		{name: "beyond float precision", wantEqual: true, in: rec("r4", 4, map[string]any{
			"count": int64(1<<53 + 1),
			"price": 5e-324,
			"data":  `{"a":1}`,
		})},
		{name: "zero values are not NULL", wantEqual: true, in: rec("r5", 5, map[string]any{
			"title": "",
			"count": int64(0),
			"price": 0.0,
			"done":  false,
			"data":  false,
		})},
		{name: "all NULL", wantEqual: true, in: rec("r6", 6, map[string]any{
			"title": nil, "count": nil, "price": nil, "done": nil,
			"due": nil, "day": nil, "data": nil, "kind": nil,
		})},
		{name: "absent", wantEqual: true, in: rec("r7", 7, nil)},
		{name: "quotes and escapes", wantEqual: true, in: rec("r8", 8, map[string]any{
			"title": "line1\nline2\t'single' \"double\" back\\slash %_ ; --",
			"data":  map[string]any{"k'ey": "v\"al\\ue", "ü": []any{map[string]any{}}},
			"day":   "1999-12-31",
		})},
		{name: "json scalars", wantEqual: true, in: rec("r9", 9, map[string]any{
			"data": 12.5,
		})},
		{
			name: "time in another zone comes back in UTC",
			in: rec("r10", 10, map[string]any{
				"due": time.Date(2024, 1, 2, 5, 4, 5, 0, oslo),
			}),
			want: rec("r10", 10, map[string]any{
				"due": time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
			}),
		},
		{
			name: "time finer than a microsecond is truncated",
			in: rec("r11", 11, map[string]any{
				"due": time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC),
			}),
			want: rec("r11", 11, map[string]any{
				"due": time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC),
			}),
		},
		{name: "time before 1970", wantEqual: true, in: rec("r12", 12, map[string]any{
			"due": time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
			"day": "1900-01-01",
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if tc.wantEqual {
				want = tc.in
			}
			insert(t, d, obj, tc.in)
			wantStored(t, d, obj, want)
			// The query path maps values like the get path.
			recs, err := d.Query(t.Context(), obj, driver.Query{Filter: eq(schema.FieldID, want[schema.FieldID])})
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if len(recs) != 1 {
				t.Fatalf("Query by id returned %d records", len(recs))
			}
			wantRecord(t, want, recs[0])
		})
	}
}

func testGetMissing(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	wantGone(t, d, obj, "nope")
	insert(t, d, obj, rec("r1", 1, nil))
	wantGone(t, d, obj, "R1")
	wantGone(t, d, obj, "")
}

func testInsertDuplicateID(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	first := rec("r1", 1, map[string]any{"title": "first"})
	insert(t, d, obj, first)
	err := d.Insert(t.Context(), obj, rec("r1", 2, map[string]any{"title": "second"}))
	if !errors.Is(err, driver.ErrAlreadyExists) {
		t.Errorf("Insert of a taken id = %v; want ErrAlreadyExists", err)
	}
	wantStored(t, d, obj, first)
	wantCount(t, d, obj, 1)
}

func testInsertUnknownField(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	if err := d.Insert(t.Context(), obj, rec("r1", 1, map[string]any{"nope": "x"})); err == nil {
		t.Error("Insert with a field the table lacks succeeded")
	}
	wantGone(t, d, obj, "r1")
	insert(t, d, obj, rec("r2", 2, nil))
	if _, err := d.Update(t.Context(), obj, "r2", changes("r2", 2, map[string]any{"nope": "x"}), ""); err == nil {
		t.Error("Update with a field the table lacks succeeded")
	}
}

func testUpdate(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	r1 := rec("r1", 1, map[string]any{
		"title": "old", "count": int64(1), "price": 2.5, "done": true,
		"due": at(0), "day": "2024-01-01", "data": map[string]any{"a": 1.0}, "kind": "a",
	})
	insert(t, d, obj, r1)

	// Fields in set change (nil clears), the others stay; the whole record
	// comes back, as stored.
	set := changes("r1", 2, map[string]any{
		"title": "new", "count": int64(1<<62 + 1), "done": false, "due": at(time.Second),
		"data": []any{"b"}, "price": nil, "kind": nil,
	})
	want := merged(r1, set)
	got := update(t, d, obj, "r1", set, "v1-r1")
	wantRecord(t, want, got)
	wantStored(t, d, obj, want)

	// "" matches any etag.
	set = changes("r1", 3, map[string]any{"price": 7.25})
	want = merged(want, set)
	wantRecord(t, want, update(t, d, obj, "r1", set, ""))
	wantStored(t, d, obj, want)

	// Only the etag and updated_at.
	set = changes("r1", 4, nil)
	want = merged(want, set)
	wantRecord(t, want, update(t, d, obj, "r1", set, "v3-r1"))
}

func testUpdateETag(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	r1 := rec("r1", 1, map[string]any{"title": "old"})
	insert(t, d, obj, r1)

	_, err := d.Update(t.Context(), obj, "r1", changes("r1", 2, map[string]any{"title": "new"}), "v9-r1")
	if !errors.Is(err, driver.ErrEtagMismatch) {
		t.Errorf("Update with a stale etag = %v; want ErrEtagMismatch", err)
	}
	wantStored(t, d, obj, r1)

	for _, etag := range []string{"", "v1-r1"} {
		_, err = d.Update(t.Context(), obj, "nope", changes("nope", 2, map[string]any{"title": "x"}), etag)
		if !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("Update(ifETag %q) of a missing record = %v; want ErrNotFound", etag, err)
		}
	}
	wantGone(t, d, obj, "nope")
}

func testDelete(t *testing.T, d driver.Driver) {
	obj := things(t)
	migrate(t, d, nil, obj)
	r1 := rec("r1", 1, map[string]any{"title": "one"})
	r2 := rec("r2", 2, map[string]any{"title": "two"})
	insert(t, d, obj, r1, r2)

	if err := d.Delete(t.Context(), obj, "r1", "v2-r1"); !errors.Is(err, driver.ErrEtagMismatch) {
		t.Errorf("Delete with a stale etag = %v; want ErrEtagMismatch", err)
	}
	wantStored(t, d, obj, r1)
	if err := d.Delete(t.Context(), obj, "r1", "v1-r1"); err != nil {
		t.Fatalf("Delete with the etag: %v", err)
	}
	wantGone(t, d, obj, "r1")
	for _, etag := range []string{"", "v1-r1"} {
		if err := d.Delete(t.Context(), obj, "r1", etag); !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("Delete(ifETag %q) of a deleted record = %v; want ErrNotFound", etag, err)
		}
	}
	if err := d.Delete(t.Context(), obj, "r2", ""); err != nil {
		t.Fatalf("Delete with any etag: %v", err)
	}
	wantCount(t, d, obj, 0)
	// The id is free again.
	insert(t, d, obj, r1)
	wantStored(t, d, obj, r1)
}
