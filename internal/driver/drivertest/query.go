package drivertest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Filter shorthands for the cases.
var (
	eq = comparison(filter.Eq)
	ne = comparison(filter.Ne)
	lt = comparison(filter.Lt)
	le = comparison(filter.Le)
	gt = comparison(filter.Gt)
	ge = comparison(filter.Ge)
)

func comparison(op filter.Op) func(field string, v any) filter.Expr {
	return func(field string, v any) filter.Expr { return filter.Compare{Field: field, Op: op, Value: v} }
}

func and(terms ...filter.Expr) filter.Expr { return filter.And{Terms: terms} }
func or(terms ...filter.Expr) filter.Expr  { return filter.Or{Terms: terms} }
func not(term filter.Expr) filter.Expr     { return filter.Not{Term: term} }
func prefix(field, p string) filter.Expr   { return filter.Prefix{Field: field, Prefix: p} }

func equalIDs(got []string, want ...string) bool { return slices.Equal(got, want) }

// big is 2^53+1, the first integer a float64 cannot hold: an engine that
// compares integers as floats finds it equal to 2^53.
const big = 1<<53 + 1

// items returns the object and records the query cases run on: every
// orderable type, with duplicates and NULLs in every field. created_at
// runs in another order than id.
//
//	id  n       x     s           at         day         ok     k    created
//	i1  1       1.5   "apple"     T          2024-01-01  true   a    5
//	i2  2       -3    "Apple"     T+1µs      2024-01-02  false  b    3
//	i3  3       2.25  "banana"    T+100ms    2023-12-31  true   b    7
//	i4  NULL    NULL  NULL        NULL       NULL        NULL   NULL 1
//	i5  2       0     "cherry"    T-1h       2024-02-29  false  NULL 6
//	i6  -5      10    ""          T+1s       2024-01-01  NULL   NULL 2
//	i7  2^53+1  1.5   "apple pie" NULL       NULL        true   NULL 4
//	i8  2       NULL  "apple"     T          2024-01-01  true   a    9
//	i9  NULL    1.5   NULL        T+1s       NULL        false  NULL 8
func items(t *testing.T) (*schema.Object, []driver.Record) {
	obj := object(t, "items", []schema.Field{
		integer("n"),
		{Name: "x", Type: schema.TypeNumber},
		text("s"),
		{Name: "at", Type: schema.TypeTimestamp},
		{Name: "day", Type: schema.TypeDate},
		{Name: "ok", Type: schema.TypeBoolean},
		{Name: "k", Type: schema.TypeSelect, Options: []string{"a", "b"}},
	})
	recs := []driver.Record{
		rec("i1", 5, map[string]any{"n": int64(1), "x": 1.5, "s": "apple", "at": at(0), "day": "2024-01-01", "ok": true, "k": "a"}),
		rec("i2", 3, map[string]any{"n": int64(2), "x": -3.0, "s": "Apple", "at": at(time.Microsecond), "day": "2024-01-02", "ok": false, "k": "b"}),
		rec("i3", 7, map[string]any{"n": int64(3), "x": 2.25, "s": "banana", "at": at(100 * time.Millisecond), "day": "2023-12-31", "ok": true, "k": "b"}),
		rec("i4", 1, nil),
		rec("i5", 6, map[string]any{"n": int64(2), "x": 0.0, "s": "cherry", "at": at(-time.Hour), "day": "2024-02-29", "ok": false}),
		rec("i6", 2, map[string]any{"n": int64(-5), "x": 10.0, "s": "", "at": at(time.Second), "day": "2024-01-01"}),
		rec("i7", 4, map[string]any{"n": int64(big), "x": 1.5, "s": "apple pie", "ok": true}),
		rec("i8", 9, map[string]any{"n": int64(2), "s": "apple", "at": at(0), "day": "2024-01-01", "ok": true, "k": "a"}),
		rec("i9", 8, map[string]any{"x": 1.5, "at": at(time.Second), "ok": false}),
	}
	return obj, recs
}

var (
	allItems   = []string{"i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"}
	filterCase = []struct {
		name   string
		filter filter.Expr
		want   []string
	}{
		{"nil", nil, allItems},
		{"integer =", eq("n", int64(2)), []string{"i2", "i5", "i8"}},
		{"integer != matches NULL", ne("n", int64(2)), []string{"i1", "i3", "i4", "i6", "i7", "i9"}},
		{"integer <", lt("n", int64(2)), []string{"i1", "i6"}},
		{"integer <=", le("n", int64(2)), []string{"i1", "i2", "i5", "i6", "i8"}},
		{"integer >", gt("n", int64(2)), []string{"i3", "i7"}},
		{"integer >=", ge("n", int64(3)), []string{"i3", "i7"}},
		{"integer beyond 2^53", eq("n", int64(big)), []string{"i7"}},
		{"integer 2^53 is not 2^53+1", eq("n", int64(big-1)), nil},
		{"integer IS NULL", eq("n", nil), []string{"i4", "i9"}},
		{"integer IS NOT NULL", ne("n", nil), []string{"i1", "i2", "i3", "i5", "i6", "i7", "i8"}},
		{"number =", eq("x", 1.5), []string{"i1", "i7", "i9"}},
		{"number <", lt("x", 0.0), []string{"i2"}},
		{"number >=", ge("x", 2.25), []string{"i3", "i6"}},
		{"number !=", ne("x", 1.5), []string{"i2", "i3", "i4", "i5", "i6", "i8"}},
		{"number >", gt("x", -3.0), []string{"i1", "i3", "i5", "i6", "i7", "i9"}},
		{"number <=", le("x", 0.0), []string{"i2", "i5"}},
		{"text = is case-sensitive", eq("s", "apple"), []string{"i1", "i8"}},
		{"text < by bytes", lt("s", "apple"), []string{"i2", "i6"}},
		{"text >", gt("s", "apple"), []string{"i3", "i5", "i7"}},
		{"text <=", le("s", "Apple"), []string{"i2", "i6"}},
		{"text >=", ge("s", "banana"), []string{"i3", "i5"}},
		{"text empty is a value", eq("s", ""), []string{"i6"}},
		{"text !=", ne("s", "apple"), []string{"i2", "i3", "i4", "i5", "i6", "i7", "i9"}},
		{"text IS NULL", eq("s", nil), []string{"i4", "i9"}},
		{"timestamp =", eq("at", at(0)), []string{"i1", "i8"}},
		{"timestamp >", gt("at", at(0)), []string{"i2", "i3", "i6", "i9"}},
		{"timestamp < by a microsecond", lt("at", at(time.Microsecond)), []string{"i1", "i5", "i8"}},
		{"timestamp >=", ge("at", at(100*time.Millisecond)), []string{"i3", "i6", "i9"}},
		{"timestamp <=", le("at", at(-time.Hour)), []string{"i5"}},
		{"timestamp !=", ne("at", at(time.Second)), []string{"i1", "i2", "i3", "i4", "i5", "i7", "i8"}},
		{"timestamp IS NULL", eq("at", nil), []string{"i4", "i7"}},
		{"date =", eq("day", "2024-01-01"), []string{"i1", "i6", "i8"}},
		{"date >", gt("day", "2024-01-01"), []string{"i2", "i5"}},
		{"date <", lt("day", "2024-01-01"), []string{"i3"}},
		{"date <=", le("day", "2024-01-01"), []string{"i1", "i3", "i6", "i8"}},
		{"date >=", ge("day", "2024-01-02"), []string{"i2", "i5"}},
		{"date !=", ne("day", "2024-01-01"), []string{"i2", "i3", "i4", "i5", "i7", "i9"}},
		{"date IS NULL", eq("day", nil), []string{"i4", "i7", "i9"}},
		{"boolean = true", eq("ok", true), []string{"i1", "i3", "i7", "i8"}},
		{"boolean = false", eq("ok", false), []string{"i2", "i5", "i9"}},
		{"boolean != true", ne("ok", true), []string{"i2", "i4", "i5", "i6", "i9"}},
		{"boolean IS NULL", eq("ok", nil), []string{"i4", "i6"}},
		{"boolean IS NOT NULL", ne("ok", nil), []string{"i1", "i2", "i3", "i5", "i7", "i8", "i9"}},
		{"boolean > false", gt("ok", false), []string{"i1", "i3", "i7", "i8"}},
		{"select =", eq("k", "b"), []string{"i2", "i3"}},
		{"select !=", ne("k", "a"), []string{"i2", "i3", "i4", "i5", "i6", "i7", "i9"}},
		{"prefix", prefix("s", "apple"), []string{"i1", "i7", "i8"}},
		{"prefix is case-sensitive", prefix("s", "App"), []string{"i2"}},
		{"empty prefix matches every value", prefix("s", ""), []string{"i1", "i2", "i3", "i5", "i6", "i7", "i8"}},
		{"prefix longer than values", prefix("s", "apple pie!"), nil},
		{"not prefix matches NULL", not(prefix("s", "apple")), []string{"i2", "i3", "i4", "i5", "i6", "i9"}},
		{"id =", eq(schema.FieldID, "i3"), []string{"i3"}},
		{"id >", gt(schema.FieldID, "i7"), []string{"i8", "i9"}},
		{"created_at <", lt(schema.FieldCreatedAt, at(3*time.Microsecond)), []string{"i4", "i6"}},
		{"and", and(ge("n", int64(2)), eq("ok", true)), []string{"i3", "i7", "i8"}},
		{"or", or(eq("n", int64(1)), eq("s", "cherry")), []string{"i1", "i5"}},
		{"not =", not(eq("n", int64(2))), []string{"i1", "i3", "i4", "i6", "i7", "i9"}},
		{"not > matches NULL", not(gt("n", int64(2))), []string{"i1", "i2", "i4", "i5", "i6", "i8", "i9"}},
		{"not and", not(and(eq("ok", true), lt("n", int64(5)))), []string{"i2", "i4", "i5", "i6", "i7", "i9"}},
		{"nested", or(and(eq("n", int64(2)), eq("ok", false)), not(or(eq("ok", true), eq("ok", false)))), []string{"i2", "i4", "i5", "i6"}},
		{"not not", not(not(eq("k", "a"))), []string{"i1", "i8"}},
		{"empty and", and(), allItems},
		{"empty or", or(), nil},
		{"and of or", and(or(eq("k", "a"), eq("k", "b")), or(lt("x", 0.0), gt("x", 2.0))), []string{"i2", "i3"}},
	}
	orderCase = []struct {
		name   string
		order  []driver.OrderBy
		filter filter.Expr
		want   []string
	}{
		{"id", nil, nil, allItems},
		{"id desc", []driver.OrderBy{{Field: schema.FieldID, Desc: true}}, nil, []string{"i9", "i8", "i7", "i6", "i5", "i4", "i3", "i2", "i1"}},
		{"integer asc", asc("n"), nil, []string{"i4", "i9", "i6", "i1", "i2", "i5", "i8", "i3", "i7"}},
		{"integer desc", desc("n"), nil, []string{"i7", "i3", "i2", "i5", "i8", "i1", "i6", "i4", "i9"}},
		{"text asc", asc("s"), nil, []string{"i4", "i9", "i6", "i2", "i1", "i8", "i7", "i3", "i5"}},
		{"text desc", desc("s"), nil, []string{"i5", "i3", "i7", "i1", "i8", "i2", "i6", "i4", "i9"}},
		{"number asc", asc("x"), nil, []string{"i4", "i8", "i2", "i5", "i1", "i7", "i9", "i3", "i6"}},
		{"timestamp asc", asc("at"), nil, []string{"i4", "i7", "i5", "i1", "i8", "i2", "i3", "i6", "i9"}},
		{"timestamp desc", desc("at"), nil, []string{"i6", "i9", "i3", "i2", "i1", "i8", "i5", "i4", "i7"}},
		{"date asc", asc("day"), nil, []string{"i4", "i7", "i9", "i3", "i1", "i6", "i8", "i2", "i5"}},
		{"boolean asc, number desc", []driver.OrderBy{{Field: "ok"}, {Field: "x", Desc: true}}, nil, []string{"i6", "i4", "i9", "i5", "i2", "i3", "i1", "i7", "i8"}},
		{"select desc, integer asc", []driver.OrderBy{{Field: "k", Desc: true}, {Field: "n"}}, nil, []string{"i2", "i3", "i1", "i8", "i4", "i9", "i6", "i5", "i7"}},
		{"created_at desc", desc(schema.FieldCreatedAt), nil, []string{"i8", "i9", "i3", "i5", "i1", "i7", "i2", "i6", "i4"}},
		{"filtered integer asc", asc("n"), ne("ok", true), []string{"i4", "i9", "i6", "i2", "i5"}},
	}
)

func asc(field string) []driver.OrderBy  { return []driver.OrderBy{{Field: field}} }
func desc(field string) []driver.OrderBy { return []driver.OrderBy{{Field: field, Desc: true}} }

func testQuery(t *testing.T, d driver.Driver) {
	obj, recs := items(t)
	migrate(t, d, nil, obj)
	insert(t, d, obj, recs...)

	t.Run("Filter", func(t *testing.T) {
		for _, tc := range filterCase {
			got := queryIDs(t, d, obj, driver.Query{Filter: tc.filter})
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
	t.Run("Count", func(t *testing.T) {
		for _, tc := range filterCase {
			n, err := d.Count(t.Context(), obj, tc.filter)
			if err != nil {
				t.Fatalf("%s: Count: %v", tc.name, err)
			}
			if n != int64(len(tc.want)) {
				t.Errorf("%s: Count = %d, want %d", tc.name, n, len(tc.want))
			}
		}
	})
	t.Run("Order", func(t *testing.T) {
		for _, tc := range orderCase {
			got := queryIDs(t, d, obj, driver.Query{Filter: tc.filter, Order: tc.order})
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
	t.Run("Records", func(t *testing.T) {
		// Rows with NULLs follow rows without (i4 after i3): no value may
		// carry over from one row to the next. With and without a LIMIT,
		// which drivers read differently.
		for _, limit := range []int{0, len(recs) + 1} {
			got, err := d.Query(t.Context(), obj, driver.Query{Limit: limit})
			if err != nil {
				t.Fatalf("Query(limit %d): %v", limit, err)
			}
			if len(got) != len(recs) {
				t.Fatalf("Query(limit %d) returned %d records, want %d", limit, len(got), len(recs))
			}
			for i := range recs {
				wantRecord(t, recs[i], got[i])
			}
		}
	})
	t.Run("Limit", func(t *testing.T) {
		for _, limit := range []int{0, -1, 1, 3, 9, 10} {
			want := allItems
			if limit > 0 && limit < len(want) {
				want = want[:limit]
			}
			if got := queryIDs(t, d, obj, driver.Query{Limit: limit}); !slices.Equal(got, want) {
				t.Errorf("Limit %d: got %v, want %v", limit, got, want)
			}
		}
	})
	t.Run("Pages", func(t *testing.T) {
		for _, tc := range orderCase {
			for _, limit := range []int{1, 2, 4} {
				got := walk(t, d, obj, driver.Query{Filter: tc.filter, Order: tc.order, Limit: limit})
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s by %d: got %v, want %v", tc.name, limit, got, tc.want)
				}
			}
		}
	})
	t.Run("AfterLast", func(t *testing.T) {
		q := driver.Query{Order: asc("n"), After: []any{int64(big), "i7"}}
		if got := queryIDs(t, d, obj, q); len(got) != 0 {
			t.Errorf("after the last record: got %v", got)
		}
		q = driver.Query{Order: asc("n"), After: []any{nil, "i4"}, Limit: 3}
		if got := queryIDs(t, d, obj, q); !equalIDs(got, "i9", "i6", "i1") {
			t.Errorf("after a NULL key: got %v, want [i9 i6 i1]", got)
		}
		q = driver.Query{Order: desc("n"), After: []any{int64(2), "i5"}}
		if got := queryIDs(t, d, obj, q); !equalIDs(got, "i8", "i1", "i6", "i4", "i9") {
			t.Errorf("after a tie, descending: got %v, want [i8 i1 i6 i4 i9]", got)
		}
		q = driver.Query{Order: desc("n"), After: []any{nil, "i4"}}
		if got := queryIDs(t, d, obj, q); !equalIDs(got, "i9") {
			t.Errorf("after a NULL key, descending: got %v, want [i9]", got)
		}
	})
}

// walk reads every page of q, continuing each page after its last record,
// and returns the ids in the order served; it fails on a repeated id.
func walk(t *testing.T, d driver.Driver, obj *schema.Object, q driver.Query) []string {
	t.Helper()
	var out []string
	seen := make(map[string]bool)
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatalf("more than 20 pages: %v", out)
		}
		recs, err := d.Query(t.Context(), obj, q)
		if err != nil {
			t.Fatalf("Query(page %d, after %v): %v", page, q.After, err)
		}
		if len(recs) > q.Limit {
			t.Fatalf("page %d has %d records, more than the limit %d", page, len(recs), q.Limit)
		}
		for _, id := range ids(recs) {
			if seen[id] {
				t.Fatalf("%s served twice; so far %v", id, out)
			}
			seen[id] = true
			out = append(out, id)
		}
		if len(recs) < q.Limit {
			return out
		}
		q.After = after(recs[len(recs)-1], q.Order)
	}
}

// after returns the keyset position of r in order.
func after(r driver.Record, order []driver.OrderBy) []any {
	var key []any
	for _, o := range order {
		key = append(key, r[o.Field]) // nil when absent
	}
	return append(key, r[schema.FieldID])
}

func testQueryPrefixLiteral(t *testing.T, d driver.Driver) {
	obj := object(t, "words", []schema.Field{text("s")})
	migrate(t, d, nil, obj)
	values := []string{"50%off", "50_off", "50xoff", "5%", "a_b", "axb", `a\b`, "Abc", "abc", "ab", "a", "éclair", "e"}
	for i, v := range values {
		insert(t, d, obj, rec(v, i, map[string]any{"s": v}))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"50%", []string{"50%off"}},
		{"50_", []string{"50_off"}},
		{"5%", []string{"5%"}},
		{"%", nil},
		{"_", nil},
		{"a_", []string{"a_b"}},
		{`a\`, []string{`a\b`}},
		{`\`, nil},
		{"ab", []string{"ab", "abc"}},
		{"A", []string{"Abc"}},
		{"a", []string{"a", "a_b", `a\b`, "ab", "abc", "axb"}},
		{"é", []string{"éclair"}},
		{"abc", []string{"abc"}},
		{"*", nil},
		{"[a]", nil},
	}
	for _, tc := range tests {
		got := queryIDs(t, d, obj, driver.Query{Filter: prefix("s", tc.prefix)})
		slices.SortFunc(got, strings.Compare)
		want := slices.Clone(tc.want)
		slices.SortFunc(want, strings.Compare)
		if !slices.Equal(got, want) {
			t.Errorf("prefix %q: got %q, want %q", tc.prefix, got, want)
		}
	}
}

func testQueryPageAfterDeleted(t *testing.T, d driver.Driver) {
	obj, recs := items(t)
	migrate(t, d, nil, obj)
	insert(t, d, obj, recs...)
	q := driver.Query{Order: asc("n"), Limit: 4}
	page, err := d.Query(t.Context(), obj, q)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if got := ids(page); !equalIDs(got, "i4", "i9", "i6", "i1") {
		t.Fatalf("first page %v", got)
	}
	// The record a page ended on is deleted, and one before and one after.
	for _, id := range []string{"i1", "i9", "i5"} {
		if err := d.Delete(t.Context(), obj, id, ""); err != nil {
			t.Fatalf("Delete(%s): %v", id, err)
		}
	}
	q.After = after(page[len(page)-1], q.Order)
	if got := queryIDs(t, d, obj, q); !equalIDs(got, "i2", "i8", "i3", "i7") {
		t.Errorf("page after a deleted record: got %v, want [i2 i8 i3 i7]", got)
	}
}
