package driverpg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Insert writes rec.
func (d *Driver) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := d.check(); err != nil {
		return err
	}
	// Not insert: Insert answers no record, so none is read back.
	stmt, args, err := driversql.Insert(pg, obj, rec, false)
	if err == nil {
		_, err = d.pool.Exec(ctx, signature(obj)+stmt, args...)
	}
	if err != nil {
		return fmt.Errorf("driverpg: insert into %s: %w", obj.Name, mapError(obj, err))
	}
	return nil
}

// insert writes rec and reads it back as stored.
func insert(ctx context.Context, q querier, obj *schema.Object, rec driver.Record) (driver.Record, error) {
	stmt, args, err := driversql.Insert(pg, obj, rec, true)
	if err != nil {
		return nil, err
	}
	return recordFrom(obj, q.QueryRow(ctx, signature(obj)+stmt, args...))
}

// Get reads one record.
func (d *Driver) Get(ctx context.Context, obj *schema.Object, id string) (driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	rec, err := recordFrom(obj, d.pool.QueryRow(ctx,
		signature(obj)+`SELECT `+driversql.Columns(pg, obj)+` FROM `+quote(obj.Name)+` WHERE "id" = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("driverpg: get %s: %w", obj.Name, driver.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("driverpg: get %s: %w", obj.Name, mapError(obj, err))
	}
	return rec, nil
}

// Query reads the records matching q in its order (then id), starting after
// q.After. See driversql.After for the keyset predicate.
func (d *Driver) Query(ctx context.Context, obj *schema.Object, q driver.Query) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	args := driversql.NewArgs(pg)
	where, err := driversql.Where(pg, obj, q.Filter, args)
	if err != nil {
		return nil, fmt.Errorf("driverpg: query %s: %w", obj.Name, err)
	}
	order := driversql.Order(q.Order)
	if q.After != nil {
		after, err := driversql.After(pg, obj, order, q.After, args)
		if err != nil {
			return nil, fmt.Errorf("driverpg: query %s: %w", obj.Name, err)
		}
		where = "(" + where + ") AND " + after
	}
	orderBy, err := driversql.OrderBy(pg, obj, order)
	if err != nil {
		return nil, fmt.Errorf("driverpg: query %s: %w", obj.Name, err)
	}
	stmt := signature(obj) + `SELECT ` + driversql.Columns(pg, obj) + ` FROM ` + quote(obj.Name) +
		` WHERE ` + where + ` ORDER BY ` + orderBy
	if q.Limit > 0 {
		stmt += ` LIMIT ` + args.Add(int64(q.Limit))
	}
	rows, err := d.pool.Query(ctx, stmt, args.Values()...)
	if err != nil {
		return nil, fmt.Errorf("driverpg: query %s: %w", obj.Name, mapError(obj, err))
	}
	defer rows.Close()
	out, err := driversql.ScanRecords(pg, obj, rows, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("driverpg: query %s: %w", obj.Name, mapError(obj, err))
	}
	return out, nil
}

// Count counts the records matching f.
func (d *Driver) Count(ctx context.Context, obj *schema.Object, f filter.Expr) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	args := driversql.NewArgs(pg)
	where, err := driversql.Where(pg, obj, f, args)
	if err != nil {
		return 0, fmt.Errorf("driverpg: count %s: %w", obj.Name, err)
	}
	var n int64
	if err := d.pool.QueryRow(ctx,
		signature(obj)+`SELECT count(*) FROM `+quote(obj.Name)+` WHERE `+where, args.Values()...).Scan(&n); err != nil {
		return 0, fmt.Errorf("driverpg: count %s: %w", obj.Name, mapError(obj, err))
	}
	return n, nil
}

// Update sets the fields of set on record id (if its etag is ifETag) and
// returns the record as written.
func (d *Driver) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	rec, err := update(ctx, d.pool, obj, id, set, ifETag)
	if err != nil {
		return nil, fmt.Errorf("driverpg: update %s: %w", obj.Name, mapError(obj, err))
	}
	return rec, nil
}

func update(ctx context.Context, q querier, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	args := driversql.NewArgs(pg)
	sets, err := driversql.SetValues(pg, obj, set, args)
	if err != nil {
		return nil, err
	}
	if len(sets) == 0 {
		return nil, errors.New("nothing to set")
	}
	stmt := signature(obj) + `UPDATE ` + quote(obj.Name) + ` SET ` + driversql.SetList(sets) + ` WHERE "id" = ` + args.Add(id)
	if ifETag != "" {
		stmt += ` AND "etag" = ` + args.Add(ifETag)
	}
	stmt += ` RETURNING ` + driversql.Columns(pg, obj)
	rec, err := recordFrom(obj, q.QueryRow(ctx, stmt, args.Values()...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, missing(ctx, q, obj, id)
	}
	return rec, err
}

// Delete removes record id if its etag is ifETag.
func (d *Driver) Delete(ctx context.Context, obj *schema.Object, id string, ifETag string) error {
	if err := d.check(); err != nil {
		return err
	}
	if err := remove(ctx, d.pool, obj, id, ifETag); err != nil {
		return fmt.Errorf("driverpg: delete from %s: %w", obj.Name, mapError(obj, err))
	}
	return nil
}

func remove(ctx context.Context, q querier, obj *schema.Object, id string, ifETag string) error {
	stmt := signature(obj) + `DELETE FROM ` + quote(obj.Name) + ` WHERE "id" = $1`
	args := []any{id}
	if ifETag != "" {
		stmt += ` AND "etag" = $2`
		args = append(args, ifETag)
	}
	tag, err := q.Exec(ctx, stmt, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return missing(ctx, q, obj, id)
	}
	return nil
}

// missing explains why a conditional write touched no row: the record is
// gone (ErrNotFound) or has another etag (ErrEtagMismatch).
func missing(ctx context.Context, q querier, obj *schema.Object, id string) error {
	var one int
	err := q.QueryRow(ctx, signature(obj)+`SELECT 1 FROM `+quote(obj.Name)+` WHERE "id" = $1`, id).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return driver.ErrNotFound
	case err != nil:
		return err
	default:
		return driver.ErrEtagMismatch
	}
}

// Batch applies ops in one transaction; the first failure rolls every op
// back.
func (d *Driver) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	out, err := d.batch(ctx, ops)
	var be *driver.BatchError
	if errors.As(err, &be) {
		return nil, &driver.BatchError{Index: be.Index, Err: mapError(ops[be.Index].Object, be.Err)}
	}
	if err != nil {
		return nil, fmt.Errorf("driverpg: batch: %w", mapError(nil, err))
	}
	return out, nil
}

// batch runs the transaction of Batch, which maps the errors.
func (d *Driver) batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	out := make([]driver.Record, len(ops))
	for i, op := range ops {
		rec, err := apply(ctx, tx, op)
		if err != nil {
			return nil, &driver.BatchError{Index: i, Err: err}
		}
		out[i] = rec
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

func apply(ctx context.Context, tx pgx.Tx, op driver.Op) (driver.Record, error) {
	if op.Object == nil {
		return nil, errors.New("driverpg: batch write without an object")
	}
	switch op.Kind {
	case driver.OpInsert:
		return insert(ctx, tx, op.Object, op.Record)
	case driver.OpUpdate:
		return update(ctx, tx, op.Object, op.ID, op.Record, op.IfETag)
	case driver.OpDelete:
		return nil, remove(ctx, tx, op.Object, op.ID, op.IfETag)
	default:
		return nil, fmt.Errorf("driverpg: unknown batch write kind %d", op.Kind)
	}
}
