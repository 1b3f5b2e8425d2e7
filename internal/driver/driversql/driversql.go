// Package driversql holds the pieces the SQL engines (driversqlite,
// driverpg) share: the WHERE builder over the filter tree, the keyset
// predicate and ORDER BY that implement paging, the column list and the
// mapping of rows to driver.Record. What differs between engines (bind
// parameter markers, identifier quoting, the prefix test, how each field type
// is stored) is behind the small Dialect seam; the statements themselves stay
// written out in each engine's package so the SQL an engine runs can be read
// in one place.
package driversql

import (
	"fmt"
	"strings"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// Dialect is what an engine tells the shared builders. Values only ever
// reach the database as bind parameters; identifiers come from validated
// metadata and are always quoted.
type Dialect interface {
	// Quote quotes an identifier.
	Quote(ident string) string
	// Placeholder renders the n-th bind parameter (1-based).
	Placeholder(n int) string
	// Encode turns v, a value of fieldType's Go type (see
	// schema.Field.Default) or nil, into the value bound for a column of
	// that type.
	Encode(fieldType string, v any) (any, error)
	// Decode turns a value scanned from a column of fieldType back into the
	// field's Go type; nil stays nil.
	Decode(fieldType string, v any) (any, error)
	// Prefix renders a predicate true when the value in column, of
	// fieldType text, select or date (as YYYY-MM-DD), starts with prefix,
	// byte for byte, binding whatever it needs through args. It must be
	// false (or NULL) when the column is NULL.
	Prefix(column, fieldType, prefix string, args *Args) string
}

// Args collects the bind parameters of one statement in the order their
// placeholders appear.
type Args struct {
	d    Dialect
	vals []any
}

// NewArgs starts an empty parameter list for d.
func NewArgs(d Dialect) *Args { return &Args{d: d} }

// Add binds v and returns its placeholder.
func (a *Args) Add(v any) string {
	a.vals = append(a.vals, v)
	return a.d.Placeholder(len(a.vals))
}

// Values returns the parameters bound so far.
func (a *Args) Values() []any { return a.vals }

// systemFields are the columns every table has, before the object's fields,
// with the field type each holds.
var systemFields = []schema.Field{
	{Name: schema.FieldID, Type: schema.TypeText},
	{Name: schema.FieldCreatedAt, Type: schema.TypeTimestamp},
	{Name: schema.FieldUpdatedAt, Type: schema.TypeTimestamp},
	{Name: schema.FieldETag, Type: schema.TypeText},
}

// Fields returns every column of obj's table in table order: the system
// fields, then the object's fields.
func Fields(obj *schema.Object) []schema.Field {
	out := make([]schema.Field, 0, len(systemFields)+len(obj.Fields))
	out = append(out, systemFields...)
	return append(out, obj.Fields...)
}

// Mendable returns the fields whose columns a create over an existing table
// adds when missing: every field but id, which is the primary key and can
// only come with the table.
func Mendable(obj *schema.Object) []schema.Field {
	return Fields(obj)[1:]
}

// Drift compares a table's columns (name → the engine's type of the
// column; an empty map when there is no table) with obj: every system and
// object field needs its column, of the type want gives (compared without
// case; want "" accepts any). It returns nil or a *driver.DriftError naming
// the first field that differs.
func Drift(obj *schema.Object, have map[string]string, want func(schema.Field) string) error {
	if len(have) == 0 {
		return driver.MissingTable(obj.Name)
	}
	for _, f := range Fields(obj) {
		got, ok := have[f.Name]
		if !ok {
			return driver.Drift(obj.Name, "field "+f.Name+" has no column")
		}
		if w := want(f); w != "" && !strings.EqualFold(got, w) {
			return driver.Drift(obj.Name, "the column of field "+f.Name+" is not of type "+f.Type)
		}
	}
	return nil
}

// FieldType returns the type of a system or object field of obj.
func FieldType(obj *schema.Object, name string) (string, bool) {
	for _, f := range systemFields {
		if f.Name == name {
			return f.Type, true
		}
	}
	if f, ok := obj.Field(name); ok {
		return f.Type, true
	}
	return "", false
}

// Columns renders the quoted column list of obj's table in Fields order, the
// list ScanRecord expects.
func Columns(d Dialect, obj *schema.Object) string {
	// Not Fields(obj): every read renders this, and copying the fields
	// cost more than the rest of it.
	b := make([]byte, 0, 16*(len(systemFields)+len(obj.Fields)))
	for i := range systemFields {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, d.Quote(systemFields[i].Name)...)
	}
	for i := range obj.Fields {
		b = append(b, ", "...)
		b = append(b, d.Quote(obj.Fields[i].Name)...)
	}
	return string(b)
}

// Scanner is a row of either database/sql or pgx.
type Scanner interface {
	Scan(dest ...any) error
}

// ScanRecord reads one row selected with Columns(d, obj) into a record.
// NULL columns are left out of the record.
func ScanRecord(d Dialect, obj *schema.Object, row Scanner) (driver.Record, error) {
	return newRecordScanner(d, obj).scan(row)
}

// Rows is a result set of either database/sql or pgx.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// maxPreallocated bounds the records ScanRecords makes room for up front.
const maxPreallocated = 1024

// ScanRecords reads every row of rows, selected with Columns(d, obj), into
// records as ScanRecord does, scanning them all through one set of buffers.
// limit is the query's LIMIT (0: none), room to make up front. The caller
// closes rows.
func ScanRecords(d Dialect, obj *schema.Object, rows Rows, limit int) ([]driver.Record, error) {
	var out []driver.Record
	if limit > 0 {
		out = make([]driver.Record, 0, min(limit, maxPreallocated))
	}
	s := newRecordScanner(d, obj)
	for rows.Next() {
		rec, err := s.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// recordScanner reads rows of obj's table into records: raw holds one
// row's values as the database gives them, dest points at raw's elements.
type recordScanner struct {
	d         Dialect
	obj       *schema.Object
	raw, dest []any
}

func newRecordScanner(d Dialect, obj *schema.Object) recordScanner {
	// Not Fields(obj): this runs once per read, and copying the fields cost
	// more allocation than the row's values (a fifth of a list's bytes).
	n := len(systemFields) + len(obj.Fields)
	buf := make([]any, 2*n)
	s := recordScanner{d: d, obj: obj, raw: buf[:n], dest: buf[n:]}
	for i := range s.raw {
		s.dest[i] = &s.raw[i]
	}
	return s
}

func (s recordScanner) scan(row Scanner) (driver.Record, error) {
	// Whatever a driver leaves alone must not hold the previous row's value.
	clear(s.raw)
	if err := row.Scan(s.dest...); err != nil {
		return nil, err
	}
	rec := make(driver.Record, len(s.raw))
	for i, v := range s.raw {
		if v == nil {
			continue
		}
		var f *schema.Field
		if i < len(systemFields) {
			f = &systemFields[i]
		} else {
			f = &s.obj.Fields[i-len(systemFields)]
		}
		v, err := s.d.Decode(f.Type, v)
		if err != nil {
			return nil, fmt.Errorf("driversql: %s.%s: %w", s.obj.Name, f.Name, err)
		}
		if v != nil {
			rec[f.Name] = v
		}
	}
	return rec, nil
}

// Assignment is one column and the placeholder of the value written to it.
type Assignment struct {
	Column      string // quoted
	Placeholder string
}

// InsertValues binds every column of obj's table from rec (absent fields
// are NULL) and returns the assignments in table order. A key of rec that
// is no field of obj is an error, so a typo cannot silently drop a value;
// so is a missing id, which SQLite would otherwise store as NULL.
func InsertValues(d Dialect, obj *schema.Object, rec driver.Record, args *Args) ([]Assignment, error) {
	if err := checkKeys(obj, rec); err != nil {
		return nil, err
	}
	if rec[schema.FieldID] == nil {
		return nil, fmt.Errorf("driversql: %s: the record has no id", obj.Name)
	}
	fields := Fields(obj)
	out := make([]Assignment, 0, len(fields))
	for _, f := range fields {
		v, err := d.Encode(f.Type, rec[f.Name])
		if err != nil {
			return nil, fmt.Errorf("driversql: %s.%s: %w", obj.Name, f.Name, err)
		}
		out = append(out, Assignment{Column: d.Quote(f.Name), Placeholder: args.Add(v)})
	}
	return out, nil
}

// SetValues binds the fields of set for an UPDATE, in table order. The id
// and created_at never change, so setting them is an error.
func SetValues(d Dialect, obj *schema.Object, set driver.Record, args *Args) ([]Assignment, error) {
	if err := checkKeys(obj, set); err != nil {
		return nil, err
	}
	out := make([]Assignment, 0, len(set))
	for _, f := range Fields(obj) {
		v, ok := set[f.Name]
		if !ok {
			continue
		}
		if f.Name == schema.FieldID || f.Name == schema.FieldCreatedAt {
			return nil, fmt.Errorf("driversql: %s: field %s cannot be updated", obj.Name, f.Name)
		}
		ev, err := d.Encode(f.Type, v)
		if err != nil {
			return nil, fmt.Errorf("driversql: %s.%s: %w", obj.Name, f.Name, err)
		}
		out = append(out, Assignment{Column: d.Quote(f.Name), Placeholder: args.Add(ev)})
	}
	return out, nil
}

// checkKeys reports a key of rec that names no field of obj.
func checkKeys(obj *schema.Object, rec driver.Record) error {
	for k := range rec {
		if _, ok := FieldType(obj, k); !ok {
			return fmt.Errorf("driversql: %s has no field %q", obj.Name, k)
		}
	}
	return nil
}

// Insert renders the INSERT of rec into obj's table and its parameters;
// with returning, it reads the stored record back (RETURNING every column,
// as ScanRecord expects them).
func Insert(d Dialect, obj *schema.Object, rec driver.Record, returning bool) (string, []any, error) {
	args := NewArgs(d)
	vals, err := InsertValues(d, obj, rec, args)
	if err != nil {
		return "", nil, err
	}
	stmt := `INSERT INTO ` + d.Quote(obj.Name) + ` (` + ColumnList(vals) + `) VALUES (` + ValueList(vals) + `)`
	if returning {
		stmt += ` RETURNING ` + Columns(d, obj)
	}
	return stmt, args.Values(), nil
}

// ColumnList renders the columns of as for an INSERT: "a", "b".
func ColumnList(as []Assignment) string {
	return joinAssignments(as, func(a Assignment) string { return a.Column })
}

// ValueList renders the placeholders of as for an INSERT: ?, ?.
func ValueList(as []Assignment) string {
	return joinAssignments(as, func(a Assignment) string { return a.Placeholder })
}

// SetList renders as for an UPDATE: "a" = ?, "b" = ?.
func SetList(as []Assignment) string {
	return joinAssignments(as, func(a Assignment) string { return a.Column + " = " + a.Placeholder })
}

func joinAssignments(as []Assignment, part func(Assignment) string) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = part(a)
	}
	return strings.Join(parts, ", ")
}
