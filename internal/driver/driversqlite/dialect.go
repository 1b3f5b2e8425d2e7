package driversqlite

import (
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

// The SQLite dialect (column types, value encoding, quoting, prefix match)
// is shared with the other engine of SQLite's family, so a database moves
// between driversqlite and driverturso unchanged.
type dialect = sqlitedialect.Dialect

// sq is the one dialect value the package uses.
var sq dialect

func columnType(fieldType string) (string, error) { return sqlitedialect.ColumnType(fieldType) }

func quote(ident string) string { return sqlitedialect.Quote(ident) }

// recordFrom is driversql.ScanRecord with the SQLite dialect.
func recordFrom(obj *schema.Object, row driversql.Scanner) (driver.Record, error) {
	return sqlitedialect.RecordFrom(obj, row)
}

// recordsFrom is driversql.ScanRecords with the SQLite dialect.
func recordsFrom(obj *schema.Object, rows driversql.Rows, limit int) ([]driver.Record, error) {
	return sqlitedialect.RecordsFrom(obj, rows, limit)
}

func uniqueViolation(obj *schema.Object, fields []string) error {
	return driversql.UniqueViolation(obj, fields)
}
