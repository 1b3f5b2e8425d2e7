package driverpg_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driverpg"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/pgtest"
	"github.com/envplane/envplane/internal/schema"
)

// openURL returns a driver over the database at url, closed when t ends.
func openURL(t *testing.T, url string) *driverpg.Driver {
	t.Helper()
	d, err := driverpg.OpenURL(t.Context(), url)
	if err != nil {
		t.Fatalf("OpenURL: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// every has a field of every type.
var every = &schema.Object{Name: "every", Fields: []schema.Field{
	{Name: "s", Type: schema.TypeText},
	{Name: "k", Type: schema.TypeSelect, Options: []string{"a"}},
	{Name: "day", Type: schema.TypeDate},
	{Name: "doc", Type: schema.TypeJSON},
	{Name: "n", Type: schema.TypeInteger},
	{Name: "ok", Type: schema.TypeBoolean},
	{Name: "at", Type: schema.TypeTimestamp},
	{Name: "x", Type: schema.TypeNumber},
}}

func create(t *testing.T, d driver.Driver, obj *schema.Object) {
	t.Helper()
	if err := d.Migrate(t.Context(), drivertest.Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
}

func record(id string, fields map[string]any) driver.Record {
	ts := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)
	r := driver.Record{"id": id, "created_at": ts, "updated_at": ts, "etag": "e-" + id}
	for k, v := range fields {
		r[k] = v
	}
	return r
}

// TestStorage pins the column of each field type: its type, the "C"
// collation of text, and the comment that records the field type.
func TestStorage(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t, "envplane_driver_")
	create(t, openURL(t, url), every)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	rows, err := conn.Query(t.Context(), `
		SELECT c.column_name, c.data_type, coalesce(c.collation_name, ''),
		       coalesce(col_description('every'::regclass, c.ordinal_position::int), '')
		FROM information_schema.columns AS c
		WHERE c.table_name = 'every' ORDER BY c.ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var name, typ, coll, comment string
	if _, err := pgx.ForEachRow(rows, []any{&name, &typ, &coll, &comment}, func() error {
		got = append(got, strings.Join([]string{name, typ, coll, comment}, " | "))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"id | text | C | ",
		"created_at | timestamp with time zone |  | ",
		"updated_at | timestamp with time zone |  | ",
		"etag | text | C | ",
		"s | text | C | text",
		"k | text | C | select",
		"day | date |  | date",
		"doc | jsonb |  | json",
		"n | bigint |  | integer",
		"ok | boolean |  | boolean",
		"at | timestamp with time zone |  | timestamp",
		"x | double precision |  | number",
	}
	if !slices.Equal(got, want) {
		t.Errorf("columns:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestChangeBetweenTypesOfOneStorage checks that a change of type drops the
// values also when both types have one column type (text and select), and
// that re-applying it keeps the values written since.
func TestChangeBetweenTypesOfOneStorage(t *testing.T) {
	t.Parallel()
	d := openURL(t, pgtest.NewDatabase(t, "envplane_driver_"))
	v1 := &schema.Object{Name: "tickets", Fields: []schema.Field{{Name: "state", Type: schema.TypeText}}}
	create(t, d, v1)
	if err := d.Insert(t.Context(), v1, record("t1", map[string]any{"state": "open"})); err != nil {
		t.Fatal(err)
	}
	v2 := &schema.Object{Name: "tickets", Fields: []schema.Field{{Name: "state", Type: schema.TypeSelect, Options: []string{"open"}}}}
	steps := schema.Plan(v1, v2)
	if err := d.Migrate(t.Context(), drivertest.Next(t, d, v2, steps)); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Get(t.Context(), v2, "t1"); err != nil || got["state"] != nil {
		t.Fatalf("Get after the change = %v, %v; want state NULL", got, err)
	}
	if err := d.Insert(t.Context(), v2, record("t2", map[string]any{"state": "open"})); err != nil {
		t.Fatal(err)
	}
	if err := d.Migrate(t.Context(), drivertest.Next(t, d, v2, steps)); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Get(t.Context(), v2, "t2"); err != nil || got["state"] != "open" {
		t.Fatalf("Get after re-applying = %v, %v; want state open", got, err)
	}
}

// TestTypeChangeByAnotherProcess checks that a driver whose connections
// prepared statements for a field's old type works with the new type once
// another driver (another server process) has changed it.
func TestTypeChangeByAnotherProcess(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t, "envplane_driver_")
	a, b := openURL(t, url), openURL(t, url)
	v1 := &schema.Object{Name: "parts", Fields: []schema.Field{{Name: "size", Type: schema.TypeInteger}}}
	create(t, a, v1)
	if err := a.Insert(t.Context(), v1, record("p1", map[string]any{"size": int64(12)})); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(t.Context(), v1, "p1"); err != nil {
		t.Fatal(err)
	}
	v2 := &schema.Object{Name: "parts", Fields: []schema.Field{{Name: "size", Type: schema.TypeText}}}
	if err := b.Migrate(t.Context(), drivertest.Next(t, b, v2, schema.Plan(v1, v2))); err != nil {
		t.Fatal(err)
	}
	// The pool holds one connection or a few; try enough times to meet
	// every one that prepared the old statements.
	for i := range 8 {
		id := string(rune('a' + i))
		if err := a.Insert(t.Context(), v2, record(id, map[string]any{"size": "M8"})); err != nil {
			t.Fatalf("Insert %d: %v", i, err)
		}
		if got, err := a.Get(t.Context(), v2, id); err != nil || got["size"] != "M8" {
			t.Fatalf("Get %d = %v, %v; want size M8", i, got, err)
		}
	}
}

// TestConcurrentMigrate checks that server processes applying the same
// plan at once all succeed: the advisory lock makes them take turns, and
// each finds the work done.
func TestConcurrentMigrate(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t, "envplane_driver_")
	obj := &schema.Object{Name: "people", Fields: []schema.Field{
		{Name: "email", Type: schema.TypeText, Unique: true},
		{Name: "age", Type: schema.TypeInteger},
	}}
	drivers := make([]*driverpg.Driver, 4)
	for i := range drivers {
		drivers[i] = openURL(t, url)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(drivers))
	create := drivertest.Next(t, drivers[0], obj, schema.Plan(nil, obj))
	for i, d := range drivers {
		wg.Go(func() { errs[i] = d.Migrate(t.Context(), create) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
}

// TestPrefixOnDate checks that a date matches a prefix of its YYYY-MM-DD
// text.
func TestPrefixOnDate(t *testing.T) {
	t.Parallel()
	d := openURL(t, pgtest.NewDatabase(t, "envplane_driver_"))
	create(t, d, every)
	for i, day := range []string{"2024-01-31", "2024-10-01", "2023-01-01"} {
		if err := d.Insert(t.Context(), every, record(string(rune('a'+i)), map[string]any{"day": day})); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string]int64{"2024-": 2, "2024-1": 1, "2024-01-31": 1, "": 3, "24": 0} {
		n, err := d.Count(t.Context(), every, filter.Prefix{Field: "day", Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("prefix %q matched %d dates; want %d", prefix, n, want)
		}
	}
}

// TestErrorsHideValues checks that a server error that quotes the value
// it refused reaches the caller as its SQLSTATE only.
func TestErrorsHideValues(t *testing.T) {
	t.Parallel()
	d := openURL(t, pgtest.NewDatabase(t, "envplane_driver_"))
	create(t, d, every)
	err := d.Insert(t.Context(), every, record("r1", map[string]any{"s": "secret\x00value"}))
	var pe *driverpg.Error
	if !errors.As(err, &pe) || pe.Code != "22021" {
		t.Fatalf("Insert of a NUL byte = %v; want a driverpg.Error with SQLSTATE 22021", err)
	}
	if msg := err.Error(); strings.Contains(msg, "0x00") || strings.Contains(msg, "secret") {
		t.Errorf("error message %q shows the value", msg)
	}
}

// TestUnavailable checks that a server that cannot be reached and a closed
// driver are ErrUnavailable, and that a bad URL is not echoed.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		// Port 1 on loopback refuses connections.
		_, err := driverpg.OpenURL(t.Context(), "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5")
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("OpenURL of a closed port = %v; want ErrUnavailable", err)
		}
	})
	t.Run("bad URL", func(t *testing.T) {
		t.Parallel()
		_, err := driverpg.OpenURL(t.Context(), "postgres://user:hunter2@127.0.0.1:5432/db?pool_max_conns=many")
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("OpenURL of a bad URL = %v; want an error without the password", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		d := openURL(t, pgtest.NewDatabase(t, "envplane_driver_"))
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Ping(t.Context()); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Ping after Close = %v; want ErrUnavailable", err)
		}
	})
}
