package metadata

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/schema"
)

// Reconciler brings an environment's two records of its objects together
// when its database opens: the control plane's definitions and the
// database's own schema ledger. A change migrates the database (recording
// itself in the ledger in the same transaction) before it stores the
// definition, and a delete drops the table (leaving a tombstone) before it
// removes the definition, so a crash between the two leaves the ledger one
// step ahead, and reconciling finishes that step:
//
//   - the ledger holds the next version: the definition is stored from it;
//   - the ledger holds a new object the control plane lacks (version 1):
//     its definition is stored;
//   - the ledger holds a tombstone for a defined object: the definition is
//     removed;
//   - the ledger lacks a defined object (a database from before the ledger)
//     and its table matches: the table is recorded as it is.
//
// What cannot be brought together (another version, a table that does not
// match its definition, a missing table) is drift: the object's data calls
// answer SCHEMA_DRIFT and GetObject shows why until PutObject repairs it.
type Reconciler struct {
	store  controlplane.ObjectStore
	events invalidate.Publisher
	log    *slog.Logger
}

// NewReconciler returns a Reconciler.
func NewReconciler(store controlplane.ObjectStore, events invalidate.Publisher, log *slog.Logger) *Reconciler {
	return &Reconciler{store: store, events: events, log: log.With("component", "reconcile")}
}

// Reconcile reconciles the environment's definitions with d's ledger and
// returns d guarded by what drifted. recreate says d was just made empty
// (a memory database after a restart): every defined object's table is
// created again. Reconciling that fails (the control plane cannot be
// reached, say) is logged and d returned unguarded: reads still check
// their columns, and the next open tries again.
func (r *Reconciler) Reconcile(ctx context.Context, environmentID string, d driver.Driver, recreate bool) driver.Driver {
	g := &Guarded{Driver: d}
	log := r.log.With("environment_id", environmentID)
	drift, err := r.reconcile(ctx, environmentID, d, recreate, log)
	if err != nil {
		log.Warn("reconciling the environment's definitions with its database failed; trying again at its next open")
		log.Debug("reconcile failure cause", "error", err)
		return g
	}
	if len(drift) > 0 {
		g.drift.Store(&drift)
	}
	return g
}

func (r *Reconciler) reconcile(ctx context.Context, environmentID string, d driver.Driver, recreate bool, log *slog.Logger) (map[string]drifted, error) {
	defs, err := r.definitions(ctx, environmentID)
	if err != nil {
		return nil, err
	}
	entries, err := d.Ledger(ctx)
	bootstrap := errors.Is(err, driver.ErrNoLedger)
	if err != nil && !bootstrap {
		return nil, err
	}
	ledger := make(map[string]driver.LedgerEntry, len(entries))
	for _, e := range entries {
		ledger[e.Object] = e
	}
	drift := make(map[string]drifted)
	for _, def := range defs {
		obj, err := decode(def)
		if err != nil {
			return nil, err
		}
		e, recorded := ledger[def.Name]
		delete(ledger, def.Name)
		reason, err := r.object(ctx, environmentID, d, obj, e, recorded, recreate, bootstrap, log)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", def.Name, err)
		}
		if reason != "" {
			log.Warn("an object's table does not match its definition; its calls answer SCHEMA_DRIFT until PutObject repairs it",
				"object", def.Name, "version", def.Version, "drift", reason)
			drift[def.Name] = drifted{version: def.Version, reason: reason}
		}
	}
	// What the ledger holds beyond the definitions.
	for name, e := range ledger {
		switch e.Version {
		case 0: // dropped, and the definition is gone too: done
		case 1:
			if err := r.rollForward(ctx, environmentID, nil, e); err != nil {
				return nil, fmt.Errorf("object %s: %w", name, err)
			}
			log.Warn("the database created an object whose definition was not stored (a crash in between); stored it now", "object", name)
		default:
			log.Warn("the database holds an object the control plane does not define; DeleteObject with force drops it",
				"object", name, "version", e.Version)
		}
	}
	return drift, nil
}

// object reconciles one defined object with its ledger entry e (recorded
// false: none) and returns the drift that remains ("" for none).
func (r *Reconciler) object(ctx context.Context, environmentID string, d driver.Driver, obj *schema.Object, e driver.LedgerEntry, recorded, recreate, bootstrap bool, log *slog.Logger) (string, error) {
	switch {
	case recorded && e.Version == 0:
		if err := r.store.DeleteObjectDefinition(ctx, environmentID, obj.Name); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			return "", err
		}
		r.publish(ctx, environmentID, obj.Name)
		log.Warn("the database dropped an object whose definition was not removed (a crash in between); removed it now", "object", obj.Name)
		return "", nil
	case recorded && e.Version == obj.Version+1:
		if err := r.rollForward(ctx, environmentID, obj, e); err != nil {
			return "", err
		}
		log.Warn("the database applied a change whose definition was not stored (a crash in between); stored it now",
			"object", obj.Name, "version", e.Version)
		return "", nil
	case recorded && e.Version != obj.Version:
		return fmt.Sprintf("the database holds version %d of the object, the control plane version %d", e.Version, obj.Version), nil
	}
	err := d.Check(ctx, obj)
	var drift *driver.DriftError
	switch {
	case err == nil && recorded:
		return "", nil
	case err == nil:
		// A table from before the ledger, as its definition says: record it.
		if err := d.Migrate(ctx, ledgerChange(obj, driver.RepairAdopt)); err != nil {
			return "", err
		}
		if !bootstrap {
			log.Warn("the database did not record an object whose table matches its definition; recorded it", "object", obj.Name)
		}
		return "", nil
	case recreate && errors.Is(err, driver.ErrNoTable):
		c := ledgerChange(obj, driver.RepairReapply)
		c.Steps = schema.Plan(nil, obj)
		if err := d.Migrate(ctx, c); err != nil {
			return "", err
		}
		return "", nil
	case errors.As(err, &drift):
		if !recorded && bootstrap {
			// Record what the control plane says the table should be, so
			// that a later open reads the missing table as drift, never as
			// a delete to finish.
			if errors.Is(err, driver.ErrNoTable) {
				if err := d.Migrate(ctx, ledgerChange(obj, driver.RepairNone)); err != nil {
					return "", err
				}
			}
		}
		return drift.Reason, nil
	}
	return "", err
}

// ledgerChange is the change that records obj as it is, without steps.
func ledgerChange(obj *schema.Object, repair driver.Repair) driver.Change {
	def, _ := ledgerDefinition(obj)
	return driver.Change{Object: obj, From: 0, Repair: repair, Definition: def, ApplyTime: obj.UpdateTime}
}

// rollForward stores the definition the ledger entry e holds, after
// current (nil: a new object).
func (r *Reconciler) rollForward(ctx context.Context, environmentID string, current *schema.Object, e driver.LedgerEntry) error {
	def := controlplane.ObjectDefinition{
		EnvironmentID: environmentID, Name: e.Object, Definition: e.Definition, Version: e.Version,
		CreateTime: e.ApplyTime, UpdateTime: e.ApplyTime,
	}
	if _, err := decode(def); err != nil {
		return fmt.Errorf("the ledger's definition: %w", err)
	}
	var expected int64
	if current != nil {
		expected = current.Version
		def.CreateTime = current.CreateTime
	}
	_, err := r.store.PutObjectDefinition(ctx, def, expected, controlplane.ObjectMigration{
		EnvironmentID: environmentID, Name: e.Object, Version: e.Version, Steps: e.Steps, ApplyTime: e.ApplyTime,
	})
	if errors.Is(err, controlplane.ErrVersionConflict) {
		return nil // the change's own request stored it meanwhile
	}
	if err != nil {
		return err
	}
	r.publish(ctx, environmentID, e.Object)
	return nil
}

func (r *Reconciler) definitions(ctx context.Context, environmentID string) ([]controlplane.ObjectDefinition, error) {
	var all []controlplane.ObjectDefinition
	after := ""
	for {
		page, err := r.store.ListObjectDefinitions(ctx, environmentID, controlplane.Page{After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 1000 {
			return all, nil
		}
		after = page[len(page)-1].Name
	}
}

func (r *Reconciler) publish(ctx context.Context, environmentID, name string) {
	if err := r.events.Publish(ctx, invalidate.Event{Kind: invalidate.KindObject, EnvironmentID: environmentID, Object: name}); err != nil {
		r.log.Error("publishing a definition change failed; caches stay stale until their TTL", "error", err)
	}
}

// ledgerDefinition is the definition a ledger entry holds: the object as
// the API shows it, without its version and times (the entry has those),
// so that the same definition applied twice is the same bytes.
func ledgerDefinition(obj *schema.Object) ([]byte, error) {
	bare := *obj
	bare.Version = 0
	bare.CreateTime, bare.UpdateTime = time.Time{}, time.Time{}
	return protojson.Marshal(objectToProto(&bare))
}

// drifted is an object whose table does not hold its definition, as found
// at the database's open: version is the definition's version then, so a
// later version (a repair, on this replica or another) lifts it.
type drifted struct {
	version int64
	reason  string
}

// Guarded is an environment's driver that refuses the data calls of the
// objects that drifted, with a *driver.DriftError, instead of reading or
// writing a table that is not what the definition says.
type Guarded struct {
	driver.Driver
	drift atomic.Pointer[map[string]drifted] // nil: none
}

// Drift returns why obj's table does not hold its definition, "" when it
// does (as far as reconciling found).
func (g *Guarded) Drift(obj *schema.Object) string {
	m := g.drift.Load()
	if m == nil {
		return ""
	}
	if d, ok := (*m)[obj.Name]; ok && d.version == obj.Version {
		return d.reason
	}
	return ""
}

// settle lifts the drift of name: a change or a drop went through.
func (g *Guarded) settle(name string) {
	for {
		m := g.drift.Load()
		if m == nil {
			return
		}
		if _, ok := (*m)[name]; !ok {
			return
		}
		next := make(map[string]drifted, len(*m))
		for k, v := range *m {
			if k != name {
				next[k] = v
			}
		}
		if g.drift.CompareAndSwap(m, &next) {
			return
		}
	}
}

func (g *Guarded) refuse(obj *schema.Object) error {
	if reason := g.Drift(obj); reason != "" {
		return driver.Drift(obj.Name, reason)
	}
	return nil
}

// Migrate lifts the object's drift once the change went through.
func (g *Guarded) Migrate(ctx context.Context, c driver.Change) error {
	if err := g.Driver.Migrate(ctx, c); err != nil {
		return err
	}
	g.settle(c.Object.Name)
	return nil
}

// DropObject lifts the object's drift once its table is gone.
func (g *Guarded) DropObject(ctx context.Context, name string) error {
	if err := g.Driver.DropObject(ctx, name); err != nil {
		return err
	}
	g.settle(name)
	return nil
}

func (g *Guarded) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := g.refuse(obj); err != nil {
		return err
	}
	return g.Driver.Insert(ctx, obj, rec)
}

func (g *Guarded) Get(ctx context.Context, obj *schema.Object, id string) (driver.Record, error) {
	if err := g.refuse(obj); err != nil {
		return nil, err
	}
	return g.Driver.Get(ctx, obj, id)
}

func (g *Guarded) Query(ctx context.Context, obj *schema.Object, q driver.Query) ([]driver.Record, error) {
	if err := g.refuse(obj); err != nil {
		return nil, err
	}
	return g.Driver.Query(ctx, obj, q)
}

func (g *Guarded) Count(ctx context.Context, obj *schema.Object, f filter.Expr) (int64, error) {
	if err := g.refuse(obj); err != nil {
		return 0, err
	}
	return g.Driver.Count(ctx, obj, f)
}

func (g *Guarded) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := g.refuse(obj); err != nil {
		return nil, err
	}
	return g.Driver.Update(ctx, obj, id, set, ifETag)
}

func (g *Guarded) Delete(ctx context.Context, obj *schema.Object, id string, ifETag string) error {
	if err := g.refuse(obj); err != nil {
		return err
	}
	return g.Driver.Delete(ctx, obj, id, ifETag)
}

func (g *Guarded) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	if g.drift.Load() != nil {
		for i, op := range ops {
			if err := g.refuse(op.Object); err != nil {
				return nil, &driver.BatchError{Index: i, Err: err}
			}
		}
	}
	return g.Driver.Batch(ctx, ops)
}

// Unwrap returns the guarded driver.
func (g *Guarded) Unwrap() driver.Driver { return g.Driver }
