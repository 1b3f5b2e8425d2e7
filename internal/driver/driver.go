// Package driver defines the object-level interface every engine (memory,
// SQLite, PostgreSQL, libSQL) implements for one environment's database, and
// its errors. Nothing here knows about HTTP or the control plane; the
// conformance suite in drivertest runs the same cases on every engine.
package driver

import (
	"context"
	"errors"
	"fmt"

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
)

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
	// Migrate makes obj's table match obj by applying steps (from
	// schema.Plan) in one transaction where the engine allows. Steps
	// already in effect are skipped, so re-applying after a failure
	// converges.
	Migrate(ctx context.Context, obj *schema.Object, steps []schema.Step) error
	// DropObject drops the object's table (and its indexes); a table
	// already gone is success.
	DropObject(ctx context.Context, name string) error

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

	// Ping checks the database answers.
	Ping(ctx context.Context) error
	// Close releases the database; calls after Close fail.
	Close() error
}
