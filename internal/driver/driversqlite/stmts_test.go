package driversqlite

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/schema"
)

func TestStatementsArePreparedOnceAndBounded(t *testing.T) {
	d, _ := openTest(t)
	ctx := t.Context()
	obj := &schema.Object{Name: "contact", Fields: []schema.Field{{Name: "name", Type: schema.TypeText}}}
	if err := d.Migrate(ctx, drivertest.Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

	// Concurrent first uses of one text share one cached statement.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if err := d.Insert(ctx, obj, driver.Record{"id": fmt.Sprintf("r%02d", i), "name": "n"}); err != nil {
				t.Errorf("Insert: %v", err)
			}
		})
	}
	wg.Wait()
	// One insert text, and the savepoints of group commits (see group).
	inserts := 0
	for q := range d.writer.stmts {
		if strings.HasPrefix(q, "INSERT") {
			inserts++
		} else if !strings.HasPrefix(q, "SAVEPOINT") && !strings.HasPrefix(q, "RELEASE") && !strings.HasPrefix(q, "ROLLBACK TO") {
			t.Errorf("the writer caches %q", q)
		}
	}
	if inserts != 1 {
		t.Fatalf("writer caches %d insert texts after 16 inserts of one shape, want 1", inserts)
	}
	first := d.writer.stmts
	for q, s := range first {
		if again := d.writer.stmt(ctx, q); again != s {
			t.Fatalf("the cached statement of %q was prepared again", q)
		}
	}

	// Past the bound, new texts run unprepared and still answer.
	for i := range maxCachedStatements + 10 {
		var got int
		q := `SELECT count(*) + ` + strconv.Itoa(i) + ` FROM "contact"`
		if err := d.reader.QueryRowContext(ctx, q).Scan(&got); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if got != 16+i {
			t.Fatalf("query %d = %d, want %d", i, got, 16+i)
		}
	}
	if n := len(d.reader.stmts); n != maxCachedStatements {
		t.Fatalf("reader caches %d statements, want the bound %d", n, maxCachedStatements)
	}

	// A cached statement follows a schema change: SQLite re-prepares it.
	evolved := &schema.Object{Name: "contact", Fields: []schema.Field{
		{Name: "name", Type: schema.TypeText},
		{Name: "email", Type: schema.TypeText},
	}}
	if err := d.Migrate(ctx, drivertest.Next(t, d, evolved, schema.Plan(obj, evolved))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := d.Delete(ctx, evolved, "r00", ""); err != nil {
		t.Fatalf("Delete after a migration: %v", err)
	}
	if err := d.Delete(ctx, evolved, "r01", ""); err != nil {
		t.Fatalf("Delete after a migration: %v", err)
	}
	if _, err := d.Get(ctx, evolved, "r00"); err == nil {
		t.Fatal("r00 survived its delete")
	}
}
