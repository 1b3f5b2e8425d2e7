package schema

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of an object definition, the same as the public contract's.
const (
	MaxFields            = 500
	MaxIndexes           = 64
	MaxIndexFields       = 16
	MaxOptions           = 500
	MaxOptionLength      = 200
	MaxDescriptionLength = 1000
)

// DateLayout is the layout of date values: dates travel as strings so that
// no engine or time zone can shift them by a day.
const DateLayout = "2006-01-02"

// namePattern is the identifier rule of objects, fields and indexes. It keeps
// names valid unquoted SQL identifiers within PostgreSQL's 63 bytes.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Violation is one problem of a definition: Field is the path of the
// offending element as the public contract names it (`fields[2].options`),
// so the service can report it as a google.rpc.BadRequest field violation.
type Violation struct {
	Field       string
	Description string
}

// ValidName reports whether s is a valid object, field or index name.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// IsSystemField reports whether name is a field every record has.
func IsSystemField(name string) bool {
	switch name {
	case FieldID, FieldCreatedAt, FieldUpdatedAt, FieldETag:
		return true
	}
	return false
}

// KnownType reports whether t is a field type.
func KnownType(t string) bool {
	switch t {
	case TypeText, TypeInteger, TypeNumber, TypeBoolean, TypeTimestamp, TypeDate, TypeJSON, TypeSelect:
		return true
	}
	return false
}

// Validate checks o against every rule a definition must satisfy before it
// is planned and applied, and returns all the problems found (nil when
// valid), so a caller sees every mistake at once rather than one per try.
func (o *Object) Validate() []Violation {
	var v violations
	if !ValidName(o.Name) {
		v.add("name", "must match ^[a-z][a-z0-9_]{0,62}$")
	}
	if len(o.Fields) > MaxFields {
		v.add("fields", fmt.Sprintf("must have at most %d fields", MaxFields))
	}
	seen := make(map[string]int, len(o.Fields))
	for i, f := range o.Fields {
		validateField(&v, fmt.Sprintf("fields[%d]", i), f)
		if f.Name == "" {
			continue
		}
		if j, dup := seen[f.Name]; dup {
			v.add(fmt.Sprintf("fields[%d].name", i), fmt.Sprintf("%q is already the name of fields[%d]", f.Name, j))
		} else {
			seen[f.Name] = i
		}
	}
	validateIndexes(&v, o)
	return v.list
}

type violations struct{ list []Violation }

func (v *violations) add(field, description string) {
	v.list = append(v.list, Violation{Field: field, Description: description})
}

func validateField(v *violations, path string, f Field) {
	switch {
	case !ValidName(f.Name):
		v.add(path+".name", "must match ^[a-z][a-z0-9_]{0,62}$")
	case IsSystemField(f.Name):
		v.add(path+".name", fmt.Sprintf("%q is a system field every record has", f.Name))
	}
	if !KnownType(f.Type) {
		v.add(path+".type", fmt.Sprintf("unknown type %q; one of text, integer, number, boolean, timestamp, date, json, select", f.Type))
		return
	}
	if utf8.RuneCountInString(f.Description) > MaxDescriptionLength {
		v.add(path+".description", fmt.Sprintf("must be at most %d characters", MaxDescriptionLength))
	}
	switch {
	case f.MaxLength < 0:
		v.add(path+".max_length", "must not be negative")
	case f.MaxLength > 0 && f.Type != TypeText && f.Type != TypeSelect:
		v.add(path+".max_length", fmt.Sprintf("applies only to text and select fields, not %s", f.Type))
	}
	if f.Type == TypeSelect {
		validateOptions(v, path, f)
	} else if len(f.Options) > 0 {
		v.add(path+".options", fmt.Sprintf("apply only to select fields, not %s", f.Type))
	}
	if f.Type == TypeJSON && (f.Unique || f.Indexed) {
		// JSON values have no total order or equality every engine agrees on.
		v.add(path+".unique", "a json field cannot be unique or indexed")
	}
	if f.Default != nil {
		if err := checkDefault(f); err != "" {
			v.add(path+".default_value", err)
		}
	}
}

func validateOptions(v *violations, path string, f Field) {
	if len(f.Options) == 0 {
		v.add(path+".options", "a select field needs at least one option")
		return
	}
	if len(f.Options) > MaxOptions {
		v.add(path+".options", fmt.Sprintf("must have at most %d options", MaxOptions))
	}
	seen := make(map[string]bool, len(f.Options))
	for k, opt := range f.Options {
		p := fmt.Sprintf("%s.options[%d]", path, k)
		n := utf8.RuneCountInString(opt)
		switch {
		case opt == "":
			v.add(p, "must not be empty")
		case n > MaxOptionLength:
			v.add(p, fmt.Sprintf("must be at most %d characters", MaxOptionLength))
		case f.MaxLength > 0 && n > f.MaxLength:
			v.add(p, fmt.Sprintf("is longer than max_length %d", f.MaxLength))
		case seen[opt]:
			v.add(p, fmt.Sprintf("%q is listed twice", opt))
		}
		seen[opt] = true
	}
}

// checkDefault returns why f.Default is not a valid value of f, or "".
func checkDefault(f Field) string {
	d := f.Default
	switch f.Type {
	case TypeText, TypeSelect:
		s, ok := d.(string)
		if !ok {
			return fmt.Sprintf("must be a string for a %s field, not %T", f.Type, d)
		}
		if f.MaxLength > 0 && utf8.RuneCountInString(s) > f.MaxLength {
			return fmt.Sprintf("is longer than max_length %d", f.MaxLength)
		}
		if f.Type == TypeSelect && !slices.Contains(f.Options, s) {
			return fmt.Sprintf("%q is not one of the options", s)
		}
	case TypeDate:
		s, ok := d.(string)
		if !ok {
			return fmt.Sprintf("must be a YYYY-MM-DD string for a date field, not %T", d)
		}
		if _, err := time.Parse(DateLayout, s); err != nil {
			return fmt.Sprintf("%q is not a YYYY-MM-DD date", s)
		}
	case TypeInteger:
		if _, ok := d.(int64); !ok {
			return fmt.Sprintf("must be an int64 for an integer field, not %T", d)
		}
	case TypeNumber:
		n, ok := d.(float64)
		if !ok {
			return fmt.Sprintf("must be a float64 for a number field, not %T", d)
		}
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return "must be a finite number"
		}
	case TypeBoolean:
		if _, ok := d.(bool); !ok {
			return fmt.Sprintf("must be a bool for a boolean field, not %T", d)
		}
	case TypeTimestamp:
		if _, ok := d.(time.Time); !ok {
			return fmt.Sprintf("must be a time.Time for a timestamp field, not %T", d)
		}
	case TypeJSON:
		if !isJSONValue(d) {
			return fmt.Sprintf("must be a decoded JSON value (map[string]any, []any, string, float64, bool), not %T", d)
		}
	}
	return ""
}

// isJSONValue reports whether v is what encoding/json decodes into an any.
func isJSONValue(v any) bool {
	switch x := v.(type) {
	case nil, string, bool:
		return true
	case float64:
		return !math.IsNaN(x) && !math.IsInf(x, 0)
	case []any:
		for _, e := range x {
			if !isJSONValue(e) {
				return false
			}
		}
		return true
	case map[string]any:
		for _, e := range x {
			if !isJSONValue(e) {
				return false
			}
		}
		return true
	}
	return false
}

func validateIndexes(v *violations, o *Object) {
	if len(o.Indexes) > MaxIndexes {
		v.add("indexes", fmt.Sprintf("must have at most %d indexes", MaxIndexes))
	}
	derived := make(map[string]string)
	types := make(map[string]string, len(o.Fields))
	for _, f := range o.Fields {
		types[f.Name] = f.Type
		derived[f.Name+uniqueIndexSuffix] = f.Name
		derived[f.Name+plainIndexSuffix] = f.Name
	}
	types[FieldCreatedAt] = TypeTimestamp
	types[FieldUpdatedAt] = TypeTimestamp
	seen := make(map[string]int, len(o.Indexes))
	for i, idx := range o.Indexes {
		path := fmt.Sprintf("indexes[%d]", i)
		switch j, dup := seen[idx.Name]; {
		case !ValidName(idx.Name):
			v.add(path+".name", "must match ^[a-z][a-z0-9_]{0,62}$")
		case dup:
			v.add(path+".name", fmt.Sprintf("%q is already the name of indexes[%d]", idx.Name, j))
		case derived[idx.Name] != "":
			// Reserved even when the field is neither unique nor indexed,
			// so that turning that on later cannot collide.
			v.add(path+".name", fmt.Sprintf("%q is reserved for the index of field %q", idx.Name, derived[idx.Name]))
		default:
			seen[idx.Name] = i
		}
		switch {
		case len(idx.Fields) == 0:
			v.add(path+".fields", "an index needs at least one field")
		case len(idx.Fields) > MaxIndexFields:
			v.add(path+".fields", fmt.Sprintf("must have at most %d fields", MaxIndexFields))
		}
		inIndex := make(map[string]bool, len(idx.Fields))
		for k, name := range idx.Fields {
			p := fmt.Sprintf("%s.fields[%d]", path, k)
			typ, ok := types[name]
			switch {
			case !ok:
				v.add(p, fmt.Sprintf("%q is not a field of the object (nor created_at or updated_at)", name))
			case typ == TypeJSON:
				v.add(p, fmt.Sprintf("%q is a json field, which cannot be indexed", name))
			case inIndex[name]:
				v.add(p, fmt.Sprintf("%q is listed twice", name))
			}
			inIndex[name] = true
		}
	}
}

// ReservedObjectName reports whether name collides with an engine's system
// catalogs: PostgreSQL finds its pg_ relations before any table of the
// search path by an unqualified name, and SQLite keeps sqlite_ for its own
// tables. Every engine refuses all of them, so a definition moves between
// engines unchanged. (envplane's own table, driver.LedgerTable, starts
// with an underscore, which no valid name does.)
//
// Names that would collide with the names of envplane's own indexes are
// reserved too: an index is named <object>__<index>_<hash>, so a name
// holding "__" could be another object's index (PostgreSQL puts tables and
// indexes in one namespace), PostgreSQL names a table's primary key
// <table>_pkey, and the indexes of objects "pg" and "sqlite" would start
// with an engine's prefix.
func ReservedObjectName(name string) bool {
	return strings.HasPrefix(name, "pg_") || strings.HasPrefix(name, "sqlite_") ||
		name == "pg" || name == "sqlite" || strings.Contains(name, "__") || strings.HasSuffix(name, "_pkey")
}

// ReservedFieldName reports whether name is a system column of an engine:
// PostgreSQL's (a table cannot have a column of that name) or SQLite's
// rowid aliases (a column of that name hides the row's rowid).
func ReservedFieldName(name string) bool {
	switch name {
	case "oid", "tableoid", "xmin", "xmax", "cmin", "cmax", "ctid", "rowid":
		return true
	}
	return false
}
