// Package schema is the model of an environment's object definitions and the
// planner that turns a change of definition into migration steps. It knows no
// engine: drivers apply the steps to their own database.
package schema

import "time"

// Field types.
const (
	TypeText      = "text"
	TypeInteger   = "integer"
	TypeNumber    = "number"
	TypeBoolean   = "boolean"
	TypeTimestamp = "timestamp"
	TypeDate      = "date"
	TypeJSON      = "json"
	TypeSelect    = "select"
)

// System fields every record has; object fields cannot use these names.
const (
	FieldID        = "id"
	FieldCreatedAt = "created_at"
	FieldUpdatedAt = "updated_at"
	FieldETag      = "etag"
)

// Field is one field of an object.
//
// Default holds a value of the field's Go type: string (text, select, date
// as YYYY-MM-DD), int64 (integer), float64 (number), bool, time.Time
// (timestamp, UTC) or, for json, the decoded JSON value (map[string]any,
// []any, string, float64, bool). nil means no default.
type Field struct {
	Name        string
	Type        string
	Required    bool
	Unique      bool
	Indexed     bool
	MaxLength   int // characters; 0 = unbounded; text and select only
	Options     []string
	Default     any
	Description string
}

// Index is an index over one or more fields.
type Index struct {
	Name   string
	Fields []string
	Unique bool
}

// Object is one object definition: a table in the environment's database.
type Object struct {
	Name        string
	DisplayName string
	Description string
	Fields      []Field
	Indexes     []Index
	Version     int64
	CreateTime  time.Time
	UpdateTime  time.Time
}

// Field returns the named field.
func (o *Object) Field(name string) (Field, bool) {
	for _, f := range o.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

// StepKind names a migration step.
type StepKind string

// Step kinds.
const (
	StepCreateTable StepKind = "create_table"
	StepAddField    StepKind = "add_field"
	StepDropField   StepKind = "drop_field"
	// StepChangeField changes a field's type (drop and re-add the column:
	// the values are lost) or constraints (backfill NULLs with the default
	// when the field becomes required); metadata-only changes (description,
	// default) are steps too but touch no table.
	StepChangeField StepKind = "change_field"
	StepAddIndex    StepKind = "add_index"
	StepDropIndex   StepKind = "drop_index"
)

// Step is one change to an environment's database.
type Step struct {
	Kind   StepKind
	Target string // field or index name; "" for create_table
	// Field is the field as it will be (add_field, change_field) or was
	// (drop_field).
	Field *Field
	// Previous is the field before a change_field.
	Previous *Field
	// Index is the index to add or drop.
	Index       *Index
	Destructive bool
	Description string
}
