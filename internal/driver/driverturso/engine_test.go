package driverturso

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/schema"
)

// lines has a unique field, for batches that fail on it.
var lines = &schema.Object{Name: "lines", Fields: []schema.Field{
	{Name: "sku", Type: schema.TypeText, Unique: true},
	{Name: "qty", Type: schema.TypeInteger},
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

func count(t *testing.T, d *Driver, obj *schema.Object) int64 {
	t.Helper()
	n, err := d.Count(t.Context(), obj, nil)
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

// TestBatchFindsFailedWrite checks that bisection names the failed write of
// long batches, wherever it is, with the error of its kind, and that nothing
// of the batch is written.
func TestBatchFindsFailedWrite(t *testing.T) {
	t.Parallel()
	d := openServer(t, startServer(t))
	create(t, d, lines)
	if err := d.Insert(t.Context(), lines, record("stored", map[string]any{"sku": "taken"})); err != nil {
		t.Fatal(err)
	}
	const n = 40
	// ops returns n writes that succeed: inserts, each followed by an
	// update and, every third, a delete of the record just inserted.
	ops := func() []driver.Op {
		var out []driver.Op
		for i := 0; len(out) < n; i++ {
			id := fmt.Sprintf("r%02d", i)
			out = append(out,
				driver.Op{Kind: driver.OpInsert, Object: lines, Record: record(id, map[string]any{"sku": id})},
				driver.Op{Kind: driver.OpUpdate, Object: lines, ID: id, IfETag: "e-" + id,
					Record: driver.Record{"etag": "f-" + id, "qty": int64(i)}})
			if i%3 == 0 {
				out = append(out, driver.Op{Kind: driver.OpDelete, Object: lines, ID: id, IfETag: "f-" + id})
			}
		}
		return out[:n]
	}
	tests := []struct {
		name string
		at   int
		op   driver.Op
		want func(error) bool
	}{
		{"etag mismatch first", 0,
			driver.Op{Kind: driver.OpUpdate, Object: lines, ID: "stored", IfETag: "nope", Record: driver.Record{"qty": int64(1)}},
			func(err error) bool { return errors.Is(err, driver.ErrEtagMismatch) }},
		{"missing record in the middle", 23,
			driver.Op{Kind: driver.OpDelete, Object: lines, ID: "nope"},
			func(err error) bool { return errors.Is(err, driver.ErrNotFound) }},
		{"unique violation last", n - 1,
			driver.Op{Kind: driver.OpInsert, Object: lines, Record: record("new", map[string]any{"sku": "taken"})},
			func(err error) bool {
				var uv *driver.UniqueViolationError
				return errors.As(err, &uv) && slices.Equal(uv.Fields, []string{"sku"})
			}},
		{"taken id", 17,
			driver.Op{Kind: driver.OpInsert, Object: lines, Record: record("stored", nil)},
			func(err error) bool { return errors.Is(err, driver.ErrAlreadyExists) }},
	}
	for _, tc := range tests {
		batch := ops()
		batch[tc.at] = tc.op
		_, err := d.Batch(t.Context(), batch)
		var be *driver.BatchError
		if !errors.As(err, &be) {
			t.Fatalf("%s: Batch = %v; want a *BatchError", tc.name, err)
		}
		if be.Index != tc.at || !tc.want(be.Err) {
			t.Errorf("%s: BatchError{%d, %v}; want index %d", tc.name, be.Index, be.Err, tc.at)
		}
		if got := count(t, d, lines); got != 1 {
			t.Errorf("%s: %d records after the failed batch; want 1", tc.name, got)
		}
	}
	// And the same batch without the failure goes through.
	out, err := d.Batch(t.Context(), ops())
	if err != nil || len(out) != n {
		t.Fatalf("Batch = %d records, %v", len(out), err)
	}
	if out[1]["qty"] != int64(0) || out[1]["etag"] != "f-r00" || out[2] != nil {
		t.Errorf("Batch results start %v, %v, %v", out[0], out[1], out[2])
	}
}

// TestNothingLeftOpen checks that failed scripts (a batch, its probes, a
// migration) leave no transaction open on the server's connection: a write
// after them is durable, which it would not be inside a transaction that
// never commits.
func TestNothingLeftOpen(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	d := openServer(t, s)
	create(t, d, lines)
	if err := d.Insert(t.Context(), lines, record("a", map[string]any{"sku": "x"})); err != nil {
		t.Fatal(err)
	}
	_, err := d.Batch(t.Context(), []driver.Op{
		{Kind: driver.OpInsert, Object: lines, Record: record("b", map[string]any{"sku": "y"})},
		{Kind: driver.OpInsert, Object: lines, Record: record("c", map[string]any{"sku": "x"})},
	})
	if err == nil {
		t.Fatal("Batch with a unique violation succeeded")
	}
	withNote := &schema.Object{Name: "lines", Fields: []schema.Field{
		{Name: "sku", Type: schema.TypeText, Unique: true},
		{Name: "qty", Type: schema.TypeInteger, Unique: true},
		{Name: "note", Type: schema.TypeText},
	}}
	if err := d.Insert(t.Context(), lines, record("d", map[string]any{"sku": "z", "qty": int64(1)})); err != nil {
		t.Fatal(err)
	}
	if err := d.Insert(t.Context(), lines, record("e", map[string]any{"sku": "w", "qty": int64(1)})); err != nil {
		t.Fatal(err)
	}
	if err := d.Migrate(t.Context(), drivertest.Next(t, d, withNote, schema.Plan(lines, withNote))); err == nil {
		t.Fatal("Migrate adding a unique index over duplicates succeeded")
	}
	if err := d.Insert(t.Context(), lines, record("f", map[string]any{"sku": "v"})); err != nil {
		t.Fatal(err)
	}

	s.restart(t)
	d2 := openServer(t, s)
	recs, err := d2.Query(t.Context(), lines, driver.Query{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r["id"].(string))
	}
	if want := []string{"a", "d", "e", "f"}; !slices.Equal(ids, want) {
		t.Errorf("after a restart the table holds %v; want %v", ids, want)
	}
	if err := d2.Insert(t.Context(), withNote, record("g", map[string]any{"note": "x"})); err == nil {
		t.Error("the column of the failed migration exists")
	}
}

// TestMigrateGuard checks that a migration planned against a table that
// has changed since is refused, and that Migrate then plans again.
func TestMigrateGuard(t *testing.T) {
	t.Parallel()
	d := openServer(t, startServer(t))
	v1 := &schema.Object{Name: "parts", Fields: []schema.Field{{Name: "size", Type: schema.TypeInteger}}}
	create(t, d, v1)
	stale, err := d.readTable(t.Context(), "parts")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.db.ExecContext(t.Context(), `ALTER TABLE "parts" ADD COLUMN "other" TEXT`); err != nil {
		t.Fatal(err)
	}
	var s script
	s.add(`SELECT abs(CASE WHEN `+fingerprint+` IS ? THEN 0 ELSE ? END)`, "parts", stale.fingerprint, overflow)
	s.add(`ALTER TABLE "parts" ADD COLUMN "late" TEXT`)
	if err := s.exec(t.Context(), d.db, s.len(), commit); !guardFailure(err) {
		t.Fatalf("script planned on a stale picture: %v; want the guard's failure", err)
	}
	now, err := d.readTable(t.Context(), "parts")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := now.columns["late"]; ok {
		t.Error("the script went through")
	}
	if now.fingerprint == stale.fingerprint {
		t.Error("the fingerprint did not change with the table")
	}

	// A change of type retypes the column once, however often it is applied.
	v2 := &schema.Object{Name: "parts", Fields: []schema.Field{{Name: "size", Type: schema.TypeText}}}
	steps := schema.Plan(v1, v2)
	for range 2 {
		if err := d.Migrate(t.Context(), drivertest.Next(t, d, v2, steps)); err != nil {
			t.Fatal(err)
		}
		if err := d.Insert(t.Context(), v2, record(fmt.Sprint(count(t, d, v2)), map[string]any{"size": "M"})); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := d.Get(t.Context(), v2, "0"); err != nil || got["size"] != "M" {
		t.Errorf("Get = %v, %v; the second Migrate dropped the column again", got, err)
	}
}

// TestStorage pins the storage of each field type, the same as
// driversqlite's, so a database can move between the engines.
func TestStorage(t *testing.T) {
	t.Parallel()
	d := openServer(t, startServer(t))
	every := &schema.Object{Name: "every", Fields: []schema.Field{
		{Name: "s", Type: schema.TypeText},
		{Name: "k", Type: schema.TypeSelect, Options: []string{"a"}},
		{Name: "day", Type: schema.TypeDate},
		{Name: "doc", Type: schema.TypeJSON},
		{Name: "n", Type: schema.TypeInteger},
		{Name: "ok", Type: schema.TypeBoolean},
		{Name: "at", Type: schema.TypeTimestamp},
		{Name: "x", Type: schema.TypeNumber},
	}}
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
	tbl, err := d.readTable(t.Context(), "every")
	if err != nil {
		t.Fatal(err)
	}
	for col, w := range want {
		if tbl.columns[col] != w.declared {
			t.Errorf("%s declared %q; want %q", col, tbl.columns[col], w.declared)
		}
		var class string
		var value any
		if err := d.db.QueryRowContext(t.Context(), `SELECT typeof(`+quote(col)+`), `+quote(col)+` FROM "every"`).Scan(&class, &value); err != nil {
			t.Fatal(err)
		}
		if class != w.class || value != w.value {
			t.Errorf("%s holds %s %v; want %s %v", col, class, value, w.class, w.value)
		}
	}
}

// TestUnavailable checks that a server that is gone, never answers, or
// answers 503, and a closed driver, are ErrUnavailable, and that no call
// waits longer than the driver's timeout.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("server gone", func(t *testing.T) {
		t.Parallel()
		s := startServer(t)
		d := openServer(t, s)
		create(t, d, lines)
		s.stop()
		if err := d.Ping(t.Context()); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Ping = %v; want ErrUnavailable", err)
		}
		if _, err := d.Get(t.Context(), lines, "a"); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Get = %v; want ErrUnavailable", err)
		}
		_, err := d.Batch(t.Context(), []driver.Op{{Kind: driver.OpDelete, Object: lines, ID: "a"}})
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Batch = %v; want ErrUnavailable", err)
		}
		if err := d.Migrate(t.Context(), driver.Change{Object: lines, Steps: schema.Plan(nil, lines)}); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Migrate = %v; want ErrUnavailable", err)
		}
	})
	t.Run("no answer", func(t *testing.T) {
		t.Parallel()
		// A server that takes connections and never answers.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		t.Cleanup(func() {
			_ = l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				_ = c.Close()
			}
		})
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		_, err = Open(t.Context(), "http://"+l.Addr().String(), "", WithTimeout(200*time.Millisecond))
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Open = %v; want ErrUnavailable", err)
		}
	})
	t.Run("503", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		if _, err := Open(t.Context(), srv.URL, ""); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Open = %v; want ErrUnavailable", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		d := openServer(t, startServer(t))
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Ping(t.Context()); !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Ping after Close = %v; want ErrUnavailable", err)
		}
	})
}

// selectOne is a Hrana answer to SELECT 1.
const selectOne = `{"baton":null,"base_url":null,"results":[{"type":"ok","response":{"type":"execute","result":` +
	`{"cols":[{"name":"1","decltype":null}],"rows":[[{"type":"integer","value":"1"}]],"affected_row_count":0,"last_insert_rowid":null}}}]}`

// TestAuthToken checks the token reaches the server as a bearer token,
// given or in the URL, and that errors never quote it.
func TestAuthToken(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/pipeline" || r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(selectOne))
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, url, token string
		ok               bool
	}{
		{"given", srv.URL, token, true},
		{"in the URL", srv.URL + "?authToken=" + token, "", true},
		{"wrong", srv.URL, "wrong-" + token, false},
		{"none", srv.URL, "", false},
		{"both", srv.URL + "?authToken=" + token, token, false},
		{"other parameter", srv.URL + "?tls=0&authToken=" + token, "", false},
		{"websocket", strings.Replace(srv.URL, "http", "ws", 1), token, false},
		{"file", "file:///tmp/x.db?authToken=" + token, "", false},
	} {
		d, err := Open(t.Context(), tc.url, tc.token)
		if tc.ok != (err == nil) {
			t.Errorf("%s: Open = %v; want success %v", tc.name, err, tc.ok)
		}
		if d != nil {
			_ = d.Close()
		}
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("%s: the error quotes the token: %v", tc.name, err)
		}
		if err != nil && errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("%s: a refused token is ErrUnavailable: %v", tc.name, err)
		}
	}
}

func TestUniqueColumns(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string][]string{
		"failed to execute SQL:\nRuntime error: UNIQUE constraint failed: people.email (19)": {"email"},
		"Runtime error: UNIQUE constraint failed: contacts.(team, seat) (19)":                {"team", "seat"},
		"SQLite error: UNIQUE constraint failed: people.name, people.age":                    {"name", "age"},
		"SQLITE_CONSTRAINT_PRIMARYKEY: UNIQUE constraint failed: people.id":                  {"id"},
		"UNIQUE constraint failed: index 'by_expr'":                                          nil,
		"Runtime error: NOT NULL constraint failed: people.name (19)":                        nil,
	} {
		if got := uniqueColumns(msg); !slices.Equal(got, want) {
			t.Errorf("uniqueColumns(%q) = %q; want %q", msg, got, want)
		}
	}
}
