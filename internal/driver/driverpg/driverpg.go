// Package driverpg is the driver.Driver on a PostgreSQL database per
// environment, through a small pgx pool.
package driverpg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/schema"
)

// Driver is one environment's PostgreSQL database.
type Driver struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
}

var _ driver.Driver = (*Driver)(nil)

// defaultMaxConns is the pool size OpenURL uses when the URL sets none: a
// server holds a pool per open environment, and PostgreSQL's connection
// limit is shared by all of them.
const defaultMaxConns = 4

// Open opens a pool with cfg, which the caller configures (size, timeouts,
// credentials), and checks that the database answers.
func Open(ctx context.Context, cfg *pgxpool.Config) (*Driver, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("driverpg: open: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("driverpg: open: %w", mapError(nil, err))
	}
	return &Driver{pool: pool}, nil
}

// OpenURL opens the database at url (a postgres:// URL or key=value
// string), with a pool of defaultMaxConns unless the URL sets
// pool_max_conns.
func OpenURL(ctx context.Context, url string) (*Driver, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password and all.
		return nil, errors.New("driverpg: open: the database URL does not parse")
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	return Open(ctx, cfg)
}

// Size is the database's size on disk (pg_database_size), which deletes
// shrink only once VACUUM FULL has run: a deleted row's space is reused by
// later writes, but the size does not fall.
func (d *Driver) Size(ctx context.Context) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	var n int64
	if err := d.pool.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&n); err != nil {
		return 0, fmt.Errorf("driverpg: size: %w", mapError(nil, err))
	}
	return n, nil
}

// Ping checks the database answers.
func (d *Driver) Ping(ctx context.Context) error {
	if err := d.check(); err != nil {
		return err
	}
	if err := d.pool.Ping(ctx); err != nil {
		return fmt.Errorf("driverpg: ping: %w", mapError(nil, err))
	}
	return nil
}

// Close closes the pool; calls after Close fail with ErrUnavailable, so a
// request that raced a registry eviction is retried on a fresh driver.
func (d *Driver) Close() error {
	if !d.closed.Swap(true) {
		d.pool.Close()
	}
	return nil
}

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("driverpg: %w: driver closed", driver.ErrUnavailable)

func (d *Driver) check() error {
	if d.closed.Load() {
		return errClosed
	}
	return nil
}

// querier is what both the pool and a transaction offer, so that single
// writes and batch writes share one implementation.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// signature returns a comment naming the types of obj's columns, which
// starts every statement on obj's table. pgx prepares each statement once
// per connection and keys it by its text; a prepared statement keeps the
// parameter and result types of the columns as they were, so once a field
// changes type the same text would bind values for the old type ("invalid
// input syntax") or be refused ("cached plan must not change result
// type"). With the types in the text, a new definition gets new statements,
// also in a process that prepared the old ones.
func signature(obj *schema.Object) string {
	h := fnv.New64a()
	for _, f := range driversql.Fields(obj) {
		_, _ = io.WriteString(h, f.Name+" "+f.Type+"\n")
	}
	return fmt.Sprintf("/* %016x */ ", h.Sum64())
}

// unavailableState reports whether a SQLSTATE means the server cannot serve
// now rather than that the statement is wrong.
func unavailableState(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
		return true
	case strings.HasPrefix(code, "53"): // insufficient resources, too many connections
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03": // admin or crash shutdown, cannot connect now
		return true
	}
	return false
}

// Error is a PostgreSQL error the driver has no sentinel for. Its message
// holds the SQLSTATE only, because the server's message can quote values
// ("invalid input syntax for type date: …"); the original stays reachable
// with errors.As for whoever may see it.
type Error struct {
	Code string
	err  *pgconn.PgError
}

func (e *Error) Error() string { return "postgres error (SQLSTATE " + e.Code + ")" }
func (e *Error) Unwrap() error { return e.err }

// mapError turns pgx errors into the driver's: a taken id is
// ErrAlreadyExists, a unique index violation a *UniqueViolationError (obj
// may be nil where none can happen), an unreachable or overloaded server or
// a timeout ErrUnavailable, any other server error an *Error. A canceled
// context stays as it is (the error wraps context.Canceled).
func mapError(obj *schema.Object, err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505":
			if obj != nil {
				if idx, ok := driversql.IndexByName(obj, pe.ConstraintName); ok {
					return driversql.UniqueViolation(obj, idx.Fields)
				}
			}
			// The only other unique constraint of a table is its primary key.
			return fmt.Errorf("%w: %w", driver.ErrAlreadyExists, &Error{Code: pe.Code, err: pe})
		case pe.Code == "53100": // disk_full
			return fmt.Errorf("%w: %w", driver.ErrStorageFull, &Error{Code: pe.Code, err: pe})
		case pe.Code == "3D000": // invalid_catalog_name: the database is gone
			return fmt.Errorf("%w: %w", driver.ErrGone, &Error{Code: pe.Code, err: pe})
		case pe.Code == "42703" && obj != nil: // undefined_column
			return fmt.Errorf("%w (%w)", driver.Drift(obj.Name, "a field has no column"), &Error{Code: pe.Code, err: pe})
		case pe.Code == "42P01" && obj != nil: // undefined_table
			return fmt.Errorf("%w (%w)", driver.MissingTable(obj.Name), &Error{Code: pe.Code, err: pe})
		case unavailableState(pe.Code):
			return fmt.Errorf("%w: %w", driver.ErrUnavailable, &Error{Code: pe.Code, err: pe})
		}
		return &Error{Code: pe.Code, err: pe}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || errors.As(err, &ce) ||
		errors.As(err, &ne) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	return err
}
