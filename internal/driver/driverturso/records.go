package driverturso

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

// Insert writes rec; a single statement is atomic on its own.
func (d *Driver) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := d.check(); err != nil {
		return err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	stmt, args, err := driversql.Insert(sq, obj, rec, false)
	if err != nil {
		return fmt.Errorf("driverturso: insert into %s: %w", obj.Name, err)
	}
	if _, err := d.db.ExecContext(ctx, stmt, args...); err != nil {
		return fmt.Errorf("driverturso: insert into %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	return nil
}

// Get reads one record.
func (d *Driver) Get(ctx context.Context, obj *schema.Object, id string) (driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	row := d.db.QueryRowContext(ctx,
		`SELECT `+driversql.Columns(sq, obj)+` FROM `+quote(obj.Name)+` WHERE "id" = ?`, id)
	rec, err := recordFrom(obj, row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("driverturso: get %s: %w", obj.Name, driver.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("driverturso: get %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	return rec, nil
}

// Query reads the records matching q in its order (then id), starting after
// q.After. See driversql.After for the keyset predicate.
func (d *Driver) Query(ctx context.Context, obj *schema.Object, q driver.Query) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	args := driversql.NewArgs(sq)
	where, err := driversql.Where(sq, obj, q.Filter, args)
	if err != nil {
		return nil, fmt.Errorf("driverturso: query %s: %w", obj.Name, err)
	}
	order := driversql.Order(q.Order)
	if q.After != nil {
		after, err := driversql.After(sq, obj, order, q.After, args)
		if err != nil {
			return nil, fmt.Errorf("driverturso: query %s: %w", obj.Name, err)
		}
		where = "(" + where + ") AND " + after
	}
	orderBy, err := driversql.OrderBy(sq, obj, order)
	if err != nil {
		return nil, fmt.Errorf("driverturso: query %s: %w", obj.Name, err)
	}
	stmt := `SELECT ` + driversql.Columns(sq, obj) + ` FROM ` + quote(obj.Name) +
		` WHERE ` + where + ` ORDER BY ` + orderBy
	if q.Limit > 0 {
		stmt += ` LIMIT ` + args.Add(int64(q.Limit))
	}
	rows, err := d.db.QueryContext(ctx, stmt, args.Values()...)
	if err != nil {
		return nil, fmt.Errorf("driverturso: query %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	defer rows.Close()
	out, err := recordsFrom(obj, rows, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("driverturso: query %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	return out, nil
}

// Count counts the records matching f.
func (d *Driver) Count(ctx context.Context, obj *schema.Object, f filter.Expr) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	args := driversql.NewArgs(sq)
	where, err := driversql.Where(sq, obj, f, args)
	if err != nil {
		return 0, fmt.Errorf("driverturso: count %s: %w", obj.Name, err)
	}
	var n int64
	if err := d.db.QueryRowContext(ctx,
		`SELECT count(*) FROM `+quote(obj.Name)+` WHERE `+where, args.Values()...).Scan(&n); err != nil {
		return 0, fmt.Errorf("driverturso: count %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	return n, nil
}

// Update sets the fields of set on record id, if its etag is ifETag, in
// one statement whose WHERE is the compare-and-swap; RETURNING tells
// whether it matched, since the server reports no rows affected.
func (d *Driver) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	stmt, args, err := updateStmt(obj, id, set, ifETag)
	if err != nil {
		return nil, fmt.Errorf("driverturso: update %s: %w", obj.Name, err)
	}
	rec, err := recordFrom(obj, d.db.QueryRowContext(ctx, stmt, args...))
	if errors.Is(err, sql.ErrNoRows) {
		err = d.missing(ctx, obj, id)
	}
	if err != nil {
		return nil, fmt.Errorf("driverturso: update %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	return rec, nil
}

// updateStmt renders the UPDATE of record id, returning the record as
// written.
func updateStmt(obj *schema.Object, id string, set driver.Record, ifETag string) (string, []any, error) {
	args := driversql.NewArgs(sq)
	sets, err := driversql.SetValues(sq, obj, set, args)
	if err != nil {
		return "", nil, err
	}
	if len(sets) == 0 {
		return "", nil, errors.New("nothing to set")
	}
	stmt := `UPDATE ` + quote(obj.Name) + ` SET ` + driversql.SetList(sets) + ` WHERE "id" = ` + args.Add(id)
	if ifETag != "" {
		stmt += ` AND "etag" = ` + args.Add(ifETag)
	}
	stmt += ` RETURNING ` + driversql.Columns(sq, obj)
	return stmt, args.Values(), nil
}

// Delete removes record id if its etag is ifETag.
func (d *Driver) Delete(ctx context.Context, obj *schema.Object, id string, ifETag string) error {
	if err := d.check(); err != nil {
		return err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	stmt, args := deleteStmt(obj, id, ifETag)
	var gone string
	err := d.db.QueryRowContext(ctx, stmt+` RETURNING "id"`, args...).Scan(&gone)
	if errors.Is(err, sql.ErrNoRows) {
		err = d.missing(ctx, obj, id)
	}
	if err != nil {
		return fmt.Errorf("driverturso: delete from %s: %w", obj.Name, mapError(ctx, obj, err))
	}
	return nil
}

func deleteStmt(obj *schema.Object, id string, ifETag string) (string, []any) {
	stmt := `DELETE FROM ` + quote(obj.Name) + ` WHERE "id" = ?`
	args := []any{id}
	if ifETag != "" {
		stmt += ` AND "etag" = ?`
		args = append(args, ifETag)
	}
	return stmt, args
}

// missing explains why a conditional write touched no row: the record is
// gone (ErrNotFound) or has another etag (ErrEtagMismatch). It reads after
// the write, so a record deleted or recreated in between is reported as it
// is now; the write itself was a single compare-and-swap either way.
func (d *Driver) missing(ctx context.Context, obj *schema.Object, id string) error {
	var one int64
	err := d.db.QueryRowContext(ctx, `SELECT 1 FROM `+quote(obj.Name)+` WHERE "id" = ?`, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return driver.ErrNotFound
	case err != nil:
		return err
	default:
		return driver.ErrEtagMismatch
	}
}
