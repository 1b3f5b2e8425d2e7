package driversqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

// Migrate applies c's steps and records c in the schema ledger, in one
// transaction (SQLite's DDL is transactional). Every step first looks at
// the table as it is (PRAGMA table_info and sqlite_schema), so steps
// already in effect change nothing and a re-run after a failure converges.
// The ledger is read in the same write transaction, so no other change can
// slip between the check of From and the steps.
func (d *Driver) Migrate(ctx context.Context, c driver.Change) error {
	if err := d.check(); err != nil {
		return err
	}
	obj := c.Object
	tx, err := d.writer.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("driversqlite: migrate %s: %w", obj.Name, mapError(obj, err))
	}
	defer func() { _ = tx.Rollback() }()
	if err := prepareChange(ctx, tx, c); err != nil {
		return fmt.Errorf("driversqlite: migrate %s: %w", obj.Name, mapError(obj, err))
	}
	for _, s := range c.Steps {
		if err := applyStep(ctx, tx, obj, s); err != nil {
			return fmt.Errorf("driversqlite: migrate %s: %s %s: %w", obj.Name, s.Kind, s.Target, mapError(obj, err))
		}
	}
	if _, err := tx.ExecContext(ctx, sqlitedialect.LedgerUpsert, sqlitedialect.LedgerArgs(c)...); err != nil {
		return fmt.Errorf("driversqlite: migrate %s: record in the ledger: %w", obj.Name, mapError(obj, err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("driversqlite: migrate %s: %w", obj.Name, mapError(obj, err))
	}
	return nil
}

// prepareChange makes sure of the ledger and checks c against it and the
// table as they are; for a repair it brings the table to c.Object first.
func prepareChange(ctx context.Context, tx *sql.Tx, c driver.Change) error {
	obj := c.Object
	if _, err := tx.ExecContext(ctx, sqlitedialect.LedgerDDL); err != nil {
		return err
	}
	var have *driver.LedgerEntry
	e, err := sqlitedialect.ScanLedger(tx.QueryRowContext(ctx, sqlitedialect.LedgerSelectOne, obj.Name))
	switch {
	case err == nil:
		have = &e
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	cols, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	ensure, err := c.Prepare(have, len(cols) > 0, func() error { return sqlitedialect.Drift(obj, cols) })
	if err != nil || !ensure {
		return err
	}
	return createTable(ctx, tx, obj)
}

func applyStep(ctx context.Context, tx *sql.Tx, obj *schema.Object, s schema.Step) error {
	switch s.Kind {
	case schema.StepCreateTable:
		return createTable(ctx, tx, obj)
	case schema.StepAddField:
		if s.Field == nil {
			return fmt.Errorf("step has no field")
		}
		return addField(ctx, tx, obj, *s.Field)
	case schema.StepDropField:
		return dropField(ctx, tx, obj, s.Target)
	case schema.StepChangeField:
		if s.Field == nil {
			return fmt.Errorf("step has no field")
		}
		return changeField(ctx, tx, obj, s)
	case schema.StepAddIndex:
		if s.Index == nil {
			return fmt.Errorf("step has no index")
		}
		return createIndex(ctx, tx, obj, *s.Index)
	case schema.StepDropIndex:
		name := s.Target
		if s.Index != nil {
			name = s.Index.Name
		}
		_, err := tx.ExecContext(ctx, `DROP INDEX IF EXISTS `+quote(schema.PhysicalIndexName(obj.Name, name)))
		return err
	default:
		return fmt.Errorf("unknown step kind %q", s.Kind)
	}
}

// createTable creates obj's table with every column and index. On a table
// that exists it adds whatever columns and indexes are missing instead.
func createTable(ctx context.Context, tx *sql.Tx, obj *schema.Object) error {
	cols := make([]string, 0, 4+len(obj.Fields))
	for _, f := range driversql.Fields(obj) {
		def, err := columnDef(f)
		if err != nil {
			return err
		}
		if f.Name == schema.FieldID {
			// SQLite lets a PRIMARY KEY other than INTEGER hold NULL unless told.
			def += " PRIMARY KEY NOT NULL"
		}
		cols = append(cols, def)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+quote(obj.Name)+` (`+strings.Join(cols, ", ")+`)`); err != nil {
		return err
	}
	have, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	for _, f := range driversql.Mendable(obj) {
		if _, ok := have[f.Name]; !ok {
			if err := addColumn(ctx, tx, obj, f, true); err != nil {
				return err
			}
		}
	}
	for _, idx := range obj.AllIndexes() {
		if err := createIndex(ctx, tx, obj, idx); err != nil {
			return err
		}
	}
	return nil
}

func columnDef(f schema.Field) (string, error) {
	t, err := columnType(f.Type)
	if err != nil {
		return "", fmt.Errorf("field %s: %w", f.Name, err)
	}
	return quote(f.Name) + " " + t, nil
}

// addField adds f's column unless the table has it.
func addField(ctx context.Context, tx *sql.Tx, obj *schema.Object, f schema.Field) error {
	have, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	if _, ok := have[f.Name]; ok {
		return nil
	}
	return addColumn(ctx, tx, obj, f, true)
}

// addColumn adds f's column. With fill, a required field with a default
// gets the default in the rows that exist: the service checks required
// fields only on write, so rows written before must not be left without.
func addColumn(ctx context.Context, tx *sql.Tx, obj *schema.Object, f schema.Field, fill bool) error {
	def, err := columnDef(f)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `ALTER TABLE `+quote(obj.Name)+` ADD COLUMN `+def); err != nil {
		return err
	}
	if !fill {
		return nil
	}
	return backfill(ctx, tx, obj, f)
}

// backfill sets a required field's default where the column is NULL; it
// does nothing for a field that is optional or has no default.
func backfill(ctx context.Context, tx *sql.Tx, obj *schema.Object, f schema.Field) error {
	if !f.Required || f.Default == nil {
		return nil
	}
	v, err := sq.Encode(f.Type, f.Default)
	if err != nil {
		return fmt.Errorf("field %s default: %w", f.Name, err)
	}
	col := quote(f.Name)
	_, err = tx.ExecContext(ctx, `UPDATE `+quote(obj.Name)+` SET `+col+` = ? WHERE `+col+` IS NULL`, v)
	return err
}

// dropField drops the field's column after the indexes that include it:
// SQLite refuses to drop an indexed column.
func dropField(ctx context.Context, tx *sql.Tx, obj *schema.Object, field string) error {
	have, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	if _, ok := have[field]; !ok {
		return nil
	}
	return dropColumn(ctx, tx, obj, field)
}

func dropColumn(ctx context.Context, tx *sql.Tx, obj *schema.Object, field string) error {
	indexes, err := indexesOn(ctx, tx, obj.Name, field)
	if err != nil {
		return err
	}
	for _, name := range indexes {
		if _, err := tx.ExecContext(ctx, `DROP INDEX `+quote(name)); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `ALTER TABLE `+quote(obj.Name)+` DROP COLUMN `+quote(field))
	return err
}

// changeField applies a change of a field's definition. A new type replaces
// the column (its values are lost; the step is destructive) and recreates
// the indexes that include it; the declared type tells whether that is done
// already. A field that becomes required gets its default where it is NULL.
// Anything else is metadata only.
func changeField(ctx context.Context, tx *sql.Tx, obj *schema.Object, s schema.Step) error {
	f := *s.Field
	have, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	want, err := columnType(f.Type)
	if err != nil {
		return err
	}
	got, ok := have[f.Name]
	switch {
	case !ok:
		if err := addColumn(ctx, tx, obj, f, false); err != nil {
			return err
		}
	case !strings.EqualFold(got, want):
		if err := dropColumn(ctx, tx, obj, f.Name); err != nil {
			return err
		}
		if err := addColumn(ctx, tx, obj, f, false); err != nil {
			return err
		}
		for _, idx := range driversql.IndexesOn(obj, f.Name) {
			if err := createIndex(ctx, tx, obj, idx); err != nil {
				return err
			}
		}
	}
	if s.Previous != nil && !s.Previous.Required {
		return backfill(ctx, tx, obj, f)
	}
	return nil
}

// createIndex creates idx unless an index of its name exists.
func createIndex(ctx context.Context, tx *sql.Tx, obj *schema.Object, idx schema.Index) error {
	cols := make([]string, len(idx.Fields))
	for i, f := range idx.Fields {
		cols[i] = quote(f)
	}
	unique := ""
	if idx.Unique {
		unique = "UNIQUE "
	}
	_, err := tx.ExecContext(ctx, `CREATE `+unique+`INDEX IF NOT EXISTS `+quote(schema.IndexName(obj.Name, idx))+
		` ON `+quote(obj.Name)+` (`+strings.Join(cols, ", ")+`)`)
	return err
}

// tableColumns returns the declared type of each column of table; empty
// when there is no such table.
func tableColumns(ctx context.Context, q querier, table string) (map[string]string, error) {
	return sqlitedialect.TableColumns(ctx, q, table)
}

// indexesOn returns the indexes of table (other than the primary key's)
// that include column.
func indexesOn(ctx context.Context, tx *sql.Tx, table, column string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT DISTINCT il.name
		FROM pragma_index_list(?) AS il, pragma_index_info(il.name) AS ii
		WHERE il.origin = 'c' AND ii.name = ?`, table, column)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, rows.Err()
}

// DropObject drops the object's table and, with it, its indexes, and
// leaves its tombstone in the ledger, in one transaction.
func (d *Driver) DropObject(ctx context.Context, name string) error {
	if err := d.check(); err != nil {
		return err
	}
	tx, err := d.writer.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("driversqlite: drop %s: %w", name, mapError(nil, err))
	}
	defer func() { _ = tx.Rollback() }()
	for _, stmt := range []string{`DROP TABLE IF EXISTS ` + quote(name), sqlitedialect.LedgerDDL} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("driversqlite: drop %s: %w", name, mapError(nil, err))
		}
	}
	if _, err := tx.ExecContext(ctx, sqlitedialect.LedgerTombstone, name, time.Now().UnixMicro()); err != nil {
		return fmt.Errorf("driversqlite: drop %s: %w", name, mapError(nil, err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("driversqlite: drop %s: %w", name, mapError(nil, err))
	}
	return nil
}

// Ledger reads the schema ledger.
func (d *Driver) Ledger(ctx context.Context) ([]driver.LedgerEntry, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	entries, err := sqlitedialect.ReadLedger(ctx, d.reader)
	if err != nil && !errors.Is(err, driver.ErrNoLedger) {
		return nil, fmt.Errorf("driversqlite: ledger: %w", mapError(nil, err))
	}
	return entries, err
}

// Check compares obj's table with obj.
func (d *Driver) Check(ctx context.Context, obj *schema.Object) error {
	if err := d.check(); err != nil {
		return err
	}
	cols, err := tableColumns(ctx, d.reader, obj.Name)
	if err != nil {
		return fmt.Errorf("driversqlite: check %s: %w", obj.Name, mapError(nil, err))
	}
	return sqlitedialect.Drift(obj, cols)
}
