package driverpg

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/schema"
)

// columnTypes are the column types of each field type. Text columns use the
// "C" collation so that they order and compare by bytes, as Go strings (and
// drivermem, and SQLite) do, whatever the database's default collation; it
// also lets a plain index serve prefix matches. text and select share a
// type, so the field type is also kept in the column's comment (see
// Migrate).
var columnTypes = map[string]string{
	schema.TypeText:      `text COLLATE "C"`,
	schema.TypeSelect:    `text COLLATE "C"`,
	schema.TypeDate:      `date`,
	schema.TypeJSON:      `jsonb`,
	schema.TypeInteger:   `bigint`,
	schema.TypeBoolean:   `boolean`,
	schema.TypeTimestamp: `timestamptz`,
	schema.TypeNumber:    `double precision`,
}

// formatTypes is each field type's column type as format_type() reports it,
// which Migrate compares with the table.
var formatTypes = map[string]string{
	schema.TypeText:      "text",
	schema.TypeSelect:    "text",
	schema.TypeDate:      "date",
	schema.TypeJSON:      "jsonb",
	schema.TypeInteger:   "bigint",
	schema.TypeBoolean:   "boolean",
	schema.TypeTimestamp: "timestamp with time zone",
	schema.TypeNumber:    "double precision",
}

func columnType(fieldType string) (string, error) {
	t, ok := columnTypes[fieldType]
	if !ok {
		return "", fmt.Errorf("unknown field type %q", fieldType)
	}
	return t, nil
}

// dialect is PostgreSQL's side of driversql.Dialect.
type dialect struct{}

var _ driversql.Dialect = dialect{}

// pg is the one dialect value the package uses.
var pg dialect

func (dialect) Quote(ident string) string { return quote(ident) }

func (dialect) Placeholder(n int) string { return "$" + strconv.Itoa(n) }

// quote quotes an identifier for PostgreSQL.
func quote(ident string) string { return pgx.Identifier{ident}.Sanitize() }

// Encode binds each field type as pgx encodes it for the column: dates
// travel as YYYY-MM-DD text (pgx sends strings in text format, which the
// server parses as a date, so no time zone can shift them), JSON as the
// encoded document.
func (dialect) Encode(fieldType string, v any) (any, error) {
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
		return val.Bool, nil
	case schema.TypeTimestamp:
		return val.Time, nil
	case schema.TypeJSON:
		return json.RawMessage(val.JSON), nil
	default: // text, select, date
		return val.Str, nil
	}
}

// Decode answers v itself where it already is the field's Go value:
// returning the unboxed value would box it anew, an allocation per column
// of every row read.
func (dialect) Decode(fieldType string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch fieldType {
	case schema.TypeText, schema.TypeSelect:
		if _, ok := v.(string); ok {
			return v, nil
		}
	case schema.TypeDate:
		if t, ok := v.(time.Time); ok {
			return t.Format(schema.DateLayout), nil
		}
	case schema.TypeInteger:
		if _, ok := v.(int64); ok {
			return v, nil
		}
	case schema.TypeNumber:
		if _, ok := v.(float64); ok {
			return v, nil
		}
	case schema.TypeBoolean:
		if _, ok := v.(bool); ok {
			return v, nil
		}
	case schema.TypeTimestamp:
		if t, ok := v.(time.Time); ok {
			return t.UTC(), nil
		}
	case schema.TypeJSON:
		// pgx has decoded the document with encoding/json already.
		return v, nil
	default:
		return nil, fmt.Errorf("unknown field type %q", fieldType)
	}
	return nil, fmt.Errorf("a %s column holds a value of Go type %T", fieldType, v)
}

// Prefix uses LIKE with the prefix's own wildcards escaped; on a "C"
// collation column it is case-sensitive and can use a plain index. A date
// column is matched on its YYYY-MM-DD text, which to_char writes whatever
// the session's DateStyle. standard_conforming_strings (on since
// PostgreSQL 9.1) makes '\' one backslash.
func (dialect) Prefix(column, fieldType, prefix string, args *driversql.Args) string {
	if fieldType == schema.TypeDate {
		column = `to_char(` + column + `, 'YYYY-MM-DD')`
	}
	return column + ` LIKE ` + args.Add(likeEscape(prefix)+"%") + ` ESCAPE '\'`
}

// likeEscape escapes LIKE's wildcards and its escape character. It works on
// bytes: all three are ASCII, which never occurs inside a multi-byte UTF-8
// sequence.
func likeEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', '_', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// recordFrom is driversql.ScanRecord with PostgreSQL's dialect.
func recordFrom(obj *schema.Object, row driversql.Scanner) (driver.Record, error) {
	return driversql.ScanRecord(pg, obj, row)
}
