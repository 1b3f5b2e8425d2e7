package metadata

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/objects"
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

// reconcileTimeout bounds one reconcile, which runs inside a database's open.
const reconcileTimeout = 30 * time.Second

// Reconcile reconciles the environment's definitions with d's ledger and
// returns d guarded by what drifted. recreate says d was just made empty
// (a memory database after a restart): every defined object's table is
// created again. A reconcile that fails (the control plane cannot be
// reached, say) fails the open: the database is not served unreconciled,
// and the next call opens and reconciles again.
func (r *Reconciler) Reconcile(ctx context.Context, environmentID string, d driver.Driver, recreate bool) (driver.Driver, error) {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	log := r.log.With("environment_id", environmentID)
	drift, err := r.reconcile(ctx, environmentID, d, recreate, log)
	if err != nil {
		log.Warn("reconciling the environment's definitions with its database failed; the next call tries again")
		log.Debug("reconcile failure cause", "error", err)
		return nil, fmt.Errorf("metadata: reconcile: %w", err)
	}
	if recreate && len(drift) == 0 {
		log.Warn("the memory environment came back empty after a restart; its objects' tables were made again")
	}
	g := &Guarded{Driver: d}
	if len(drift) > 0 {
		g.drift.Store(&drift)
	}
	return g, nil
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
		obj, err := objects.Decode(def)
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
			drift[def.Name] = drifted{version: obj.Version, update: obj.UpdateTime, reason: reason}
		}
	}
	// What the ledger holds beyond the definitions: a create whose
	// definition was not stored. (A tombstone needs nothing.)
	for name, e := range ledger {
		if e.Version == 0 {
			continue
		}
		if obj, err := fromLedger(e); err != nil || reservedObject(obj) {
			// Not a definition envplane could have applied (a ledger
			// written by hand, in a database brought by its user).
			log.Warn("the database's ledger holds an object envplane does not accept; left undefined", "object", name)
			continue
		}
		if err := r.adoptEntry(ctx, environmentID, d, e); err != nil {
			return nil, fmt.Errorf("object %s: %w", name, err)
		}
		log.Warn("the database holds an object whose definition was not stored (a crash in between); stored it now",
			"object", name, "version", e.Version)
	}
	return drift, nil
}

// reservedObject reports whether obj uses a reserved object or field name.
func reservedObject(obj *schema.Object) bool {
	if schema.ReservedObjectName(obj.Name) {
		return true
	}
	for _, f := range obj.Fields {
		if schema.ReservedFieldName(f.Name) {
			return true
		}
	}
	return false
}

// adoptEntry stores the definition of a ledger entry the control plane
// does not hold, as a new object (version 1), and records that version in
// the ledger when the entry had another.
func (r *Reconciler) adoptEntry(ctx context.Context, environmentID string, d driver.Driver, e driver.LedgerEntry) error {
	if err := r.rollForward(ctx, environmentID, nil, e); err != nil || e.Version == 1 {
		return err
	}
	stored, err := r.store.GetObjectDefinition(ctx, environmentID, e.Object)
	if err != nil {
		return err
	}
	obj, err := objects.Decode(stored)
	if err != nil {
		return err
	}
	c := ledgerChange(obj, driver.RepairNone)
	c.From = e.Version
	return d.Migrate(ctx, c)
}

// object reconciles one defined object with its ledger entry e (recorded
// false: none) and returns the drift that remains ("" for none).
func (r *Reconciler) object(ctx context.Context, environmentID string, d driver.Driver, obj *schema.Object, e driver.LedgerEntry, recorded, recreate, bootstrap bool, log *slog.Logger) (string, error) {
	switch {
	case recorded && e.Version == 0:
		// Only the definition read goes: one re-created since (after the
		// tombstone) is another object.
		err := r.store.DeleteObjectDefinitionIf(ctx, environmentID, obj.Name, obj.Version, obj.CreateTime)
		if errors.Is(err, controlplane.ErrVersionConflict) || errors.Is(err, controlplane.ErrNotFound) {
			return "", nil
		}
		if err != nil {
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
	case recorded:
		same, err := sameDefinition(e, obj)
		if err != nil {
			return "", err
		}
		if !same {
			return fmt.Sprintf("the database holds another definition of version %d than the control plane", obj.Version), nil
		}
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
	obj, err := fromLedger(e)
	if err != nil {
		return err
	}
	encoded, err := objects.Encode(obj)
	if err != nil {
		return err
	}
	def := controlplane.ObjectDefinition{
		EnvironmentID: environmentID, Name: e.Object, Definition: encoded, Version: e.Version,
		CreateTime: e.ApplyTime, UpdateTime: e.ApplyTime,
	}
	var expected int64
	if current != nil {
		expected = current.Version
		def.CreateTime = current.CreateTime
	}
	_, err = r.store.PutObjectDefinition(ctx, def, expected, controlplane.ObjectMigration{
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
// in deterministic binary protobuf, so that the same definition is the same
// bytes whichever build wrote it (protojson's output varies between
// builds on purpose).
func ledgerDefinition(obj *schema.Object) ([]byte, error) {
	bare := *obj
	bare.Version = 0
	bare.CreateTime, bare.UpdateTime = time.Time{}, time.Time{}
	return proto.MarshalOptions{Deterministic: true}.Marshal(objects.ToProto(&bare))
}

// fromLedger decodes a ledger entry's definition, at the entry's version.
func fromLedger(e driver.LedgerEntry) (*schema.Object, error) {
	var p metadatav1.ObjectDefinition
	if err := proto.Unmarshal(e.Definition, &p); err != nil {
		return nil, fmt.Errorf("the ledger's definition of %s: %w", e.Object, err)
	}
	obj, violations := objects.FromStored(e.Object, &p)
	if len(violations) > 0 {
		return nil, fmt.Errorf("the ledger's definition of %s is invalid: %v", e.Object, violations)
	}
	obj.Version = e.Version
	obj.CreateTime, obj.UpdateTime = e.ApplyTime, e.ApplyTime
	return obj, nil
}

// sameDefinition reports whether a ledger entry holds obj's definition.
func sameDefinition(e driver.LedgerEntry, obj *schema.Object) (bool, error) {
	def, err := ledgerDefinition(obj)
	if err != nil {
		return false, err
	}
	return bytes.Equal(def, e.Definition), nil
}

// drifted is an object whose table does not hold its definition, as found
// at the database's open: version and update are the definition's then, so
// any later definition (a repair, on this replica or another) lifts it.
type drifted struct {
	version int64
	update  time.Time
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
	if d, ok := (*m)[obj.Name]; ok && d.version == obj.Version && d.update.Equal(obj.UpdateTime) {
		return d.reason
	}
	return ""
}

// settle lifts the drift of name: a change or a drop went through.
func (g *Guarded) settle(name string) {
	if m := g.drift.Load(); m == nil {
		return
	} else if _, ok := (*m)[name]; !ok {
		return
	}
	g.edit(func(next map[string]drifted) { delete(next, name) })
}

// edit replaces the drift map with a copy changed by fn (the map is read
// without a lock, so it is never changed in place).
func (g *Guarded) edit(fn func(next map[string]drifted)) {
	for {
		m := g.drift.Load()
		next := make(map[string]drifted)
		if m != nil {
			maps.Copy(next, *m)
		}
		fn(next)
		if g.drift.CompareAndSwap(m, &next) {
			return
		}
	}
}

func (g *Guarded) refuse(obj *schema.Object) error {
	if reason := g.Drift(obj); reason != "" {
		return driver.KnownDrift(driver.Drift(obj.Name, reason))
	}
	return nil
}

// Migrate lifts the object's drift once a repair went through and left the
// table whole (the metadata service refuses other changes of a drifted
// object).
func (g *Guarded) Migrate(ctx context.Context, c driver.Change) error {
	if err := g.Driver.Migrate(ctx, c); err != nil {
		return err
	}
	if c.Repair == driver.RepairNone {
		return nil
	}
	// A repair lifts the drift only when the table is whole now (a lost id,
	// the primary key, cannot come back).
	if err := g.Driver.Check(ctx, c.Object); err != nil {
		var drift *driver.DriftError
		if errors.As(err, &drift) {
			g.mark(c.Object, drift.Reason)
		}
		return nil
	}
	g.settle(c.Object.Name)
	return nil
}

// mark records obj's drift (for its version), replacing any before.
func (g *Guarded) mark(obj *schema.Object, reason string) {
	g.edit(func(next map[string]drifted) {
		next[obj.Name] = drifted{version: obj.Version, update: obj.UpdateTime, reason: reason}
	})
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
