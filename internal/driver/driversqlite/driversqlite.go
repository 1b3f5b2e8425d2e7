// Package driversqlite is the driver.Driver on one SQLite file per
// environment (modernc.org/sqlite, no cgo). Writes go through a single
// connection so that writers queue in Go instead of spinning on SQLite's
// file lock; reads use a separate pool of query-only connections, which WAL
// lets run beside the writer.
package driversqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

// Driver is one environment's SQLite database.
type Driver struct {
	writer *pool  // one connection: SQLite allows one writer at a time
	reader *pool  // query_only connections
	writes *group // single writes, committed in groups on the writer
	closed atomic.Bool
}

var _ driver.Driver = (*Driver)(nil)

// maxReaders bounds the reader pool; a registry keeps many environments
// open, and each connection holds its own page cache.
const maxReaders = 8

// idleConnTimeout closes connections of environments nobody is using.
const idleConnTimeout = 5 * time.Minute

// Open opens the database file at path (created if missing) with the DSN
// every envplane SQLite file uses (WAL, busy timeout, immediate write
// transactions). It checks both pools can reach the file before returning.
// path must be a file: the writer and the readers are separate connections,
// which ":memory:" would give separate databases.
func Open(ctx context.Context, path string) (*Driver, error) {
	dsn := DSN(path)
	writer, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("driversqlite: open: %w", err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxIdleTime(idleConnTimeout)
	// The writer connects first: it creates the file and switches it to WAL
	// before a query-only reader could find it in another mode.
	if err := writer.PingContext(ctx); err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("driversqlite: open: %w", mapError(nil, err))
	}
	reader, err := sql.Open("sqlite", dsn+"&"+url.Values{"_pragma": {"query_only(1)"}}.Encode())
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("driversqlite: open: %w", err)
	}
	n := min(max(runtime.GOMAXPROCS(0), 2), maxReaders)
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	reader.SetConnMaxIdleTime(idleConnTimeout)
	if err := reader.PingContext(ctx); err != nil {
		_ = reader.Close()
		_ = writer.Close()
		return nil, fmt.Errorf("driversqlite: open: %w", mapError(nil, err))
	}
	d := &Driver{writer: newPool(writer), reader: newPool(reader)}
	d.writes = &group{writer: d.writer}
	return d, nil
}

// Ping checks the file answers a query.
func (d *Driver) Ping(ctx context.Context) error {
	if err := d.check(); err != nil {
		return err
	}
	var one int
	if err := d.reader.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("driversqlite: ping: %w", mapError(nil, err))
	}
	return nil
}

// Size is the bytes of the pages the file uses.
func (d *Driver) Size(ctx context.Context) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	var n int64
	if err := d.reader.QueryRowContext(ctx, sqlitedialect.SizeQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("driversqlite: size: %w", mapError(nil, err))
	}
	return n, nil
}

// Close closes both pools; calls after Close fail with ErrUnavailable, so a
// request that raced a registry eviction is retried on a fresh driver.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	return errors.Join(d.reader.close(), d.writer.close())
}

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("driversqlite: %w: driver closed", driver.ErrUnavailable)

func (d *Driver) check() error {
	if d.closed.Load() {
		return errClosed
	}
	return nil
}

// querier is what both the writer pool and a transaction offer, so that
// single writes and batch writes share one implementation.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// mapError turns SQLite errors into the driver's: a taken id is
// ErrAlreadyExists, a unique index violation a *UniqueViolationError (obj
// may be nil where none can happen), a locked or unreachable file or a
// timeout ErrUnavailable. SQLite's messages carry no values, so the original
// error stays wrapped for the log.
func mapError(obj *schema.Object, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", driver.ErrAlreadyExists, err)
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		fields := uniqueColumns(se.Error())
		if len(fields) == 1 && fields[0] == schema.FieldID {
			return fmt.Errorf("%w: %w", driver.ErrAlreadyExists, err)
		}
		if obj != nil && fields != nil {
			return uniqueViolation(obj, fields)
		}
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %w", driver.ErrStorageFull, err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_IOERR, sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	return sqlitedialect.MapSchemaError(obj, err)
}

// uniqueColumns extracts the columns from SQLite's "UNIQUE constraint
// failed: table.a, table.b" message; SQLite names the columns, not the
// index. It returns nil when the message has another form.
func uniqueColumns(msg string) []string {
	const marker = "UNIQUE constraint failed: "
	i := strings.Index(msg, marker)
	if i < 0 {
		return nil
	}
	list := msg[i+len(marker):]
	if j := strings.LastIndex(list, " ("); j >= 0 { // modernc appends " (code)"
		list = list[:j]
	}
	var cols []string
	for _, c := range strings.Split(list, ", ") {
		dot := strings.LastIndexByte(c, '.')
		if dot < 0 {
			return nil
		}
		cols = append(cols, c[dot+1:])
	}
	return cols
}

// DSN is the modernc.org/sqlite DSN envplane opens every SQLite file
// with: WAL so readers don't block the writer, a busy timeout instead of
// immediate SQLITE_BUSY, foreign keys enforced.
func DSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}
