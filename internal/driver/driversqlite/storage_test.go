package driversqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

func openTest(t testing.TB) (*Driver, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "env.db")
	d, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d, path
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

func create(t *testing.T, d *Driver, obj *schema.Object) {
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

// TestStorage pins the storage of each field type: the declared type that
// records the field type, and the storage class and value SQLite holds.
func TestStorage(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	create(t, d, every)
	at := time.Date(1969, 7, 20, 20, 17, 40, 123456789, time.FixedZone("x", 3600))
	if err := d.Insert(t.Context(), every, record("r1", map[string]any{
		"s": "text", "k": "a", "day": "2024-02-29", "doc": map[string]any{"b": 1.0, "a": []any{"x"}},
		"n": int64(-7), "ok": true, "at": at, "x": 2.5,
	})); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	want := map[string]struct {
		declared, class string
		value           any
	}{
		"id":         {"TEXT", "text", "r1"},
		"created_at": {"TIMESTAMP_INTEGER", "integer", int64(1704164645000006)},
		"s":          {"TEXT", "text", "text"},
		"k":          {"SELECT_TEXT", "text", "a"},
		"day":        {"DATE_TEXT", "text", "2024-02-29"},
		"doc":        {"JSON_TEXT", "text", `{"a":["x"],"b":1}`},
		"n":          {"INTEGER", "integer", int64(-7)},
		"ok":         {"BOOLEAN_INTEGER", "integer", int64(1)},
		"at":         {"TIMESTAMP_INTEGER", "integer", at.UnixMicro()},
		"x":          {"REAL", "real", 2.5},
	}
	tx, err := d.writer.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	cols, err := tableColumns(t.Context(), tx, "every")
	if err != nil {
		t.Fatal(err)
	}
	for col, w := range want {
		if cols[col] != w.declared {
			t.Errorf("%s declared %q; want %q", col, cols[col], w.declared)
		}
		var class string
		var value any
		if err := tx.QueryRowContext(t.Context(), `SELECT typeof(`+quote(col)+`), `+quote(col)+` FROM "every"`).Scan(&class, &value); err != nil {
			t.Fatal(err)
		}
		if class != w.class || value != w.value {
			t.Errorf("%s holds %s %v; want %s %v", col, class, value, w.class, w.value)
		}
	}
}

// TestChangeBetweenTypesOfOneStorage checks that a change of type drops the
// values also when both types are stored alike (text and select are both
// TEXT), and that re-applying it keeps the values written since.
func TestChangeBetweenTypesOfOneStorage(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
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

// TestPrefixGlobCharacters checks that GLOB's own wildcards in a prefix
// match literally.
func TestPrefixGlobCharacters(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	obj := &schema.Object{Name: "names", Fields: []schema.Field{{Name: "s", Type: schema.TypeText}}}
	create(t, d, obj)
	values := []string{"a*b", "axb", "a?c", "abc", "[x]y", "xy", "a]b", "A*b"}
	for i, v := range values {
		if err := d.Insert(t.Context(), obj, record(string(rune('a'+i)), map[string]any{"s": v})); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string][]string{
		"a*":  {"a*b"},
		"a?":  {"a?c"},
		"[x]": {"[x]y"},
		"a]":  {"a]b"},
		"a":   {"a*b", "a?c", "a]b", "abc", "axb"},
		"":    {"A*b", "[x]y", "a*b", "a?c", "a]b", "abc", "axb", "xy"},
	} {
		recs, err := d.Query(t.Context(), obj, driver.Query{
			Filter: filter.Prefix{Field: "s", Prefix: prefix},
			Order:  []driver.OrderBy{{Field: "s"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r["s"].(string))
		}
		if !slices.Equal(got, want) {
			t.Errorf("prefix %q matched %q; want %q", prefix, got, want)
		}
	}
}

// TestPrefixOnDate checks that a date matches a prefix of its YYYY-MM-DD
// text.
func TestPrefixOnDate(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
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

func TestUniqueColumns(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string][]string{
		"constraint failed: UNIQUE constraint failed: people.email (2067)":     {"email"},
		"UNIQUE constraint failed: people.name, people.age":                    {"name", "age"},
		"constraint failed: UNIQUE constraint failed: index 'by_expr' (2067)":  nil,
		"constraint failed: NOT NULL constraint failed: people.name (1299)":    nil,
		"constraint failed: UNIQUE constraint failed: people.id (1555)":        {"id"},
		"constraint failed: UNIQUE constraint failed: a.b.c_d, a.b.e_f (2067)": {"c_d", "e_f"},
	} {
		if got := uniqueColumns(msg); !slices.Equal(got, want) {
			t.Errorf("uniqueColumns(%q) = %q; want %q", msg, got, want)
		}
	}
}

// TestReadersCannotWrite checks the reader pool is query-only, so a
// mistake that routes a write there fails instead of contending with the
// writer for the file lock.
func TestReadersCannotWrite(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	if _, err := d.reader.ExecContext(t.Context(), `CREATE TABLE nope (x)`); err == nil {
		t.Fatal("CREATE TABLE through a reader succeeded")
	}
}

// TestUnavailable checks that a file that cannot be opened, a lock held
// past the deadline and a closed driver are ErrUnavailable.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("cannot open", func(t *testing.T) {
		t.Parallel()
		_, err := Open(t.Context(), filepath.Join(t.TempDir(), "missing", "env.db"))
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Open in a missing directory = %v; want ErrUnavailable", err)
		}
	})
	t.Run("locked", func(t *testing.T) {
		t.Parallel()
		d, path := openTest(t)
		obj := &schema.Object{Name: "things"}
		create(t, d, obj)
		// Another process holds the write lock.
		other, err := sql.Open("sqlite", DSN(path))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		tx, err := other.BeginTx(t.Context(), nil) // BEGIN IMMEDIATE
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		err = d.Insert(ctx, obj, record("r1", nil))
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Insert while locked = %v; want ErrUnavailable", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		d, _ := openTest(t)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Ping(t.Context()); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Ping after Close = %v; want ErrUnavailable", err)
		}
	})
}
