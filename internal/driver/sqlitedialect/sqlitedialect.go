// Package sqlitedialect is SQLite's side of driversql.Dialect, shared by the
// SQLite engine and the libSQL (Turso) engine: both lay tables out and encode
// values identically, so a database moves between the two unchanged.
package sqlitedialect

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/schema"
)

// ColumnTypes are the declared types of the columns of each field type.
// SQLite derives a column's storage affinity from its declared type by
// substring (INT → INTEGER, TEXT → TEXT, REAL → REAL), so each name picks the
// affinity its values need and also records the field type itself: PRAGMA
// table_info then tells a date column from a text one, which Migrate needs
// to apply a change of type exactly once. None of the names is one modernc
// turns into time.Time (DATE, DATETIME, TIMESTAMP).
//
// Storage: text, select and date are TEXT (dates as YYYY-MM-DD, which sorts
// as it compares); integer INTEGER; number REAL; boolean INTEGER 0 or 1;
// timestamp INTEGER microseconds since the Unix epoch (the precision
// PostgreSQL keeps, sorting and comparing as numbers); json TEXT holding the
// encoded document.
var ColumnTypes = map[string]string{
	schema.TypeText:      "TEXT",
	schema.TypeSelect:    "SELECT_TEXT",
	schema.TypeDate:      "DATE_TEXT",
	schema.TypeJSON:      "JSON_TEXT",
	schema.TypeInteger:   "INTEGER",
	schema.TypeBoolean:   "BOOLEAN_INTEGER",
	schema.TypeTimestamp: "TIMESTAMP_INTEGER",
	schema.TypeNumber:    "REAL",
}

// ColumnType is the declared type of a field type's column.
func ColumnType(fieldType string) (string, error) {
	t, ok := ColumnTypes[fieldType]
	if !ok {
		return "", fmt.Errorf("unknown field type %q", fieldType)
	}
	return t, nil
}

// Dialect is SQLite's (and libSQL's) side of driversql.Dialect.
type Dialect struct{}

var _ driversql.Dialect = Dialect{}

func (Dialect) Quote(ident string) string { return Quote(ident) }

func (Dialect) Placeholder(int) string { return "?" }

// Quote quotes an identifier for SQLite. It uses grave accents, not double
// quotes: SQLite reads a double-quoted name it cannot resolve as a string
// literal, so a column missing from a table would read as its own name in
// every row and match a filter comparing it with that name. A name in
// grave accents is only ever an identifier: a missing column is an error.
func Quote(ident string) string {
	return "`" + strings.ReplaceAll(ident, "`", "``") + "`"
}

// The schema ledger of SQLite's family (see driver.LedgerTable): the
// definition as given, the steps as given, the time in microseconds.
var (
	LedgerDDL = `CREATE TABLE IF NOT EXISTS ` + Quote(driver.LedgerTable) + ` (` +
		`object TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, definition BLOB NOT NULL, ` +
		`steps BLOB, apply_time INTEGER NOT NULL)`
	LedgerUpsert = `INSERT INTO ` + Quote(driver.LedgerTable) + ` (object, version, definition, steps, apply_time) ` +
		`VALUES (?, ?, ?, ?, ?) ON CONFLICT (object) DO UPDATE SET version = excluded.version, ` +
		`definition = excluded.definition, steps = excluded.steps, apply_time = excluded.apply_time`
	// LedgerTombstone records the drop of the object named by its first
	// argument at the time (microseconds) of its second.
	LedgerTombstone = `INSERT INTO ` + Quote(driver.LedgerTable) + ` (object, version, definition, steps, apply_time) ` +
		`VALUES (?, 0, x'', NULL, ?) ON CONFLICT (object) DO UPDATE SET version = 0, definition = x'', steps = NULL, ` +
		`apply_time = excluded.apply_time`
	LedgerSelect = `SELECT object, version, definition, steps, apply_time FROM ` + Quote(driver.LedgerTable) +
		` ORDER BY object`
	LedgerSelectOne = `SELECT object, version, definition, steps, apply_time FROM ` + Quote(driver.LedgerTable) +
		` WHERE object = ?`
	// LedgerExists is 1 when the database has a ledger, 0 otherwise.
	LedgerExists = `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '` + driver.LedgerTable + `'`
)

// SizeQuery is the bytes of the pages a database of SQLite's family uses
// (its free pages not counted: deleting records makes room at once).
const SizeQuery = `SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()`

// LedgerArgs are LedgerUpsert's arguments for c.
func LedgerArgs(c driver.Change) []any {
	return []any{c.Object.Name, c.Object.Version, c.Definition, c.Applied, c.ApplyTime.UnixMicro()}
}

// ScanLedger reads one row of LedgerSelect.
func ScanLedger(row driversql.Scanner) (driver.LedgerEntry, error) {
	var e driver.LedgerEntry
	var steps []byte
	var at int64
	if err := row.Scan(&e.Object, &e.Version, &e.Definition, &steps, &at); err != nil {
		return e, err
	}
	e.Steps = steps
	e.ApplyTime = time.UnixMicro(at).UTC()
	return e, nil
}

// MapSchemaError turns SQLite's "no such column" and "no such table" into
// a *driver.DriftError of obj (when known): a query names only defined
// fields, so either means the table is not what the definition says. The
// original error stays in the text, for the log.
func MapSchemaError(obj *schema.Object, err error) error {
	if obj == nil || err == nil {
		return err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no such column"):
		return fmt.Errorf("%w (%v)", driver.Drift(obj.Name, "a field has no column"), err)
	case strings.Contains(msg, "no such table"):
		return fmt.Errorf("%w (%v)", driver.MissingTable(obj.Name), err)
	}
	return err
}

// Drift compares a table's columns (name → declared type, from PRAGMA
// table_info; empty when there is no table) with obj.
func Drift(obj *schema.Object, have map[string]string) error {
	return driversql.Drift(obj, have, func(f schema.Field) string { return ColumnTypes[f.Type] })
}

func (Dialect) Encode(fieldType string, v any) (any, error) {
	val, ok, err := driversql.CheckValue(fieldType, v)
	if err != nil || !ok {
		return nil, err
	}
	switch fieldType {
	case schema.TypeInteger:
		return val.Int, nil
	case schema.TypeNumber:
		return val.Num, nil
	case schema.TypeBoolean:
		if val.Bool {
			return int64(1), nil
		}
		return int64(0), nil
	case schema.TypeTimestamp:
		return val.Time.UnixMicro(), nil
	case schema.TypeJSON:
		return string(val.JSON), nil
	default: // text, select, date
		return val.Str, nil
	}
}

// Decode answers v itself where it already is the field's Go value:
// returning the unboxed value would box it anew, an allocation per column
// of every row read.
func (Dialect) Decode(fieldType string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch fieldType {
	case schema.TypeText, schema.TypeSelect, schema.TypeDate:
		switch s := v.(type) {
		case string:
			return v, nil
		case []byte:
			return string(s), nil
		}
	case schema.TypeInteger:
		if _, ok := v.(int64); ok {
			return v, nil
		}
	case schema.TypeNumber:
		switch n := v.(type) {
		case float64:
			return v, nil
		case int64:
			return float64(n), nil
		}
	case schema.TypeBoolean:
		if n, ok := v.(int64); ok {
			return n != 0, nil
		}
	case schema.TypeTimestamp:
		if n, ok := v.(int64); ok {
			return time.UnixMicro(n).UTC(), nil
		}
	case schema.TypeJSON:
		switch s := v.(type) {
		case string:
			return driversql.DecodeJSON([]byte(s))
		case []byte:
			return driversql.DecodeJSON(s)
		}
	default:
		return nil, fmt.Errorf("unknown field type %q", fieldType)
	}
	return nil, fmt.Errorf("a %s column holds a value of Go type %T", fieldType, v)
}

// Prefix uses GLOB, which unlike LIKE is case-sensitive (as drivermem's
// strings.HasPrefix is) and, on a column of the default BINARY collation,
// can use an index. Dates are stored as their YYYY-MM-DD text, so the same
// test serves them. The prefix's own wildcard characters are matched
// literally by putting each in a one-character class.
func (Dialect) Prefix(column, _, prefix string, args *driversql.Args) string {
	return column + " GLOB " + args.Add(globEscape(prefix)+"*")
}

// globEscape works on bytes: the wildcards are ASCII, which never occurs
// inside a multi-byte UTF-8 sequence, and bytes that are not valid UTF-8
// pass through unchanged.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[':
			b.WriteByte('[')
			b.WriteByte(c)
			b.WriteByte(']')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// RecordFrom is driversql.ScanRecord with this dialect.
func RecordFrom(obj *schema.Object, row driversql.Scanner) (driver.Record, error) {
	return driversql.ScanRecord(Dialect{}, obj, row)
}

// RecordsFrom is driversql.ScanRecords with this dialect.
func RecordsFrom(obj *schema.Object, rows driversql.Rows, limit int) ([]driver.Record, error) {
	return driversql.ScanRecords(Dialect{}, obj, rows, limit)
}

// Querier is what a pool, a connection and a transaction of database/sql offer.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// TableColumns returns the declared type of each column of table; empty
// when there is no such table.
func TableColumns(ctx context.Context, q Querier, table string) (map[string]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, type FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := make(map[string]string)
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		cols[name] = typ
	}
	return cols, rows.Err()
}

// ReadLedger reads the whole schema ledger; driver.ErrNoLedger when the
// database has none.
func ReadLedger(ctx context.Context, q Querier) ([]driver.LedgerEntry, error) {
	var n int
	if err := q.QueryRowContext(ctx, LedgerExists).Scan(&n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, driver.ErrNoLedger
	}
	rows, err := q.QueryContext(ctx, LedgerSelect)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []driver.LedgerEntry
	for rows.Next() {
		e, err := ScanLedger(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
