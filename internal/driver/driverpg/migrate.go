package driverpg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/schema"
)

// migrationLockClass is the first key of the advisory lock that serialises
// the migrations and drops of one environment's database (the second is a
// hash of the ledger's name), so that two server processes applying the
// same plan wait for each other instead of failing on each other's
// half-made columns, and the ledger is created once. It spells "envp" in
// ASCII.
const migrationLockClass = 0x656e7670

// ledgerDDL creates the schema ledger (see driver.LedgerTable).
var ledgerDDL = `CREATE TABLE IF NOT EXISTS ` + quote(driver.LedgerTable) + ` (` +
	`object text COLLATE "C" PRIMARY KEY, version bigint NOT NULL, definition bytea NOT NULL, ` +
	`steps bytea, apply_time timestamptz NOT NULL)`

// Migrate applies c's steps and records c in the schema ledger, in one
// transaction (PostgreSQL's DDL is transactional). Every step first looks
// at the table as it is (pg_attribute, IF [NOT] EXISTS), so steps already
// in effect change nothing and a re-run after a failure converges.
func (d *Driver) Migrate(ctx context.Context, c driver.Change) error {
	if err := d.check(); err != nil {
		return err
	}
	obj := c.Object
	err := d.schemaTx(ctx, func(tx pgx.Tx) error {
		if err := prepareChange(ctx, tx, c); err != nil {
			return err
		}
		for _, s := range c.Steps {
			if err := applyStep(ctx, tx, obj, s); err != nil {
				return fmt.Errorf("%s %s: %w", s.Kind, s.Target, err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+quote(driver.LedgerTable)+` (object, version, definition, steps, apply_time)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (object) DO UPDATE SET version = excluded.version,
			definition = excluded.definition, steps = excluded.steps, apply_time = excluded.apply_time`,
			obj.Name, obj.Version, c.Definition, c.Applied, c.ApplyTime)
		return err
	})
	if err != nil {
		return fmt.Errorf("driverpg: migrate %s: %w", obj.Name, mapError(obj, err))
	}
	return nil
}

// schemaTx runs fn in a transaction holding the migration lock, with the
// ledger made.
func (d *Driver) schemaTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(migrationLockClass), driver.LedgerTable); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, ledgerDDL); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// prepareChange checks c against the ledger and the table as they are; for
// a repair it brings the table to c.Object first.
func prepareChange(ctx context.Context, tx pgx.Tx, c driver.Change) error {
	obj := c.Object
	var have *driver.LedgerEntry
	var e driver.LedgerEntry
	err := tx.QueryRow(ctx, `SELECT version, definition FROM `+quote(driver.LedgerTable)+` WHERE object = $1`, obj.Name).
		Scan(&e.Version, &e.Definition)
	switch {
	case err == nil:
		have = &e
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	cols, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	ensure, err := c.Prepare(have, len(cols) > 0, func() error { return drift(obj, cols) })
	if err != nil || !ensure {
		return err
	}
	return createTable(ctx, tx, obj)
}

// drift compares a table's columns with obj.
func drift(obj *schema.Object, cols map[string]column) error {
	types := make(map[string]string, len(cols))
	for name, c := range cols {
		types[name] = c.typ
	}
	return driversql.Drift(obj, types, func(f schema.Field) string { return formatTypes[f.Type] })
}

func applyStep(ctx context.Context, tx pgx.Tx, obj *schema.Object, s schema.Step) error {
	switch s.Kind {
	case schema.StepCreateTable:
		return createTable(ctx, tx, obj)
	case schema.StepAddField:
		if s.Field == nil {
			return errors.New("step has no field")
		}
		return addField(ctx, tx, obj, *s.Field)
	case schema.StepDropField:
		// Dropping a column drops the indexes that include it.
		_, err := tx.Exec(ctx, `ALTER TABLE `+quote(obj.Name)+` DROP COLUMN IF EXISTS `+quote(s.Target))
		return err
	case schema.StepChangeField:
		if s.Field == nil {
			return errors.New("step has no field")
		}
		return changeField(ctx, tx, obj, s)
	case schema.StepAddIndex:
		if s.Index == nil {
			return errors.New("step has no index")
		}
		return createIndex(ctx, tx, obj, *s.Index)
	case schema.StepDropIndex:
		name := s.Target
		if s.Index != nil {
			name = s.Index.Name
		}
		_, err := tx.Exec(ctx, `DROP INDEX IF EXISTS `+quote(schema.PhysicalIndexName(obj.Name, name)))
		return err
	default:
		return fmt.Errorf("unknown step kind %q", s.Kind)
	}
}

// createTable creates obj's table with every column and index. On a table
// that exists it adds whatever columns and indexes are missing instead.
func createTable(ctx context.Context, tx pgx.Tx, obj *schema.Object) error {
	have, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	if len(have) == 0 {
		cols := make([]string, 0, 4+len(obj.Fields))
		for _, f := range driversql.Fields(obj) {
			def, err := columnDef(f)
			if err != nil {
				return err
			}
			if f.Name == schema.FieldID {
				def += " PRIMARY KEY"
			}
			cols = append(cols, def)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE `+quote(obj.Name)+` (`+strings.Join(cols, ", ")+`)`); err != nil {
			return err
		}
		for _, f := range obj.Fields {
			if err := commentColumn(ctx, tx, obj, f); err != nil {
				return err
			}
		}
	} else {
		for _, f := range driversql.Mendable(obj) {
			if _, ok := have[f.Name]; !ok {
				if err := addColumn(ctx, tx, obj, f, true); err != nil {
					return err
				}
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

// commentColumn records f's type in its column's comment, because text
// and select columns look alike otherwise. COMMENT takes no parameters; the
// literal is one of the fixed type names, never data.
func commentColumn(ctx context.Context, tx pgx.Tx, obj *schema.Object, f schema.Field) error {
	if _, ok := columnTypes[f.Type]; !ok {
		return fmt.Errorf("field %s: unknown field type %q", f.Name, f.Type)
	}
	_, err := tx.Exec(ctx, `COMMENT ON COLUMN `+quote(obj.Name)+`.`+quote(f.Name)+` IS '`+f.Type+`'`)
	return err
}

// addField adds f's column unless the table has it.
func addField(ctx context.Context, tx pgx.Tx, obj *schema.Object, f schema.Field) error {
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
func addColumn(ctx context.Context, tx pgx.Tx, obj *schema.Object, f schema.Field, fill bool) error {
	def, err := columnDef(f)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+quote(obj.Name)+` ADD COLUMN `+def); err != nil {
		return err
	}
	if err := commentColumn(ctx, tx, obj, f); err != nil {
		return err
	}
	if !fill {
		return nil
	}
	return backfill(ctx, tx, obj, f)
}

// backfill sets a required field's default where the column is NULL; it
// does nothing for a field that is optional or has no default.
func backfill(ctx context.Context, tx pgx.Tx, obj *schema.Object, f schema.Field) error {
	if !f.Required || f.Default == nil {
		return nil
	}
	v, err := pg.Encode(f.Type, f.Default)
	if err != nil {
		return fmt.Errorf("field %s default: %w", f.Name, err)
	}
	col := quote(f.Name)
	_, err = tx.Exec(ctx, signature(obj)+`UPDATE `+quote(obj.Name)+` SET `+col+` = $1 WHERE `+col+` IS NULL`, v)
	return err
}

// changeField applies a change of a field's definition. A new type replaces
// the column (its values are lost; the step is destructive; PostgreSQL drops
// the indexes that include it with it) and recreates those indexes; the
// column's type and comment tell whether that is done already. A field that
// becomes required gets its default where it is NULL. Anything else is
// metadata only.
func changeField(ctx context.Context, tx pgx.Tx, obj *schema.Object, s schema.Step) error {
	f := *s.Field
	have, err := tableColumns(ctx, tx, obj.Name)
	if err != nil {
		return err
	}
	col, ok := have[f.Name]
	switch {
	case !ok:
		if err := addColumn(ctx, tx, obj, f, false); err != nil {
			return err
		}
	case col.typ != formatTypes[f.Type] || (col.comment != "" && col.comment != f.Type):
		if _, err := tx.Exec(ctx, `ALTER TABLE `+quote(obj.Name)+` DROP COLUMN `+quote(f.Name)); err != nil {
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

// createIndex creates idx unless an index of its name exists. Its keys
// sort NULLs first, as queries do ascending (and, scanned backwards, last
// descending), so an index can serve a query's order; PostgreSQL's default
// is the opposite.
func createIndex(ctx context.Context, tx pgx.Tx, obj *schema.Object, idx schema.Index) error {
	cols := make([]string, len(idx.Fields))
	for i, f := range idx.Fields {
		cols[i] = quote(f) + " NULLS FIRST"
	}
	unique := ""
	if idx.Unique {
		unique = "UNIQUE "
	}
	_, err := tx.Exec(ctx, `CREATE `+unique+`INDEX IF NOT EXISTS `+quote(schema.IndexName(obj.Name, idx))+
		` ON `+quote(obj.Name)+` (`+strings.Join(cols, ", ")+`)`)
	return err
}

// column is a column as the catalog describes it.
type column struct {
	typ     string // format_type()
	comment string // the field type, for columns envplane made
}

// tableColumns returns the columns of table; empty when there is no such
// table (in the search path, where CREATE TABLE puts it).
func tableColumns(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, table string) (map[string]column, error) {
	rows, err := q.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), coalesce(col_description(a.attrelid, a.attnum), '')
		FROM pg_attribute AS a
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, quote(table))
	if err != nil {
		return nil, err
	}
	cols := make(map[string]column)
	var name string
	var c column
	_, err = pgx.ForEachRow(rows, []any{&name, &c.typ, &c.comment}, func() error {
		cols[name] = c
		return nil
	})
	return cols, err
}

// DropObject drops the object's table and, with it, its indexes, and
// leaves its tombstone in the ledger, in one transaction.
func (d *Driver) DropObject(ctx context.Context, name string) error {
	if err := d.check(); err != nil {
		return err
	}
	err := d.schemaTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+quote(name)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+quote(driver.LedgerTable)+` (object, version, definition, steps, apply_time)
			VALUES ($1, 0, '', NULL, now()) ON CONFLICT (object) DO UPDATE SET version = 0, definition = '',
			steps = NULL, apply_time = excluded.apply_time`, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("driverpg: drop %s: %w", name, mapError(nil, err))
	}
	return nil
}

// Ledger reads the schema ledger.
func (d *Driver) Ledger(ctx context.Context) ([]driver.LedgerEntry, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	var exists bool
	if err := d.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, quote(driver.LedgerTable)).Scan(&exists); err != nil {
		return nil, fmt.Errorf("driverpg: ledger: %w", mapError(nil, err))
	}
	if !exists {
		return nil, driver.ErrNoLedger
	}
	rows, err := d.pool.Query(ctx, `SELECT object, version, definition, steps, apply_time FROM `+
		quote(driver.LedgerTable)+` ORDER BY object`)
	if err != nil {
		return nil, fmt.Errorf("driverpg: ledger: %w", mapError(nil, err))
	}
	var out []driver.LedgerEntry
	var e driver.LedgerEntry
	_, err = pgx.ForEachRow(rows, []any{&e.Object, &e.Version, &e.Definition, &e.Steps, &e.ApplyTime}, func() error {
		e.ApplyTime = e.ApplyTime.UTC()
		out = append(out, e)
		e = driver.LedgerEntry{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("driverpg: ledger: %w", mapError(nil, err))
	}
	return out, nil
}

// Check compares obj's table with obj.
func (d *Driver) Check(ctx context.Context, obj *schema.Object) error {
	if err := d.check(); err != nil {
		return err
	}
	cols, err := tableColumns(ctx, d.pool, obj.Name)
	if err != nil {
		return fmt.Errorf("driverpg: check %s: %w", obj.Name, mapError(nil, err))
	}
	return drift(obj, cols)
}
