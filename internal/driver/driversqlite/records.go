package driversqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Insert writes rec through the writer connection.
func (d *Driver) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := d.check(); err != nil {
		return err
	}
	// Not insert: Insert answers no record, and reading back the one
	// written (RETURNING) was a tenth of a create's CPU. The statement is
	// rendered before the writer is taken: other writes wait only for the
	// database.
	stmt, args, err := driversql.Insert(sq, obj, rec, false)
	if err != nil {
		return fmt.Errorf("driversqlite: insert into %s: %w", obj.Name, err)
	}
	_, err = d.writes.do(ctx, func(ctx context.Context, q querier) (driver.Record, error) {
		if _, err := q.ExecContext(ctx, stmt, args...); err != nil {
			return nil, mapError(obj, err)
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("driversqlite: insert into %s: %w", obj.Name, err)
	}
	return nil
}

// insert writes rec and reads it back as stored.
func insert(ctx context.Context, q querier, obj *schema.Object, rec driver.Record) (driver.Record, error) {
	stmt, args, err := driversql.Insert(sq, obj, rec, true)
	if err != nil {
		return nil, err
	}
	out, err := recordFrom(obj, q.QueryRowContext(ctx, stmt, args...))
	if err != nil {
		return nil, mapError(obj, err)
	}
	return out, nil
}

// Get reads one record through a reader connection.
func (d *Driver) Get(ctx context.Context, obj *schema.Object, id string) (driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("driversqlite: get %s: %w", obj.Name, err)
	}
	// A read by primary key is over in microseconds: there is nothing to
	// interrupt. Given a context that can end, database/sql and the SQLite
	// driver would each start a goroutine per query to watch it, which cost
	// more than the read (BenchmarkGet: 26 -> 19 us).
	row := d.reader.QueryRowContext(context.WithoutCancel(ctx),
		`SELECT `+driversql.Columns(sq, obj)+` FROM `+quote(obj.Name)+` WHERE "id" = ?`, id)
	rec, err := recordFrom(obj, row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("driversqlite: get %s: %w", obj.Name, driver.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("driversqlite: get %s: %w", obj.Name, mapError(obj, err))
	}
	return rec, nil
}

// Query reads the records matching q in its order (then id), starting after
// q.After. See driversql.After for the keyset predicate.
func (d *Driver) Query(ctx context.Context, obj *schema.Object, q driver.Query) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	args := driversql.NewArgs(sq)
	where, err := driversql.Where(sq, obj, q.Filter, args)
	if err != nil {
		return nil, fmt.Errorf("driversqlite: query %s: %w", obj.Name, err)
	}
	order := driversql.Order(q.Order)
	if q.After != nil {
		after, err := driversql.After(sq, obj, order, q.After, args)
		if err != nil {
			return nil, fmt.Errorf("driversqlite: query %s: %w", obj.Name, err)
		}
		where = "(" + where + ") AND " + after
	}
	orderBy, err := driversql.OrderBy(sq, obj, order)
	if err != nil {
		return nil, fmt.Errorf("driversqlite: query %s: %w", obj.Name, err)
	}
	stmt := `SELECT ` + driversql.Columns(sq, obj) + ` FROM ` + quote(obj.Name) +
		` WHERE ` + where + ` ORDER BY ` + orderBy
	if q.Limit > 0 {
		stmt += ` LIMIT ` + args.Add(int64(q.Limit))
	}
	qctx := ctx
	if q.Filter == nil && len(q.Order) == 0 && q.Limit > 0 {
		// A page in id order without a filter walks the primary key for
		// Limit rows at most: bounded like a read by id (see Get), it runs
		// without the goroutines that would watch ctx. Any other query may
		// scan or sort the table, and stays interruptible.
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("driversqlite: query %s: %w", obj.Name, err)
		}
		qctx = context.WithoutCancel(ctx)
	}
	rows, err := d.reader.QueryContext(qctx, stmt, args.Values()...)
	if err != nil {
		return nil, fmt.Errorf("driversqlite: query %s: %w", obj.Name, mapError(obj, err))
	}
	defer rows.Close()
	out, err := recordsFrom(obj, rows, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("driversqlite: query %s: %w", obj.Name, mapError(obj, err))
	}
	return out, nil
}

// Count counts the records matching f.
func (d *Driver) Count(ctx context.Context, obj *schema.Object, f filter.Expr) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	args := driversql.NewArgs(sq)
	where, err := driversql.Where(sq, obj, f, args)
	if err != nil {
		return 0, fmt.Errorf("driversqlite: count %s: %w", obj.Name, err)
	}
	var n int64
	if err := d.reader.QueryRowContext(ctx,
		`SELECT count(*) FROM `+quote(obj.Name)+` WHERE `+where, args.Values()...).Scan(&n); err != nil {
		return 0, fmt.Errorf("driversqlite: count %s: %w", obj.Name, mapError(obj, err))
	}
	return n, nil
}

// Update sets the fields of set on record id (if its etag is ifETag) and
// returns the record as written.
func (d *Driver) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	rec, err := d.writes.do(ctx, func(ctx context.Context, q querier) (driver.Record, error) {
		return update(ctx, q, obj, id, set, ifETag)
	})
	if err != nil {
		return nil, fmt.Errorf("driversqlite: update %s: %w", obj.Name, err)
	}
	return rec, nil
}

func update(ctx context.Context, q querier, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	args := driversql.NewArgs(sq)
	sets, err := driversql.SetValues(sq, obj, set, args)
	if err != nil {
		return nil, err
	}
	if len(sets) == 0 {
		return nil, errors.New("nothing to set")
	}
	stmt := `UPDATE ` + quote(obj.Name) + ` SET ` + driversql.SetList(sets) + ` WHERE "id" = ` + args.Add(id)
	if ifETag != "" {
		stmt += ` AND "etag" = ` + args.Add(ifETag)
	}
	stmt += ` RETURNING ` + driversql.Columns(sq, obj)
	rec, err := recordFrom(obj, q.QueryRowContext(ctx, stmt, args.Values()...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, missing(ctx, q, obj, id)
	}
	if err != nil {
		return nil, mapError(obj, err)
	}
	return rec, nil
}

// Delete removes record id if its etag is ifETag.
func (d *Driver) Delete(ctx context.Context, obj *schema.Object, id string, ifETag string) error {
	if err := d.check(); err != nil {
		return err
	}
	_, err := d.writes.do(ctx, func(ctx context.Context, q querier) (driver.Record, error) {
		return nil, remove(ctx, q, obj, id, ifETag)
	})
	if err != nil {
		return fmt.Errorf("driversqlite: delete from %s: %w", obj.Name, err)
	}
	return nil
}

func remove(ctx context.Context, q querier, obj *schema.Object, id string, ifETag string) error {
	stmt := `DELETE FROM ` + quote(obj.Name) + ` WHERE "id" = ?`
	args := []any{id}
	if ifETag != "" {
		stmt += ` AND "etag" = ?`
		args = append(args, ifETag)
	}
	res, err := q.ExecContext(ctx, stmt, args...)
	if err != nil {
		return mapError(obj, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return mapError(obj, err)
	}
	if n == 0 {
		return missing(ctx, q, obj, id)
	}
	return nil
}

// missing explains why a conditional write touched no row: the record is
// gone (ErrNotFound) or has another etag (ErrEtagMismatch).
func missing(ctx context.Context, q querier, obj *schema.Object, id string) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM `+quote(obj.Name)+` WHERE "id" = ?`, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return driver.ErrNotFound
	case err != nil:
		return mapError(obj, err)
	default:
		return driver.ErrEtagMismatch
	}
}

// Batch applies ops in one transaction on the writer connection; the first
// failure rolls every op back.
func (d *Driver) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	tx, err := d.writer.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("driversqlite: batch: %w", mapError(nil, err))
	}
	defer func() { _ = tx.Rollback() }()
	out := make([]driver.Record, len(ops))
	for i, op := range ops {
		rec, err := apply(ctx, tx, op)
		if err != nil {
			return nil, &driver.BatchError{Index: i, Err: err}
		}
		out[i] = rec
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("driversqlite: batch: %w", mapError(nil, err))
	}
	return out, nil
}

func apply(ctx context.Context, tx *sql.Tx, op driver.Op) (driver.Record, error) {
	if op.Object == nil {
		return nil, errors.New("driversqlite: batch write without an object")
	}
	switch op.Kind {
	case driver.OpInsert:
		return insert(ctx, tx, op.Object, op.Record)
	case driver.OpUpdate:
		return update(ctx, tx, op.Object, op.ID, op.Record, op.IfETag)
	case driver.OpDelete:
		return nil, remove(ctx, tx, op.Object, op.ID, op.IfETag)
	default:
		return nil, fmt.Errorf("driversqlite: unknown batch write kind %d", op.Kind)
	}
}
