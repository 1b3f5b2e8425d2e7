package drivertest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Raw runs one statement on the database of a driver the open function of
// Run made, beside the driver: how the ledger cases make the states a crash
// or a hand leaves (a table the ledger forgot, a column gone). Statements
// quote nothing and use only SQL that SQLite, libSQL and PostgreSQL share.
type Raw func(t *testing.T, d driver.Driver, stmt string)

// RunLedger runs the schema-ledger cases. raw is nil for an engine nothing
// can reach beside its driver (the memory engine): the cases that need it
// do not apply there.
func RunLedger(t *testing.T, open func(t *testing.T) driver.Driver, raw Raw) {
	cases := []struct {
		name string
		fn   func(t *testing.T, d driver.Driver, raw Raw)
		raw  bool
	}{
		{"LedgerRecordsChanges", testLedgerRecordsChanges, false},
		{"LedgerRefusesStaleChange", testLedgerRefusesStaleChange, false},
		{"CheckMissingTable", testCheckMissingTable, false},
		{"SizeCountsRecords", testSizeCountsRecords, false},
		{"MissingColumnIsAnError", testMissingColumnIsAnError, false},
		{"UnknownTableNotAdopted", testUnknownTableNotAdopted, true},
		{"DriftAndRepair", testDriftAndRepair, true},
	}
	for _, tc := range cases {
		if tc.raw && raw == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t), raw)
		})
	}
}

func ledgerEntry(t *testing.T, d driver.Driver, name string) (driver.LedgerEntry, bool) {
	t.Helper()
	entries, err := d.Ledger(t.Context())
	if err != nil && !errors.Is(err, driver.ErrNoLedger) {
		t.Fatalf("Ledger: %v", err)
	}
	for _, e := range entries {
		if e.Object == name {
			return e, true
		}
	}
	return driver.LedgerEntry{}, false
}

func testLedgerRecordsChanges(t *testing.T, d driver.Driver, _ Raw) {
	if _, err := d.Ledger(t.Context()); !errors.Is(err, driver.ErrNoLedger) {
		t.Errorf("Ledger of a new database = %v; want ErrNoLedger", err)
	}
	v1 := object(t, "notes", []schema.Field{text("title")})
	c1 := Next(t, d, v1, schema.Plan(nil, v1))
	if err := d.Migrate(t.Context(), c1); err != nil {
		t.Fatalf("Migrate v1: %v", err)
	}
	e, ok := ledgerEntry(t, d, "notes")
	if !ok || e.Version != 1 || string(e.Definition) != string(c1.Definition) || string(e.Steps) != string(c1.Applied) {
		t.Fatalf("ledger after v1 = %+v, %v; want version 1 with the change's definition and steps", e, ok)
	}
	if !e.ApplyTime.Truncate(time.Microsecond).Equal(c1.ApplyTime.Truncate(time.Microsecond)) {
		t.Errorf("ledger apply time = %v; want %v", e.ApplyTime, c1.ApplyTime)
	}
	v2 := evolve(t, v1, func(o *schema.Object) { o.Fields = append(o.Fields, text("body")) })
	if err := d.Migrate(t.Context(), Next(t, d, v2, schema.Plan(v1, v2))); err != nil {
		t.Fatalf("Migrate v2: %v", err)
	}
	if e, _ := ledgerEntry(t, d, "notes"); e.Version != 2 {
		t.Errorf("ledger version after v2 = %d; want 2", e.Version)
	}
	if err := d.Check(t.Context(), v2); err != nil {
		t.Errorf("Check after v2: %v", err)
	}
	if err := d.DropObject(t.Context(), "notes"); err != nil {
		t.Fatalf("DropObject: %v", err)
	}
	if e, ok := ledgerEntry(t, d, "notes"); !ok || e.Version != 0 || len(e.Definition) != 0 {
		t.Errorf("ledger after DropObject = %+v, %v; want a tombstone (version 0, no definition)", e, ok)
	}
	stale := Next(t, d, v2, nil)
	stale.From, stale.Object.Version = 2, 3
	if err := d.Migrate(t.Context(), stale); !errors.Is(err, driver.ErrLedgerConflict) {
		t.Errorf("a change of the dropped object = %v; want ErrLedgerConflict", err)
	}
	// A new object of the name starts again from nothing.
	if err := d.Migrate(t.Context(), Next(t, d, v1, schema.Plan(nil, v1))); err != nil {
		t.Errorf("Migrate after DropObject: %v", err)
	}
}

func testLedgerRefusesStaleChange(t *testing.T, d driver.Driver, _ Raw) {
	v1 := object(t, "notes", []schema.Field{text("title")})
	c1 := Next(t, d, v1, schema.Plan(nil, v1))
	if err := d.Migrate(t.Context(), c1); err != nil {
		t.Fatalf("Migrate v1: %v", err)
	}
	if err := d.Insert(t.Context(), v1, rec("n1", 1, map[string]any{"title": "kept"})); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	// The same change again converges: a retry after a lost answer.
	if err := d.Migrate(t.Context(), c1); err != nil {
		t.Errorf("re-applying the recorded change: %v", err)
	}
	// Another change made from the same version loses: it read before c1.
	other := evolve(t, v1, func(o *schema.Object) { o.Fields = append(o.Fields, text("stale")) })
	stale := Next(t, d, other, schema.Plan(v1, other))
	stale.From, stale.Object.Version = 0, 1
	if err := d.Migrate(t.Context(), stale); !errors.Is(err, driver.ErrLedgerConflict) {
		t.Errorf("Migrate from a stale version = %v; want ErrLedgerConflict", err)
	}
	ahead := Next(t, d, other, schema.Plan(v1, other))
	ahead.From, ahead.Object.Version = 5, 6
	if err := d.Migrate(t.Context(), ahead); !errors.Is(err, driver.ErrLedgerConflict) {
		t.Errorf("Migrate from a version the ledger never held = %v; want ErrLedgerConflict", err)
	}
	// Neither changed the table or the ledger.
	if err := d.Insert(t.Context(), other, rec("n2", 2, map[string]any{"stale": "x"})); err == nil {
		t.Error("the refused change added its field")
	}
	if e, _ := ledgerEntry(t, d, "notes"); e.Version != 1 {
		t.Errorf("ledger version = %d; want 1", e.Version)
	}
	if got, err := d.Get(t.Context(), v1, "n1"); err != nil || got["title"] != "kept" {
		t.Errorf("Get after refused changes = %v, %v", got, err)
	}
}

func testCheckMissingTable(t *testing.T, d driver.Driver, _ Raw) {
	obj := object(t, "never_made", []schema.Field{text("title")})
	err := d.Check(t.Context(), obj)
	if !errors.Is(err, driver.ErrNoTable) || !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("Check of a missing table = %v; want ErrNoTable and ErrSchemaDrift", err)
	}
}

// testMissingColumnIsAnError reads through a definition with a field the
// table lacks: every read fails as drift. SQLite would read a double-quoted
// name it cannot resolve as a string, so every record would have the
// field's name as its value and a filter comparing it with its name would
// match every record.
func testMissingColumnIsAnError(t *testing.T, d driver.Driver, _ Raw) {
	table := object(t, "notes", []schema.Field{text("title")})
	if err := d.Migrate(t.Context(), Next(t, d, table, schema.Plan(nil, table))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := d.Insert(t.Context(), table, rec("n1", 1, map[string]any{"title": "a"})); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	defined := evolve(t, table, func(o *schema.Object) { o.Fields = append(o.Fields, text("note")) })
	var drift *driver.DriftError
	if err := d.Check(t.Context(), defined); !errors.As(err, &drift) || drift.Object != "notes" {
		t.Errorf("Check = %v; want a *DriftError about notes", err)
	}
	if got, err := d.Get(t.Context(), defined, "n1"); !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("Get through a field without a column = %v, %v; want ErrSchemaDrift", got, err)
	}
	got, err := d.Query(t.Context(), defined, driver.Query{Filter: filter.Compare{Field: "note", Op: filter.Eq, Value: "note"}})
	if !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("Query note = \"note\" = %v, %v; want ErrSchemaDrift", got, err)
	}
	if n, err := d.Count(t.Context(), defined, filter.Compare{Field: "note", Op: filter.Eq, Value: "note"}); !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("Count note = \"note\" = %d, %v; want ErrSchemaDrift", n, err)
	}
}

func testUnknownTableNotAdopted(t *testing.T, d driver.Driver, raw Raw) {
	obj := object(t, "victim", []schema.Field{text("title")})
	if err := d.Migrate(t.Context(), Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := d.Insert(t.Context(), obj, rec("old", 1, map[string]any{"title": "old row"})); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	// What a crash of an earlier envplane between dropping a definition and
	// its table left: a table the ledger does not know.
	raw(t, d, "DELETE FROM "+driver.LedgerTable+" WHERE object = 'victim'")
	fresh := object(t, "victim", []schema.Field{text("title"), text("other")})
	err := d.Migrate(t.Context(), Next(t, d, fresh, schema.Plan(nil, fresh)))
	if !errors.Is(err, driver.ErrUnknownTable) {
		t.Fatalf("creating an object over an unknown table = %v; want ErrUnknownTable", err)
	}
	if _, ok := ledgerEntry(t, d, "victim"); ok {
		t.Error("the refused create recorded itself")
	}
	// Adopting asks for the columns to match.
	adopt := Next(t, d, fresh, nil)
	adopt.Repair = driver.RepairAdopt
	if err := d.Migrate(t.Context(), adopt); !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("adopting a table without the field's column = %v; want ErrSchemaDrift", err)
	}
	adopt = Next(t, d, obj, nil)
	adopt.Repair = driver.RepairAdopt
	if err := d.Migrate(t.Context(), adopt); err != nil {
		t.Fatalf("adopting a matching table: %v", err)
	}
	if e, ok := ledgerEntry(t, d, "victim"); !ok || e.Version != 1 {
		t.Errorf("ledger after adopting = %+v, %v; want version 1", e, ok)
	}
	if got, err := d.Get(t.Context(), obj, "old"); err != nil || got["title"] != "old row" {
		t.Errorf("Get after adopting = %v, %v; want the old row", got, err)
	}
}

func testDriftAndRepair(t *testing.T, d driver.Driver, raw Raw) {
	obj := object(t, "notes", []schema.Field{text("title"), text("note")})
	if err := d.Migrate(t.Context(), Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := d.Insert(t.Context(), obj, rec("n1", 1, map[string]any{"title": "a", "note": "x"})); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	raw(t, d, "ALTER TABLE notes DROP COLUMN note")
	if err := d.Check(t.Context(), obj); !errors.Is(err, driver.ErrSchemaDrift) {
		t.Fatalf("Check of a table without a field's column = %v; want ErrSchemaDrift", err)
	}
	if got, err := d.Query(t.Context(), obj, driver.Query{}); !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("Query = %v, %v; want ErrSchemaDrift (no invented values)", got, err)
	}
	repair := Next(t, d, obj, nil)
	repair.Repair = driver.RepairReapply
	if err := d.Migrate(t.Context(), repair); err != nil {
		t.Fatalf("re-applying the definition: %v", err)
	}
	if err := d.Check(t.Context(), obj); err != nil {
		t.Errorf("Check after re-applying: %v", err)
	}
	got, err := d.Get(t.Context(), obj, "n1")
	if err != nil || got["title"] != "a" || got["note"] != nil {
		t.Errorf("Get after re-applying = %v, %v; want the record, its lost field empty", got, err)
	}
	if e, _ := ledgerEntry(t, d, "notes"); e.Version != repair.Object.Version {
		t.Errorf("ledger version after repair = %d; want %d", e.Version, repair.Object.Version)
	}
	// A lost system column comes back too.
	raw(t, d, "ALTER TABLE notes DROP COLUMN etag")
	if err := d.Check(t.Context(), obj); !errors.Is(err, driver.ErrSchemaDrift) {
		t.Fatalf("Check without etag = %v; want ErrSchemaDrift", err)
	}
	repair = Next(t, d, obj, nil)
	repair.Repair = driver.RepairReapply
	if err := d.Migrate(t.Context(), repair); err != nil {
		t.Fatalf("re-applying without etag: %v", err)
	}
	if err := d.Check(t.Context(), obj); err != nil {
		t.Errorf("Check after re-applying without etag: %v", err)
	}
}

// testSizeCountsRecords checks Size grows with what is written: storage
// limits measure with it.
func testSizeCountsRecords(t *testing.T, d driver.Driver, _ Raw) {
	obj := object(t, "notes", []schema.Field{text("body")})
	if err := d.Migrate(t.Context(), Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	before, err := d.Size(t.Context())
	if err != nil {
		t.Fatalf("Size: %v", err)
	}
	// Bodies that do not compress (PostgreSQL compresses long values).
	rnd := rand.New(rand.NewPCG(1, 2))
	ops := make([]driver.Op, 250)
	for i := range ops {
		var b strings.Builder
		for b.Len() < 2000 {
			fmt.Fprintf(&b, "%016x", rnd.Uint64())
		}
		ops[i] = driver.Op{Kind: driver.OpInsert, Object: obj, Record: rec(fmt.Sprintf("n%03d", i), i, map[string]any{"body": b.String()})}
	}
	if _, err := d.Batch(t.Context(), ops); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	after, err := d.Size(t.Context())
	if err != nil {
		t.Fatalf("Size: %v", err)
	}
	if after-before < 250*2000 {
		t.Errorf("Size grew by %d bytes with 250 records of 2000; want at least %d", after-before, 250*2000)
	}
}
