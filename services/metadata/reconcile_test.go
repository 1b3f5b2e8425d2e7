package metadata

import (
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/controlplane/cptest"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivermem"
	"github.com/envplane/envplane/internal/driver/driversqlite"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/schema"
)

// reconcileFixture is a control plane with one environment, a SQLite
// database for it, and a reconciler.
type reconcileFixture struct {
	t     *testing.T
	store *controlplane.SQLite
	envID string
	path  string
	db    driver.Driver
	rec   *Reconciler
}

func newReconcileFixture(t *testing.T) *reconcileFixture {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	store, env := cptest.WithEnvironment(t, "sqlite")
	path := filepath.Join(dir, "env.db")
	d, err := driversqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &reconcileFixture{t: t, store: store, envID: env.ID, path: path, db: d, rec: NewReconciler(store, invalidate.NewBus(), log)}
}

func notes(version int64, fields ...string) *schema.Object {
	obj := &schema.Object{Name: "notes", Version: version, CreateTime: time.Unix(1000, 0).UTC(), UpdateTime: time.Unix(1000+version, 0).UTC()}
	for _, f := range fields {
		obj.Fields = append(obj.Fields, schema.Field{Name: f, Type: schema.TypeText})
	}
	return obj
}

// migrate applies to's change from from (nil: a create) to the database,
// as PutObject does before it stores the definition.
func (f *reconcileFixture) migrate(from, to *schema.Object) {
	f.t.Helper()
	def, err := ledgerDefinition(to)
	if err != nil {
		f.t.Fatal(err)
	}
	var fromVersion int64
	if from != nil {
		fromVersion = from.Version
	}
	c := driver.Change{Object: to, Steps: schema.Plan(from, to), From: fromVersion, Definition: def, ApplyTime: to.UpdateTime}
	if err := f.db.Migrate(f.t.Context(), c); err != nil {
		f.t.Fatalf("Migrate to version %d: %v", to.Version, err)
	}
}

// store stores obj's definition in the control plane, after expected.
func (f *reconcileFixture) define(obj *schema.Object, expected int64) {
	f.t.Helper()
	encoded, err := objects.Encode(obj)
	if err != nil {
		f.t.Fatal(err)
	}
	_, err = f.store.PutObjectDefinition(f.t.Context(), controlplane.ObjectDefinition{
		EnvironmentID: f.envID, Name: obj.Name, Definition: encoded, Version: obj.Version,
		CreateTime: obj.CreateTime, UpdateTime: obj.UpdateTime,
	}, expected, controlplane.ObjectMigration{})
	if err != nil {
		f.t.Fatalf("PutObjectDefinition: %v", err)
	}
}

func (f *reconcileFixture) reconcile(recreate bool) *Guarded {
	f.t.Helper()
	d, err := f.rec.Reconcile(f.t.Context(), f.envID, f.db, recreate)
	if err != nil {
		f.t.Fatalf("Reconcile: %v", err)
	}
	return d.(*Guarded)
}

// stored returns the control plane's definition of notes (nil: none).
func (f *reconcileFixture) stored() *schema.Object {
	f.t.Helper()
	def, err := f.store.GetObjectDefinition(f.t.Context(), f.envID, "notes")
	if errors.Is(err, controlplane.ErrNotFound) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	obj, err := objects.Decode(def)
	if err != nil {
		f.t.Fatal(err)
	}
	return obj
}

func (f *reconcileFixture) raw(stmt string) {
	f.t.Helper()
	db, err := sql.Open("sqlite", "file:"+f.path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		f.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(f.t.Context(), stmt); err != nil {
		f.t.Fatalf("%s: %v", stmt, err)
	}
}

func fieldNames(obj *schema.Object) []string {
	var out []string
	for _, f := range obj.Fields {
		out = append(out, f.Name)
	}
	return out
}

func TestReconcileStoresAChangeTheDatabaseMade(t *testing.T) {
	f := newReconcileFixture(t)
	v1, v2 := notes(1, "a"), notes(2, "a", "b")
	f.migrate(nil, v1)
	f.define(v1, 0)
	f.migrate(v1, v2) // then a crash, before the definition was stored
	g := f.reconcile(false)
	if got := f.stored(); got == nil || got.Version != 2 || !slices.Equal(fieldNames(got), []string{"a", "b"}) {
		t.Fatalf("after reconciling the control plane holds %+v; want version 2 with a and b", got)
	}
	if reason := g.Drift(f.stored()); reason != "" {
		t.Errorf("drift %q after the roll forward", reason)
	}
}

func TestReconcileStoresACreateTheDatabaseMade(t *testing.T) {
	f := newReconcileFixture(t)
	f.migrate(nil, notes(1, "a"))
	f.reconcile(false)
	if got := f.stored(); got == nil || got.Version != 1 || !slices.Equal(fieldNames(got), []string{"a"}) {
		t.Fatalf("after reconciling the control plane holds %+v; want version 1 with a", got)
	}
}

func TestReconcileStoresAnUndefinedObjectAtVersionOne(t *testing.T) {
	f := newReconcileFixture(t)
	v1, v2, v3 := notes(1, "a"), notes(2, "a", "b"), notes(3, "b")
	f.migrate(nil, v1)
	f.migrate(v1, v2)
	f.migrate(v2, v3)
	f.reconcile(false)
	got := f.stored()
	if got == nil || got.Version != 1 || !slices.Equal(fieldNames(got), []string{"b"}) {
		t.Fatalf("after reconciling the control plane holds %+v; want version 1 with b", got)
	}
	entries, err := f.db.Ledger(t.Context())
	if err != nil || len(entries) != 1 || entries[0].Version != 1 {
		t.Errorf("ledger = %+v, %v; want notes at version 1, as stored", entries, err)
	}
	// And the next change goes through from there.
	f.migrate(got, notes(2, "b", "c"))
}

func TestReconcileFinishesADelete(t *testing.T) {
	f := newReconcileFixture(t)
	v1 := notes(1, "a")
	f.migrate(nil, v1)
	f.define(v1, 0)
	if err := f.db.DropObject(t.Context(), "notes"); err != nil { // then a crash
		t.Fatal(err)
	}
	f.reconcile(false)
	if got := f.stored(); got != nil {
		t.Fatalf("after reconciling the control plane still defines %+v", got)
	}
}

func TestReconcileRecordsAPreLedgerTable(t *testing.T) {
	f := newReconcileFixture(t)
	v1 := notes(1, "a")
	f.migrate(nil, v1)
	f.define(v1, 0)
	f.raw("DROP TABLE " + driver.LedgerTable) // a database from before the ledger
	g := f.reconcile(false)
	if reason := g.Drift(v1); reason != "" {
		t.Errorf("drift %q for a table that matches", reason)
	}
	entries, err := f.db.Ledger(t.Context())
	if err != nil || len(entries) != 1 || entries[0].Version != 1 {
		t.Errorf("ledger = %+v, %v; want notes at version 1", entries, err)
	}
}

// TestReconcileKeepsADefinitionWhoseTableIsMissing: a missing table found
// on a database without a ledger is drift, and stays drift at the next
// open; it is never read as a delete to finish.
func TestReconcileKeepsADefinitionWhoseTableIsMissing(t *testing.T) {
	f := newReconcileFixture(t)
	v1 := notes(1, "a")
	f.define(v1, 0)
	for i := range 2 {
		g := f.reconcile(false)
		got := f.stored()
		if got == nil {
			t.Fatalf("open %d removed the definition", i+1)
		}
		if g.Drift(got) == "" {
			t.Errorf("open %d: no drift for a missing table", i+1)
		}
	}
}

func TestReconcileReportsAnotherDefinitionOfTheSameVersion(t *testing.T) {
	f := newReconcileFixture(t)
	f.migrate(nil, notes(1, "a", "b"))
	f.define(notes(1, "a"), 0)
	g := f.reconcile(false)
	obj := f.stored()
	if g.Drift(obj) == "" {
		t.Fatal("no drift for a ledger holding another definition of the version")
	}
	err := g.Insert(t.Context(), obj, driver.Record{"id": "n1", "etag": "e", "a": "x"})
	if !errors.Is(err, driver.ErrSchemaDrift) {
		t.Errorf("Insert on the drifted object = %v; want ErrSchemaDrift", err)
	}
	// A repair lifts it; a later version is another definition.
	def, _ := ledgerDefinition(obj)
	repaired := *obj
	repaired.Version, repaired.UpdateTime = 2, obj.UpdateTime.Add(time.Second)
	if err := g.Migrate(t.Context(), driver.Change{Object: &repaired, Steps: schema.Plan(nil, &repaired), Repair: driver.RepairReapply, Definition: def}); err != nil {
		t.Fatal(err)
	}
	if err := g.Insert(t.Context(), &repaired, driver.Record{"id": "n1", "etag": "e", "a": "x"}); err != nil {
		t.Errorf("Insert after the repair: %v", err)
	}
}

func TestReconcileRecreatesAMemoryDatabase(t *testing.T) {
	f := newReconcileFixture(t)
	v1 := notes(1, "a")
	f.define(v1, 0)
	mem := drivermem.New()
	d, err := f.rec.Reconcile(t.Context(), f.envID, mem, true)
	if err != nil {
		t.Fatal(err)
	}
	if reason := d.(*Guarded).Drift(v1); reason != "" {
		t.Errorf("drift %q after recreating", reason)
	}
	if err := d.Insert(t.Context(), v1, driver.Record{"id": "n1", "etag": "e", "a": "x"}); err != nil {
		t.Errorf("Insert into the recreated table: %v", err)
	}
}
