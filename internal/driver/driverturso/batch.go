package driverturso

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/schema"
)

// Batch applies ops as one script (see script): all or none.
//
// Each write is one statement (INSERT or UPDATE … RETURNING, DELETE),
// preceded for updates and deletes by guard statements that fail when the
// record is missing or, with IfETag, has another etag. A write that matches
// no row is no error in SQL, so without the guards an etag mismatch would
// commit the writes around it. Later writes see earlier ones, since the
// script is one transaction.
//
// On success the records come from the RETURNING rows of the script's
// result sets, one round trip in all. On failure the server rolled
// everything back but libsql-client-go reports only the failed statement's
// message, not which statement it was, so Batch finds it by bisection:
// it probes prefixes of the script, each run as BEGIN IMMEDIATE; …;
// ROLLBACK (writing nothing), for the shortest one that fails, which takes
// 1 + ⌈log2 n⌉ more round trips for n statements. The failing statement
// names the write (BatchError.Index) and, through its kind, the error: a
// guard means ErrNotFound or ErrEtagMismatch, a write's own error is mapped
// as a single write's would be.
//
// The probes run after the failed attempt, so a concurrent writer can make
// them see another state than the attempt did: the reported write and
// error then describe the state a probe saw, which is a state the database
// really had, and nothing of the batch was written either way. When every
// probe passes (the cause of the failure is gone) the batch is attempted
// again, at most maxAttempts times in all.
func (d *Driver) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return nil, nil
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	b, err := planBatch(ops)
	if err != nil {
		return nil, err
	}
	var failure error
	for range maxAttempts {
		out, err := b.run(ctx, d.db)
		if err == nil {
			return out, nil
		}
		var committed *answerError
		if errors.As(err, &committed) {
			return nil, err
		}
		if errors.Is(err, context.Canceled) || transportError(err) {
			return nil, fmt.Errorf("driverturso: batch: %w", mapError(ctx, nil, err))
		}
		failure = err
		berr, err := b.locate(ctx, d.db)
		if err != nil {
			return nil, fmt.Errorf("driverturso: batch: %w", mapError(ctx, nil, err))
		}
		if berr != nil {
			return nil, berr
		}
	}
	return nil, fmt.Errorf("driverturso: batch failed %d times, each time for a cause gone by the time it was looked for: %w",
		maxAttempts, mapError(ctx, nil, failure))
}

// maxAttempts bounds the attempts of a Batch or Migrate that keeps racing
// other writers.
const maxAttempts = 3

// batch is the script of a Batch with what each statement is for.
type batch struct {
	ops   []driver.Op
	s     script
	steps []batchStep // one per statement of s
}

type batchStep struct {
	op   int
	kind stepKind
}

type stepKind int

const (
	stepWrite  stepKind = iota // the op's write
	stepExists                 // guard: the record exists
	stepETag                   // guard: the record has the op's IfETag
)

// planBatch renders the script of ops; a write that cannot be rendered is
// a *BatchError before anything is sent.
func planBatch(ops []driver.Op) (*batch, error) {
	b := &batch{ops: ops}
	for i, op := range ops {
		if err := b.add(i, op); err != nil {
			return nil, &driver.BatchError{Index: i, Err: err}
		}
	}
	return b, nil
}

func (b *batch) add(i int, op driver.Op) error {
	if op.Object == nil {
		return errors.New("driverturso: batch write without an object")
	}
	obj := op.Object
	switch op.Kind {
	case driver.OpInsert:
		stmt, args, err := driversql.Insert(sq, obj, op.Record, true)
		if err != nil {
			return err
		}
		b.addStmt(i, stepWrite, stmt, args...)
	case driver.OpUpdate:
		stmt, args, err := updateStmt(obj, op.ID, op.Record, op.IfETag)
		if err != nil {
			return err
		}
		b.guard(i, obj, op.ID, op.IfETag)
		b.addStmt(i, stepWrite, stmt, args...)
	case driver.OpDelete:
		stmt, args := deleteStmt(obj, op.ID, op.IfETag)
		b.guard(i, obj, op.ID, op.IfETag)
		b.addStmt(i, stepWrite, stmt, args...)
	default:
		return fmt.Errorf("driverturso: unknown batch write kind %d", op.Kind)
	}
	return nil
}

// guard adds the statements that fail unless record id exists and, when
// ifETag is set, has that etag (see overflow).
func (b *batch) guard(i int, obj *schema.Object, id, ifETag string) {
	table := quote(obj.Name)
	b.addStmt(i, stepExists,
		`SELECT abs(CASE WHEN EXISTS (SELECT 1 FROM `+table+` WHERE "id" = ?) THEN 0 ELSE ? END)`,
		id, overflow)
	if ifETag != "" {
		b.addStmt(i, stepETag,
			`SELECT abs(CASE WHEN EXISTS (SELECT 1 FROM `+table+` WHERE "id" = ? AND "etag" = ?) THEN 0 ELSE ? END)`,
			id, ifETag, overflow)
	}
}

func (b *batch) addStmt(op int, kind stepKind, stmt string, args ...any) {
	b.s.add(stmt, args...)
	b.steps = append(b.steps, batchStep{op: op, kind: kind})
}

// run sends the script once and reads each write's record from its
// RETURNING row. An error is the server's (nothing was written) unless it
// comes after the script committed, which the guards rule out.
func (b *batch) run(ctx context.Context, db *sql.DB) ([]driver.Record, error) {
	rows, err := b.s.query(ctx, db)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]driver.Record, len(b.ops))
	// The rows start at BEGIN's result set; each statement's follows.
	for i, st := range b.steps {
		if !rows.NextResultSet() {
			return nil, committedError(fmt.Errorf("no result set for statement %d: %w", i, rows.Err()))
		}
		op := b.ops[st.op]
		if st.kind != stepWrite || op.Kind == driver.OpDelete {
			continue
		}
		if !rows.Next() {
			return nil, committedError(fmt.Errorf("write %d returned no row: %w", st.op, rows.Err()))
		}
		rec, err := recordFrom(op.Object, rows)
		if err != nil {
			return nil, committedError(fmt.Errorf("write %d: %w", st.op, err))
		}
		out[st.op] = rec
	}
	if err := rows.Close(); err != nil {
		return nil, committedError(err)
	}
	return out, nil
}

// committedError marks a failure to read the answer of a script that
// committed; Batch must not take it for a statement's failure and retry.
func committedError(err error) error {
	return &answerError{err: err}
}

type answerError struct{ err error }

func (e *answerError) Error() string {
	return "driverturso: the batch committed but its answer could not be read: " + e.err.Error()
}
func (e *answerError) Unwrap() error { return e.err }

// locate finds the statement whose failure failed the script, as Batch
// describes: it returns the *BatchError for it, nil when every probe
// passes, or an error when a probe could not be run.
func (b *batch) locate(ctx context.Context, db *sql.DB) (*driver.BatchError, error) {
	probe := func(n int) error { return b.s.exec(ctx, db, n, rollback) }
	lost := func(err error) bool { return errors.Is(err, context.Canceled) || transportError(err) }
	// Invariant: the prefix of hi statements fails with failure; every
	// prefix shorter than lo passed.
	lo, hi := 1, b.s.len()
	failure := probe(hi)
	switch {
	case failure == nil:
		return nil, nil
	case lost(failure):
		return nil, failure
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		switch err := probe(mid); {
		case err == nil:
			lo = mid + 1
		case lost(err):
			return nil, err
		default:
			hi, failure = mid, err
		}
	}
	if hi == 1 {
		// The first statement, or the transaction around it?
		if err := probe(0); err != nil {
			return nil, err
		}
	}
	st := b.steps[hi-1]
	op := b.ops[st.op]
	var err error
	switch {
	case st.kind == stepExists && guardFailure(failure):
		err = driver.ErrNotFound
	case st.kind == stepETag && guardFailure(failure):
		err = driver.ErrEtagMismatch
	default:
		err = mapError(ctx, op.Object, failure)
	}
	return &driver.BatchError{Index: st.op, Err: err}, nil
}
