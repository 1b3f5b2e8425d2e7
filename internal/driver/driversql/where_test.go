package driversql_test

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// fixture is the object the builder tests and FuzzWhere run over: one field
// of every type.
var fixture = &schema.Object{Name: "things", Fields: []schema.Field{
	{Name: "s", Type: schema.TypeText},
	{Name: "k", Type: schema.TypeSelect, Options: []string{"a", "b"}},
	{Name: "n", Type: schema.TypeInteger},
	{Name: "x", Type: schema.TypeNumber},
	{Name: "ok", Type: schema.TypeBoolean},
	{Name: "at", Type: schema.TypeTimestamp},
	{Name: "day", Type: schema.TypeDate},
	{Name: "doc", Type: schema.TypeJSON},
}}

func cmpf(field string, op filter.Op, v any) filter.Expr {
	return filter.Compare{Field: field, Op: op, Value: v}
}

func TestWhere(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		expr filter.Expr
		sql  string
		args []any
	}{
		{"nil", nil, `TRUE`, nil},
		{"empty and", filter.And{}, `TRUE`, nil},
		{"empty or", filter.Or{}, `FALSE`, nil},
		{"not empty and", filter.Not{Term: filter.And{}}, `FALSE`, nil},
		{"eq", cmpf("n", filter.Eq, int64(2)), `"n" = $1`, []any{int64(2)}},
		{"ne matches NULL", cmpf("n", filter.Ne, int64(2)), `("n" <> $1 OR "n" IS NULL)`, []any{int64(2)}},
		{"lt", cmpf("n", filter.Lt, int64(2)), `"n" < $1`, []any{int64(2)}},
		{"not lt matches NULL", filter.Not{Term: cmpf("n", filter.Lt, int64(2))}, `("n" >= $1 OR "n" IS NULL)`, []any{int64(2)}},
		{"not eq", filter.Not{Term: cmpf("s", filter.Eq, "a")}, `("s" <> $1 OR "s" IS NULL)`, []any{"a"}},
		{"not ne", filter.Not{Term: cmpf("s", filter.Ne, "a")}, `"s" = $1`, []any{"a"}},
		{"double not", filter.Not{Term: filter.Not{Term: cmpf("n", filter.Gt, int64(1))}}, `"n" > $1`, []any{int64(1)}},
		{"is null", cmpf("s", filter.Eq, nil), `"s" IS NULL`, nil},
		{"is not null", cmpf("s", filter.Ne, nil), `"s" IS NOT NULL`, nil},
		{"not is null", filter.Not{Term: cmpf("s", filter.Eq, nil)}, `"s" IS NOT NULL`, nil},
		{"order against nil", cmpf("n", filter.Lt, nil), `FALSE`, nil},
		{"not order against nil", filter.Not{Term: cmpf("n", filter.Lt, nil)}, `TRUE`, nil},
		{"system field", cmpf("id", filter.Eq, "r1"), `"id" = $1`, []any{"r1"}},
		{"int widens", cmpf("n", filter.Eq, 7), `"n" = $1`, []any{7}},
		{"json equality", cmpf("doc", filter.Eq, map[string]any{"a": 1.0}), `"doc" = $1`, []any{map[string]any{"a": 1.0}}},
		{"prefix on date", filter.Prefix{Field: "day", Prefix: "2024-"}, `("day" LIKE $1 ESCAPE '\')`, []any{"2024-%"}},
		{
			"de morgan",
			filter.Not{Term: filter.And{Terms: []filter.Expr{cmpf("n", filter.Eq, int64(1)), filter.Or{Terms: []filter.Expr{cmpf("ok", filter.Eq, true), cmpf("s", filter.Eq, nil)}}}}},
			`(("n" <> $1 OR "n" IS NULL) OR (("ok" <> $2 OR "ok" IS NULL) AND "s" IS NOT NULL))`,
			[]any{int64(1), true},
		},
		{"prefix", filter.Prefix{Field: "s", Prefix: "ab"}, `("s" LIKE $1 ESCAPE '\')`, []any{"ab%"}},
		{"not prefix", filter.Not{Term: filter.Prefix{Field: "s", Prefix: "ab"}}, `(NOT ("s" LIKE $1 ESCAPE '\') OR "s" IS NULL)`, []any{"ab%"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := driversql.NewArgs(dollar)
			got, err := driversql.Where(dollar, fixture, tc.expr, args)
			if err != nil {
				t.Fatalf("Where: %v", err)
			}
			if got != tc.sql {
				t.Errorf("Where =\n  %s\nwant\n  %s", got, tc.sql)
			}
			if diff := cmp.Diff(tc.args, args.Values()); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWhereRejects(t *testing.T) {
	t.Parallel()
	deep := filter.Expr(cmpf("n", filter.Eq, int64(1)))
	for range 100 {
		deep = filter.Not{Term: deep}
	}
	tests := []struct {
		name string
		expr filter.Expr
	}{
		{"unknown field", cmpf("nope", filter.Eq, "a")},
		{"unknown op", cmpf("n", filter.Op("~"), int64(1))},
		{"wrong Go type", cmpf("n", filter.Eq, "1")},
		{"unsigned for integer", cmpf("n", filter.Eq, uint64(1))},
		{"NaN", cmpf("x", filter.Gt, math.NaN())},
		{"json order", cmpf("doc", filter.Lt, "a")},
		{"float for integer", cmpf("n", filter.Eq, 1.0)},
		{"bad date", cmpf("day", filter.Eq, "2024-13-01")},
		{"prefix on integer", filter.Prefix{Field: "n", Prefix: "1"}},
		{"prefix on json", filter.Prefix{Field: "doc", Prefix: "1"}},
		{"unknown field in prefix", filter.Prefix{Field: "nope", Prefix: "1"}},
		{"too deep", deep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, err := driversql.Where(qmark, fixture, tc.expr, driversql.NewArgs(qmark)); err == nil {
				t.Errorf("Where = %s; want an error", got)
			}
		})
	}
}

func TestAfter(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		order []driver.OrderBy
		after []any
		sql   string
		args  []any
	}{
		{
			"id only", nil, []any{"r1"},
			`(("id" > $1))`, []any{"r1"},
		},
		{
			"ascending value",
			[]driver.OrderBy{{Field: "n"}}, []any{int64(3), "r1"},
			`("n" >= $1 AND (("n" > $2) OR ("n" = $3 AND "id" > $4)))`, []any{int64(3), int64(3), int64(3), "r1"},
		},
		{
			"ascending NULL: every value is later",
			[]driver.OrderBy{{Field: "n"}}, []any{nil, "r1"},
			`(("n" IS NOT NULL) OR ("n" IS NULL AND "id" > $1))`, []any{"r1"},
		},
		{
			"descending value: NULLs are later",
			[]driver.OrderBy{{Field: "at", Desc: true}}, []any{t0, "r1"},
			`((("at" < $1 OR "at" IS NULL)) OR ("at" = $2 AND "id" > $3))`, []any{t0, t0, "r1"},
		},
		{
			"descending NULL: only NULLs with a later id",
			[]driver.OrderBy{{Field: "at", Desc: true}}, []any{nil, "r1"},
			`(("at" IS NULL AND "id" > $1))`, []any{"r1"},
		},
		{
			"two keys",
			[]driver.OrderBy{{Field: "s", Desc: true}, {Field: "n"}}, []any{"b", nil, "r1"},
			`((("s" < $1 OR "s" IS NULL)) OR ("s" = $2 AND "n" IS NOT NULL) OR ("s" = $3 AND "n" IS NULL AND "id" > $4))`,
			[]any{"b", "b", "b", "r1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := driversql.NewArgs(dollar)
			got, err := driversql.After(dollar, fixture, driversql.Order(tc.order), tc.after, args)
			if err != nil {
				t.Fatalf("After: %v", err)
			}
			if got != tc.sql {
				t.Errorf("After =\n  %s\nwant\n  %s", got, tc.sql)
			}
			if diff := cmp.Diff(tc.args, args.Values()); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAfterRejects(t *testing.T) {
	t.Parallel()
	order := driversql.Order([]driver.OrderBy{{Field: "n"}})
	for name, after := range map[string][]any{
		"too few values":  {"r1"},
		"too many values": {int64(1), "r1", "x"},
		"wrong Go type":   {"one", "r1"},
	} {
		if got, err := driversql.After(qmark, fixture, order, after, driversql.NewArgs(qmark)); err == nil {
			t.Errorf("%s: After = %s; want an error", name, got)
		}
	}
	for _, field := range []string{"nope", "doc"} {
		if _, err := driversql.After(qmark, fixture, driversql.Order([]driver.OrderBy{{Field: field}}), []any{nil, "r1"}, driversql.NewArgs(qmark)); err == nil {
			t.Errorf("After over %s: want an error", field)
		}
	}
}

func TestOrderBy(t *testing.T) {
	t.Parallel()
	got, err := driversql.OrderBy(qmark, fixture, driversql.Order([]driver.OrderBy{{Field: "s", Desc: true}, {Field: "n"}}))
	if err != nil {
		t.Fatal(err)
	}
	const want = `"s" DESC NULLS LAST, "n" ASC NULLS FIRST, "id" ASC NULLS FIRST`
	if got != want {
		t.Errorf("OrderBy = %s; want %s", got, want)
	}
	for _, field := range []string{"nope", "doc"} {
		if _, err := driversql.OrderBy(qmark, fixture, []driver.OrderBy{{Field: field}}); err == nil {
			t.Errorf("OrderBy(%s): want an error", field)
		}
	}
}
