package driversqlite

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/schema"
)

// BenchmarkBareInsert is the yardstick of the data plane's create target,
// "modernc SQLite alone": one prepared INSERT per row, each its own
// transaction, on one connection to a file opened with envplane's DSN (WAL,
// synchronous=NORMAL). Compare inserts/s with BenchmarkInsert.
func BenchmarkBareInsert(b *testing.B) {
	db, err := sql.Open("sqlite", DSN(filepath.Join(b.TempDir(), "bare.db")))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, n INTEGER, tag TEXT)`); err != nil {
		b.Fatal(err)
	}
	stmt, err := db.Prepare(`INSERT INTO items (id, name, n, tag) VALUES (?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	b.ResetTimer()
	for i := range b.N {
		s := strconv.Itoa(i)
		if _, err := stmt.Exec("id-"+s, "item-"+s, i, "green"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
}

// BenchmarkInsert is the driver's insert of the same rows (the record's
// system fields, a BEGIN IMMEDIATE transaction, the statement cache).
func BenchmarkInsert(b *testing.B) {
	d, obj := benchItems(b)
	ctx := b.Context()
	b.ResetTimer()
	for i := range b.N {
		if err := d.Insert(ctx, obj, benchItem(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
}

// BenchmarkQuery reads the first page (21 rows: a page of 20 and the one
// that says more follow) of 100 records in id order, as ListRecords does.
func BenchmarkQuery(b *testing.B) {
	d, obj := benchItems(b)
	ctx := b.Context()
	for i := range 100 {
		if err := d.Insert(ctx, obj, benchItem(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		recs, err := d.Query(ctx, obj, driver.Query{Limit: 21}) // no order_by: by id
		if err != nil || len(recs) != 21 {
			b.Fatal(len(recs), err)
		}
	}
}

// benchItems is a driver on a new file with the benchmarks' object, items:
// the three fields of the PocketBase comparison (text, integer, text).
func benchItems(b *testing.B) (*Driver, *schema.Object) {
	d, _ := openTest(b)
	obj := &schema.Object{Name: "items", Fields: []schema.Field{
		{Name: "name", Type: schema.TypeText}, {Name: "n", Type: schema.TypeInteger}, {Name: "tag", Type: schema.TypeText},
	}}
	if err := d.Migrate(b.Context(), drivertest.Next(b, d, obj, schema.Plan(nil, obj))); err != nil {
		b.Fatal(err)
	}
	return d, obj
}

// benchItem is the i-th record of items, with the id "id-<i>".
func benchItem(i int) driver.Record {
	s := strconv.Itoa(i)
	return driver.Record{"id": "id-" + s, "name": "item-" + s, "n": int64(i), "tag": "green"}
}

// BenchmarkGet reads one record by id of 100, as GetRecord does.
func BenchmarkGet(b *testing.B) {
	d, obj := benchItems(b)
	ctx := b.Context()
	for i := range 100 {
		if err := d.Insert(ctx, obj, benchItem(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Get(ctx, obj, "id-42"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSpread reads and writes round-robin over 1 to 1,000 databases,
// one call at a time: what spreading the same work over many environments
// costs the engine alone (each database's connections, page caches and
// statements go cold between two visits), without HTTP, the registry or
// group commit. Compare each size's ns/op with the one database's.
func BenchmarkSpread(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		dbs := make([]*Driver, n)
		var obj *schema.Object
		for k := range dbs {
			dbs[k], obj = benchItems(b)
			for i := range 20 {
				if err := dbs[k].Insert(b.Context(), obj, benchItem(i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run("get/"+strconv.Itoa(n), func(b *testing.B) {
			ctx := b.Context()
			i := 0
			for b.Loop() {
				if _, err := dbs[i%n].Get(ctx, obj, "id-"+strconv.Itoa(i%20)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run("insert/"+strconv.Itoa(n), func(b *testing.B) {
			ctx := b.Context()
			i := 20
			for b.Loop() {
				if err := dbs[i%n].Insert(ctx, obj, benchItem(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		for _, d := range dbs {
			_ = d.Close()
		}
	}
}
