package driversql

import (
	"slices"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// IndexByName returns the index of obj whose physical name is name, so a
// constraint error naming an index can be reported with its fields.
func IndexByName(obj *schema.Object, name string) (schema.Index, bool) {
	for _, idx := range obj.AllIndexes() {
		if schema.IndexName(obj.Name, idx) == name {
			return idx, true
		}
	}
	return schema.Index{}, false
}

// UniqueViolation reports a write that collided on the unique index with
// these fields. An engine that names only columns (SQLite) passes them; the
// result is the same error either way.
func UniqueViolation(obj *schema.Object, fields []string) *driver.UniqueViolationError {
	return &driver.UniqueViolationError{Object: obj.Name, Fields: slices.Clone(fields)}
}

// IndexesOn returns the indexes of obj that include field, which must be
// recreated after the field's column is dropped and added again.
func IndexesOn(obj *schema.Object, field string) []schema.Index {
	var out []schema.Index
	for _, idx := range obj.AllIndexes() {
		if slices.Contains(idx.Fields, field) {
			out = append(out, idx)
		}
	}
	return out
}
