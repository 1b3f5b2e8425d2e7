// Package driver defines the object-level interface every engine (memory,
// SQLite, PostgreSQL, libSQL) implements for one environment's database, and
// its errors. Nothing here knows about HTTP or the control plane; the
// conformance suite in drivertest runs the same cases on every engine.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Record is one record: field name → value of the field's Go type (see
// schema.Field.Default), including the system fields id (string),
// created_at and updated_at (time.Time, UTC) and etag (string). A field that
// is NULL is absent or nil.
type Record map[string]any

// Errors drivers return, wrapped; compare with errors.Is / errors.As.
var (
	ErrNotFound      = errors.New("driver: record not found")
	ErrAlreadyExists = errors.New("driver: a record with this id exists")
	ErrEtagMismatch  = errors.New("driver: etag does not match")
	// ErrUnavailable means the database cannot be reached now.
	ErrUnavailable = errors.New("driver: database unavailable")
	// ErrStorageFull means the database's storage has no room for the
	// write (a full disk, a quota of the server): retrying cannot help
	// until room is made. Nothing of the write was kept.
	ErrStorageFull = errors.New("driver: the database's storage is full")
	// ErrStorageLimit means the write would take the database past the
	// environment's storage limit; nothing of it was kept.
	ErrStorageLimit = errors.New("driver: the environment's storage limit is reached")
	// ErrGone means the database does not exist (any more): the
	// environment is being deleted, or its database was removed.
	ErrGone = errors.New("driver: the database does not exist")
	// ErrLedgerConflict means the schema ledger holds another version of
	// the object than the change expects: another change came first.
	ErrLedgerConflict = errors.New("driver: the schema ledger holds another version of the object")
	// ErrUnknownTable means a table of the object's name exists that the
	// schema ledger does not know (left by an earlier envplane or made by
	// hand): a new object never takes it over unasked.
	ErrUnknownTable = errors.New("driver: a table of this name exists that the schema ledger does not know")
	// ErrNoTable means the object has no table.
	ErrNoTable = errors.New("driver: the object has no table")
	// ErrNoLedger means the database has no schema ledger yet (it was made
	// before envplane kept one, or holds no object).
	ErrNoLedger = errors.New("driver: the database has no schema ledger")
	// ErrSchemaDrift means the object's table does not match its
	// definition; see DriftError.
	ErrSchemaDrift = errors.New("driver: the table does not match the object's definition")
)

// DriftError says how a table differs from its definition. It wraps
// ErrSchemaDrift (and ErrNoTable for a missing table).
type DriftError struct {
	Object string
	Reason string // in words, naming fields, never SQL
	err    error
}

// Drift returns a *DriftError about object.
func Drift(object, reason string) *DriftError {
	return &DriftError{Object: object, Reason: reason, err: ErrSchemaDrift}
}

// MissingTable returns the *DriftError of an object without a table.
func MissingTable(object string) *DriftError {
	return &DriftError{Object: object, Reason: "the object has no table", err: ErrNoTable}
}

func (e *DriftError) Error() string { return "driver: " + e.Object + ": " + e.Reason }

// Is reports ErrSchemaDrift for every DriftError, and ErrNoTable for a
// missing table.
func (e *DriftError) Is(target error) bool { return target == ErrSchemaDrift || target == e.err }

// LedgerTable is the table of every environment database in which the
// database records the definition each of its tables was last migrated to.
// Object names start with a letter, so none can be this one.
const LedgerTable = "_envplane_schema"

// LedgerEntry is one row of the schema ledger: the version of an object's
// definition its table holds, written in the transaction that migrated the
// table, so that the database itself says what it holds whatever happened
// to the control plane after the migration.
//
// DropObject leaves a tombstone: an entry of Version 0 (and no
// definition), so that the database says it dropped the object even when
// the control plane still holds its definition.
type LedgerEntry struct {
	Object  string
	Version int64 // 0: dropped
	// Definition and Steps are the change's Definition and Applied, as given.
	Definition []byte
	Steps      []byte
	ApplyTime  time.Time
}

// Repair says how a change treats a ledger or a table that does not agree
// with it.
type Repair int

// Repairs.
const (
	// RepairNone applies the change only from the ledger's version From,
	// and never onto a table the ledger does not know.
	RepairNone Repair = iota
	// RepairReapply applies the change whatever the ledger holds, onto the
	// table as it is (creating what is missing), and records it.
	RepairReapply
	// RepairAdopt takes the table as it is for the change's definition,
	// only when it has every field's column of the right type (a
	// *DriftError otherwise); missing indexes are created. Unlike
	// RepairReapply it keeps the ledger rule of From, and a table the
	// ledger does not know is what it is for.
	RepairAdopt
)

// Change is one migration of an object's table.
type Change struct {
	// Object is the definition as it will be; Object.Version is the
	// version the ledger records.
	Object *schema.Object
	// Steps are the steps to apply (from schema.Plan).
	Steps []schema.Step
	// From is the version the ledger must hold for the object, 0 for an
	// object it must not hold (and then no table of the name may exist:
	// ErrUnknownTable). A ledger that holds Object.Version with the same
	// Definition already is accepted too, so re-applying a change
	// converges. Otherwise ErrLedgerConflict, and nothing changes.
	From   int64
	Repair Repair
	// Definition and Applied (the encoded steps) are stored in the ledger.
	Definition []byte
	Applied    []byte
	ApplyTime  time.Time
}

// Prepare is what every engine decides before applying c's steps, from
// the ledger's entry for the object (nil: none) and whether its table
// exists: ErrLedgerConflict or ErrUnknownTable refuse the change, and
// ensureTable asks the engine to bring the table to c.Object first (a
// repair). check compares the table with c.Object; RepairAdopt needs it
// to pass.
func (c Change) Prepare(have *LedgerEntry, tableExists bool, check func() error) (ensureTable bool, err error) {
	if !c.LedgerAccepts(have) {
		return false, ErrLedgerConflict
	}
	switch c.Repair {
	case RepairNone:
		if (have == nil || have.Version == 0) && tableExists {
			return false, ErrUnknownTable
		}
		return false, nil
	case RepairAdopt:
		if err := check(); err != nil {
			return false, err
		}
	}
	return true, nil
}

// LedgerAccepts reports whether a ledger entry (nil: none) lets c apply,
// for engines that read the entry in the change's transaction.
func (c Change) LedgerAccepts(have *LedgerEntry) bool {
	if c.Repair == RepairReapply {
		return true
	}
	if have == nil || have.Version == 0 {
		return c.From == 0
	}
	return have.Version == c.From ||
		(have.Version == c.Object.Version && string(have.Definition) == string(c.Definition))
}

// KnownDrift marks d as a drift that reconciling found when the database
// opened: the refusal of every call on the object until a repair, which
// reopening the database would not change (see FoundDuringCall).
func KnownDrift(d *DriftError) error { return knownDrift{d} }

type knownDrift struct{ *DriftError }

func (k knownDrift) Unwrap() error { return k.DriftError }

// FoundDuringCall reports whether err is a drift (or a missing table) that
// the engine found during a call rather than one reconciling found when
// the database opened (KnownDrift): the database changed since (a replica
// that migrated it stopped before storing the definition, say), and
// reopening it reconciles again.
func FoundDuringCall(err error) bool {
	var known knownDrift
	return errors.Is(err, ErrSchemaDrift) && !errors.As(err, &known)
}

// UniqueViolationError reports a write that would duplicate a unique field
// or index.
type UniqueViolationError struct {
	Object string
	Fields []string
}

func (e *UniqueViolationError) Error() string {
	return fmt.Sprintf("driver: %s: unique violation on %v", e.Object, e.Fields)
}

// BatchError reports the first failed write of a batch; nothing of the batch
// was written.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string { return fmt.Sprintf("driver: batch write %d: %v", e.Index, e.Err) }
func (e *BatchError) Unwrap() error { return e.Err }

// OrderBy is one key of a query's order. The engine always appends id as
// the final tiebreaker so that keyset paging is total.
type OrderBy struct {
	Field string
	Desc  bool
}

// Query selects records of one object.
type Query struct {
	Filter filter.Expr
	Order  []OrderBy
	// After continues after the record with these values of the Order keys
	// followed by its id (len(Order)+1 values), for keyset paging; nil
	// starts at the beginning. NULLs sort before every value.
	After []any
	Limit int
}

// OpKind is the kind of a batch write.
type OpKind int

// Batch write kinds.
const (
	OpInsert OpKind = iota + 1
	OpUpdate
	OpDelete
)

// Op is one write of a batch.
type Op struct {
	Kind   OpKind
	Object *schema.Object
	ID     string // update, delete
	Record Record // insert: the whole record; update: the fields to set
	IfETag string // update, delete: required etag ("" = any)
}

// Driver is one environment's database. Implementations are safe for
// concurrent use. Object definitions come from validated metadata:
// identifiers are quoted, values are only ever bind parameters.
type Driver interface {
	// Migrate makes c.Object's table match it by applying c.Steps and
	// records c in the schema ledger, in one transaction (every engine's
	// DDL is transactional, the memory engine's by copy). Steps already in
	// effect are skipped, so re-applying after a failure converges.
	// ErrLedgerConflict, ErrUnknownTable, *DriftError (RepairAdopt).
	Migrate(ctx context.Context, c Change) error
	// DropObject drops the object's table (and its indexes) and leaves a
	// tombstone in the ledger, in one transaction; a table already gone is
	// success.
	DropObject(ctx context.Context, name string) error
	// Ledger reads the schema ledger, by object name; ErrNoLedger when the
	// database has none yet.
	Ledger(ctx context.Context) ([]LedgerEntry, error)
	// Check compares obj's table with obj: nil when it has every field's
	// column with the field's type, a *DriftError saying what differs
	// otherwise (MissingTable when there is no table). Extra columns are
	// not drift: reads name only the defined ones.
	Check(ctx context.Context, obj *schema.Object) error

	// Insert writes rec, which carries every system field.
	// ErrAlreadyExists for a taken id; *UniqueViolationError.
	Insert(ctx context.Context, obj *schema.Object, rec Record) error
	// Get reads one record; ErrNotFound.
	Get(ctx context.Context, obj *schema.Object, id string) (Record, error)
	// Query reads records matching q in its order, at most q.Limit.
	Query(ctx context.Context, obj *schema.Object, q Query) ([]Record, error)
	// Count counts the records matching f.
	Count(ctx context.Context, obj *schema.Object, f filter.Expr) (int64, error)
	// Update sets the fields in set (which carries updated_at and the new
	// etag) on record id, if its etag is ifETag (when not ""), and returns
	// the whole record. ErrNotFound, ErrEtagMismatch, *UniqueViolationError.
	Update(ctx context.Context, obj *schema.Object, id string, set Record, ifETag string) (Record, error)
	// Delete removes record id if its etag is ifETag (when not "").
	// ErrNotFound, ErrEtagMismatch.
	Delete(ctx context.Context, obj *schema.Object, id string, ifETag string) error
	// Batch applies ops in one transaction: all or none. It returns the
	// records written (nil for deletes), or a *BatchError.
	Batch(ctx context.Context, ops []Op) ([]Record, error)

	// Size is how many bytes the database holds, as its engine counts them
	// (SQLite and libSQL: the pages in use; PostgreSQL: the database's size
	// on disk; memory: an estimate, RecordSize summed). It costs a query:
	// call it now and then, not per write.
	Size(ctx context.Context) (int64, error)

	// Ping checks the database answers.
	Ping(ctx context.Context) error
	// Close releases the database; calls after Close fail.
	Close() error
}

// RecordSize estimates the bytes a record takes: its strings' lengths and
// eight bytes for any other value, plus the field names. It is what a
// storage limit counts between two measures of Size.
func RecordSize(rec Record) int64 {
	n := int64(16)
	for k, v := range rec {
		n += int64(len(k))
		switch v := v.(type) {
		case string:
			n += int64(len(v))
		case []byte:
			n += int64(len(v))
		case map[string]any, []any:
			// As the engines store it: encoding/json's text, escapes and all.
			b, _ := json.Marshal(v)
			n += int64(len(b))
		default:
			n += 8
		}
	}
	return n
}
