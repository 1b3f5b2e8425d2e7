package driverturso

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

// Migrate applies steps as one script (see script), so a failed migration
// leaves the table as it was: libSQL's DDL is transactional.
//
// A script cannot look at the table between its statements, so Migrate
// reads the table first (its columns, its indexes and a fingerprint of its
// schema rows, in one read transaction) and plans every step against that
// picture, updating the picture as it goes so that each step sees the ones
// before it. Steps already in effect plan nothing, so re-applying after a
// failure converges. The script's first statement is a guard that fails
// unless the table's fingerprint is still the one read: a migration that
// raced this one cannot make it apply a plan made for a table that is gone
// (a change of type dropping a column twice, say). When the script fails
// and the fingerprint has changed since the read, Migrate reads and plans
// again, at most maxAttempts times.
func (d *Driver) Migrate(ctx context.Context, c driver.Change) error {
	if err := d.check(); err != nil {
		return err
	}
	obj := c.Object
	ctx, cancel := d.call(ctx)
	defer cancel()
	for range maxAttempts {
		t, err := d.readTable(ctx, obj.Name)
		if err != nil {
			return fmt.Errorf("driverturso: migrate %s: %w", obj.Name, mapError(ctx, obj, err))
		}
		ensure, err := c.Prepare(t.ledger, t.exists(), func() error { return sqlitedialect.Drift(obj, t.columns) })
		if err != nil {
			return fmt.Errorf("driverturso: migrate %s: %w", obj.Name, err)
		}
		var s script
		s.add(`SELECT abs(CASE WHEN `+fingerprint+` IS ? THEN 0 ELSE ? END)`, obj.Name, t.fingerprint, overflow)
		s.add(`SELECT abs(CASE WHEN `+ledgerKey+` IS ? THEN 0 ELSE ? END)`, obj.Name, t.ledgerKey(), overflow)
		if ensure {
			if err := t.createTable(&s, obj); err != nil {
				return fmt.Errorf("driverturso: migrate %s: %w", obj.Name, err)
			}
		}
		for _, st := range c.Steps {
			if err := t.apply(&s, obj, st); err != nil {
				return fmt.Errorf("driverturso: migrate %s: %s %s: %w", obj.Name, st.Kind, st.Target, err)
			}
		}
		s.add(sqlitedialect.LedgerUpsert, sqlitedialect.LedgerArgs(c)...)
		err = s.exec(ctx, d.db, s.len(), commit)
		if err == nil {
			return nil
		}
		if errors.Is(err, context.Canceled) || transportError(err) {
			return fmt.Errorf("driverturso: migrate %s: %w", obj.Name, mapError(ctx, obj, err))
		}
		now, rerr := d.readTable(ctx, obj.Name)
		if rerr != nil {
			return fmt.Errorf("driverturso: migrate %s: %w", obj.Name, mapError(ctx, obj, rerr))
		}
		if now.fingerprint == t.fingerprint && now.ledgerKey() == t.ledgerKey() {
			return fmt.Errorf("driverturso: migrate %s: %w", obj.Name, mapError(ctx, obj, err))
		}
	}
	return fmt.Errorf("driverturso: migrate %s: the table changed under each of %d attempts", obj.Name, maxAttempts)
}

// ledgerKey is an expression of one parameter, an object name: its ledger
// entry's version and definition as text, or NULL when it has none. The
// guard on it makes a change fail when another one recorded itself since
// the read.
const ledgerKey = `(SELECT version || ':' || hex(definition) FROM ` + "`" + driver.LedgerTable + "`" + ` WHERE object = ?)`

// ledgerKey is the value the expression ledgerKey had at the read.
func (t *table) ledgerKey() any {
	if t.ledger == nil {
		return nil
	}
	return fmt.Sprintf("%d:%X", t.ledger.Version, t.ledger.Definition)
}

// fingerprint is an expression of one parameter, a table name: the text of
// the table's rows in sqlite_schema (the table's and its indexes' type,
// name and SQL, which every ALTER TABLE rewrites), or NULL when there is no
// such table.
const fingerprint = `(SELECT group_concat(type || ' ' || name || ' ' || coalesce(sql, ''), char(10))` +
	` FROM (SELECT type, name, sql FROM sqlite_schema WHERE tbl_name = ? ORDER BY type, name))`

// table is Migrate's picture of a table.
type table struct {
	fingerprint any                 // string, or nil when there is no table
	ledger      *driver.LedgerEntry // nil when the ledger has no entry
	columns     map[string]string   // column → declared type
	indexes     map[string][]string
}

func (t *table) exists() bool { return len(t.columns) > 0 }

// readTable reads name's picture in one read transaction. indexes holds the
// indexes made by CREATE INDEX (origin 'c', which excludes the primary
// key's), with their columns in index order.
func (d *Driver) readTable(ctx context.Context, name string) (*table, error) {
	if _, err := d.db.ExecContext(ctx, sqlitedialect.LedgerDDL); err != nil {
		return nil, err
	}
	var s script
	s.add(`SELECT `+fingerprint, name)
	s.add(sqlitedialect.LedgerSelectOne, name)
	s.add(`SELECT name, type FROM pragma_table_info(?)`, name)
	s.add(`SELECT il.name, ii.name FROM pragma_index_list(?) AS il, pragma_index_info(il.name) AS ii`+
		` WHERE il.origin = 'c' ORDER BY il.name, ii.seqno`, name)
	text, args := s.text(s.len(), "BEGIN", commit)
	rows, err := d.db.QueryContext(ctx, text, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := &table{columns: map[string]string{}, indexes: map[string][]string{}}
	next := func() error {
		if !rows.NextResultSet() {
			return fmt.Errorf("reading table %s: a result set is missing: %w", name, rows.Err())
		}
		return nil
	}
	if err := next(); err != nil { // the fingerprint
		return nil, err
	}
	if rows.Next() {
		if err := rows.Scan(&t.fingerprint); err != nil {
			return nil, err
		}
	}
	if err := next(); err != nil { // the ledger entry
		return nil, err
	}
	if rows.Next() {
		e, err := sqlitedialect.ScanLedger(rows)
		if err != nil {
			return nil, err
		}
		t.ledger = &e
	}
	if err := next(); err != nil { // the columns
		return nil, err
	}
	for rows.Next() {
		var col, typ string
		if err := rows.Scan(&col, &typ); err != nil {
			return nil, err
		}
		t.columns[col] = typ
	}
	if err := next(); err != nil { // the indexes
		return nil, err
	}
	for rows.Next() {
		var idx, col string
		if err := rows.Scan(&idx, &col); err != nil {
			return nil, err
		}
		t.indexes[idx] = append(t.indexes[idx], col)
	}
	return t, rows.Close()
}

// apply plans step s onto the script.
func (t *table) apply(sc *script, obj *schema.Object, s schema.Step) error {
	switch s.Kind {
	case schema.StepCreateTable:
		return t.createTable(sc, obj)
	case schema.StepAddField:
		if s.Field == nil {
			return fmt.Errorf("step has no field")
		}
		if _, ok := t.columns[s.Field.Name]; ok {
			return nil
		}
		return t.addColumn(sc, obj, *s.Field, true)
	case schema.StepDropField:
		if _, ok := t.columns[s.Target]; !ok {
			return nil
		}
		t.dropColumn(sc, obj, s.Target)
		return nil
	case schema.StepChangeField:
		if s.Field == nil {
			return fmt.Errorf("step has no field")
		}
		return t.changeField(sc, obj, s)
	case schema.StepAddIndex:
		if s.Index == nil {
			return fmt.Errorf("step has no index")
		}
		t.createIndex(sc, obj, *s.Index)
		return nil
	case schema.StepDropIndex:
		name := s.Target
		if s.Index != nil {
			name = s.Index.Name
		}
		physical := schema.PhysicalIndexName(obj.Name, name)
		sc.add(`DROP INDEX IF EXISTS ` + quote(physical))
		delete(t.indexes, physical)
		return nil
	default:
		return fmt.Errorf("unknown step kind %q", s.Kind)
	}
}

// createTable creates obj's table with every column and index. On a table
// that exists it adds whatever columns and indexes are missing instead.
func (t *table) createTable(sc *script, obj *schema.Object) error {
	if !t.exists() {
		cols := make([]string, 0, 4+len(obj.Fields))
		for _, f := range driversql.Fields(obj) {
			def, err := columnDef(f)
			if err != nil {
				return err
			}
			if f.Name == schema.FieldID {
				// A PRIMARY KEY other than INTEGER may hold NULL unless told.
				def += " PRIMARY KEY NOT NULL"
			}
			cols = append(cols, def)
			t.columns[f.Name] = columnTypes[f.Type]
		}
		sc.add(`CREATE TABLE IF NOT EXISTS ` + quote(obj.Name) + ` (` + strings.Join(cols, ", ") + `)`)
	}
	for _, f := range driversql.Mendable(obj) {
		if _, ok := t.columns[f.Name]; !ok {
			if err := t.addColumn(sc, obj, f, true); err != nil {
				return err
			}
		}
	}
	for _, idx := range obj.AllIndexes() {
		t.createIndex(sc, obj, idx)
	}
	return nil
}

func columnDef(f schema.Field) (string, error) {
	typ, err := columnType(f.Type)
	if err != nil {
		return "", fmt.Errorf("field %s: %w", f.Name, err)
	}
	return quote(f.Name) + " " + typ, nil
}

// addColumn adds f's column. With fill, a required field with a default
// gets the default in the rows that exist: the service checks required
// fields only on write, so rows written before must not be left without.
func (t *table) addColumn(sc *script, obj *schema.Object, f schema.Field, fill bool) error {
	def, err := columnDef(f)
	if err != nil {
		return err
	}
	sc.add(`ALTER TABLE ` + quote(obj.Name) + ` ADD COLUMN ` + def)
	t.columns[f.Name] = columnTypes[f.Type]
	if !fill {
		return nil
	}
	return backfill(sc, obj, f)
}

// backfill sets a required field's default where the column is NULL; it
// does nothing for a field that is optional or has no default.
func backfill(sc *script, obj *schema.Object, f schema.Field) error {
	if !f.Required || f.Default == nil {
		return nil
	}
	v, err := sq.Encode(f.Type, f.Default)
	if err != nil {
		return fmt.Errorf("field %s default: %w", f.Name, err)
	}
	col := quote(f.Name)
	sc.add(`UPDATE `+quote(obj.Name)+` SET `+col+` = ? WHERE `+col+` IS NULL`, v)
	return nil
}

// dropColumn drops the field's column after the indexes that include it:
// the server refuses to drop an indexed column.
func (t *table) dropColumn(sc *script, obj *schema.Object, field string) {
	var names []string
	for name, cols := range t.indexes {
		if slices.Contains(cols, field) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		sc.add(`DROP INDEX ` + quote(name))
		delete(t.indexes, name)
	}
	sc.add(`ALTER TABLE ` + quote(obj.Name) + ` DROP COLUMN ` + quote(field))
	delete(t.columns, field)
}

// changeField applies a change of a field's definition. A new type replaces
// the column (its values are lost; the step is destructive) and recreates
// the indexes that include it; the declared type tells whether that is done
// already. A field that becomes required gets its default where it is NULL.
// Anything else is metadata only.
func (t *table) changeField(sc *script, obj *schema.Object, s schema.Step) error {
	f := *s.Field
	want, err := columnType(f.Type)
	if err != nil {
		return err
	}
	got, ok := t.columns[f.Name]
	switch {
	case !ok:
		if err := t.addColumn(sc, obj, f, false); err != nil {
			return err
		}
	case !strings.EqualFold(got, want):
		t.dropColumn(sc, obj, f.Name)
		if err := t.addColumn(sc, obj, f, false); err != nil {
			return err
		}
		for _, idx := range driversql.IndexesOn(obj, f.Name) {
			t.createIndex(sc, obj, idx)
		}
	}
	if s.Previous != nil && !s.Previous.Required {
		return backfill(sc, obj, f)
	}
	return nil
}

// createIndex creates idx unless an index of its name exists.
func (t *table) createIndex(sc *script, obj *schema.Object, idx schema.Index) {
	name := schema.IndexName(obj.Name, idx)
	if _, ok := t.indexes[name]; ok {
		return
	}
	cols := make([]string, len(idx.Fields))
	for i, f := range idx.Fields {
		cols[i] = quote(f)
	}
	unique := ""
	if idx.Unique {
		unique = "UNIQUE "
	}
	sc.add(`CREATE ` + unique + `INDEX IF NOT EXISTS ` + quote(name) + ` ON ` + quote(obj.Name) + ` (` + strings.Join(cols, ", ") + `)`)
	t.indexes[name] = slices.Clone(idx.Fields)
}

// DropObject drops the object's table and, with it, its indexes, and
// leaves its tombstone in the ledger, as one script.
func (d *Driver) DropObject(ctx context.Context, name string) error {
	if err := d.check(); err != nil {
		return err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	var s script
	s.add(`DROP TABLE IF EXISTS ` + quote(name))
	s.add(sqlitedialect.LedgerDDL)
	s.add(sqlitedialect.LedgerTombstone, name, time.Now().UnixMicro())
	if err := s.exec(ctx, d.db, s.len(), commit); err != nil {
		return fmt.Errorf("driverturso: drop %s: %w", name, mapError(ctx, nil, err))
	}
	return nil
}

// Ledger reads the schema ledger.
func (d *Driver) Ledger(ctx context.Context) ([]driver.LedgerEntry, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	entries, err := sqlitedialect.ReadLedger(ctx, d.db)
	if err != nil && !errors.Is(err, driver.ErrNoLedger) {
		return nil, fmt.Errorf("driverturso: ledger: %w", mapError(ctx, nil, err))
	}
	return entries, err
}

// Check compares obj's table with obj.
func (d *Driver) Check(ctx context.Context, obj *schema.Object) error {
	if err := d.check(); err != nil {
		return err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	cols, err := sqlitedialect.TableColumns(ctx, d.db, obj.Name)
	if err != nil {
		return fmt.Errorf("driverturso: check %s: %w", obj.Name, mapError(ctx, nil, err))
	}
	return sqlitedialect.Drift(obj, cols)
}
