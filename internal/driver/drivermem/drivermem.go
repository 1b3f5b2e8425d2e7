// Package drivermem is the in-process engine: an environment's tables live
// in this process's memory and are gone when it ends, which makes it the
// engine of development and of tests that need no database. It evaluates
// the same filter tree as the SQL engines, in Go, and passes the same
// conformance suite (drivertest), so a service cannot tell it from them.
//
// Records are deep-copied on the way in and out: a caller never shares
// memory with the store. Reads take a read lock; writes take the write lock
// and check everything before changing anything, and a batch or a migration
// works on copies of the tables it touches, swapped in only when every step
// succeeded.
package drivermem

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// errClosed is what every call on a closed handle returns.
var errClosed = fmt.Errorf("drivermem: driver is closed: %w", driver.ErrUnavailable)

// database is one environment's tables.
type database struct {
	mu     sync.RWMutex
	tables map[string]*table
	// ledger is the schema ledger; nil until the first change.
	ledger map[string]driver.LedgerEntry
}

// Driver is a handle on one in-memory database.
type Driver struct {
	db     *database
	closed atomic.Bool
}

var _ driver.Driver = (*Driver)(nil)

// New returns a handle on a new, empty database.
func New() *Driver {
	return &Driver{db: &database{tables: make(map[string]*table)}}
}

// Handle returns another handle on d's database. Closing a handle ends only
// that handle, never the data: a registry that closes the drivers it
// evicts can be given handles while the process keeps the database for the
// environment's next open.
func (d *Driver) Handle() *Driver {
	return &Driver{db: d.db}
}

// begin checks the handle and the context before a call.
func (d *Driver) begin(ctx context.Context) error {
	if d.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drivermem: %w", err)
	}
	return nil
}

// lookup returns obj's table, or a *driver.DriftError when there is none
// or it lacks a field's column: the service may hold a definition whose
// table was never made, was dropped, or is not what it says, and a read
// must fail then as it does on the SQL engines, not read the field as
// empty.
func lookup(tables map[string]*table, obj *schema.Object) (*table, error) {
	t := tables[obj.Name]
	if err := t.drift(obj); err != nil {
		return nil, fmt.Errorf("drivermem: %w", err)
	}
	return t, nil
}

// Migrate applies c's steps to a copy of the object's table and keeps it,
// with the ledger entry, only if all succeed, so a failed migration leaves
// the table as it was.
func (d *Driver) Migrate(ctx context.Context, c driver.Change) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	obj := c.Object
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	var have *driver.LedgerEntry
	if e, ok := d.db.ledger[obj.Name]; ok {
		have = &e
	}
	var t *table
	if cur, ok := d.db.tables[obj.Name]; ok {
		t = cur.clone()
	}
	ensure, err := c.Prepare(have, t != nil, func() error { return t.drift(obj) })
	if err != nil {
		return fmt.Errorf("drivermem: migrate %s: %w", obj.Name, err)
	}
	steps := c.Steps
	if ensure {
		// create_table on a table that exists adds what it misses, as the
		// SQL engines do.
		steps = append(schema.Plan(nil, obj), steps...)
		if t != nil {
			for _, f := range obj.Fields {
				if _, ok := t.columns[f.Name]; !ok {
					steps = append(steps, schema.Step{Kind: schema.StepAddField, Target: f.Name, Field: &f})
				}
			}
		}
	}
	for _, step := range steps {
		if step.Kind == schema.StepCreateTable {
			if t == nil {
				t = newTable(obj)
			}
			continue
		}
		if t == nil {
			return fmt.Errorf("drivermem: %s on object %q, which has no table", step.Kind, obj.Name)
		}
		if err := t.apply(step); err != nil {
			return fmt.Errorf("drivermem: migrate %s: %s: %w", obj.Name, step.Description, err)
		}
	}
	if t != nil {
		d.db.tables[obj.Name] = t
	}
	if d.db.ledger == nil {
		d.db.ledger = make(map[string]driver.LedgerEntry)
	}
	d.db.ledger[obj.Name] = driver.LedgerEntry{
		Object: obj.Name, Version: obj.Version, Definition: slices.Clone(c.Definition),
		Steps: slices.Clone(c.Applied), ApplyTime: c.ApplyTime.UTC(),
	}
	return nil
}

// DropObject drops the named table and leaves its tombstone in the
// ledger; a missing table is success.
func (d *Driver) DropObject(ctx context.Context, name string) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	delete(d.db.tables, name)
	if d.db.ledger == nil {
		d.db.ledger = make(map[string]driver.LedgerEntry)
	}
	d.db.ledger[name] = driver.LedgerEntry{Object: name, ApplyTime: time.Now().UTC()}
	return nil
}

// Ledger returns a copy of the schema ledger.
func (d *Driver) Ledger(ctx context.Context) ([]driver.LedgerEntry, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	if d.db.ledger == nil {
		return nil, driver.ErrNoLedger
	}
	out := make([]driver.LedgerEntry, 0, len(d.db.ledger))
	for _, name := range slices.Sorted(maps.Keys(d.db.ledger)) {
		e := d.db.ledger[name]
		e.Definition, e.Steps = slices.Clone(e.Definition), slices.Clone(e.Steps)
		out = append(out, e)
	}
	return out, nil
}

// Size estimates the bytes the records take (driver.RecordSize summed).
func (d *Driver) Size(ctx context.Context) (int64, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	var n int64
	for _, t := range d.db.tables {
		for _, r := range t.rows {
			n += driver.RecordSize(r)
		}
	}
	return n, nil
}

// Check compares obj's table with obj.
func (d *Driver) Check(ctx context.Context, obj *schema.Object) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	return d.db.tables[obj.Name].drift(obj)
}

// Insert stores a copy of rec.
func (d *Driver) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	t, err := lookup(d.db.tables, obj)
	if err != nil {
		return err
	}
	_, err = t.insert(rec)
	return err
}

// Get returns a copy of record id.
func (d *Driver) Get(ctx context.Context, obj *schema.Object, id string) (driver.Record, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	t, err := lookup(d.db.tables, obj)
	if err != nil {
		return nil, err
	}
	r, ok := t.rows[id]
	if !ok {
		return nil, fmt.Errorf("drivermem: get %s %q: %w", obj.Name, id, driver.ErrNotFound)
	}
	return copyOut(r), nil
}

// Query returns copies of the records matching q.
func (d *Driver) Query(ctx context.Context, obj *schema.Object, q driver.Query) ([]driver.Record, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	t, err := lookup(d.db.tables, obj)
	if err != nil {
		return nil, err
	}
	recs, err := t.query(q)
	if err != nil {
		return nil, err
	}
	out := make([]driver.Record, len(recs))
	for i, r := range recs {
		out[i] = copyOut(r)
	}
	return out, nil
}

// Count counts the records matching f.
func (d *Driver) Count(ctx context.Context, obj *schema.Object, f filter.Expr) (int64, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	t, err := lookup(d.db.tables, obj)
	if err != nil {
		return 0, err
	}
	return t.count(f)
}

// Update applies set to record id and returns a copy of the result.
func (d *Driver) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	t, err := lookup(d.db.tables, obj)
	if err != nil {
		return nil, err
	}
	r, err := t.update(id, set, ifETag)
	if err != nil {
		return nil, err
	}
	return copyOut(r), nil
}

// Delete removes record id.
func (d *Driver) Delete(ctx context.Context, obj *schema.Object, id string, ifETag string) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	t, err := lookup(d.db.tables, obj)
	if err != nil {
		return err
	}
	return t.delete(id, ifETag)
}

// Batch applies ops to copies of the tables they touch and swaps the
// copies in only when every op succeeded: all or nothing, and later ops see
// earlier ones.
func (d *Driver) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	touched := make(map[string]*table)
	out := make([]driver.Record, len(ops))
	for i, op := range ops {
		r, err := d.apply(touched, op)
		if err != nil {
			return nil, &driver.BatchError{Index: i, Err: err}
		}
		out[i] = copyOut(r)
	}
	for name, t := range touched {
		d.db.tables[name] = t
	}
	return out, nil
}

// apply applies one batch op to the copy of its table in touched.
func (d *Driver) apply(touched map[string]*table, op driver.Op) (driver.Record, error) {
	if op.Object == nil {
		return nil, fmt.Errorf("drivermem: batch op without an object")
	}
	t, ok := touched[op.Object.Name]
	if !ok {
		cur, err := lookup(d.db.tables, op.Object)
		if err != nil {
			return nil, err
		}
		t = cur.clone()
		touched[op.Object.Name] = t
	}
	switch op.Kind {
	case driver.OpInsert:
		return t.insert(op.Record)
	case driver.OpUpdate:
		return t.update(op.ID, op.Record, op.IfETag)
	case driver.OpDelete:
		return nil, t.delete(op.ID, op.IfETag)
	}
	return nil, fmt.Errorf("drivermem: unknown batch op kind %d", op.Kind)
}

// Ping answers while the handle is open.
func (d *Driver) Ping(ctx context.Context) error {
	return d.begin(ctx)
}

// Close ends this handle; later calls on it fail. The database itself is
// freed once no handle refers to it.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return errClosed
	}
	return nil
}
