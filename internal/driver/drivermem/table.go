package drivermem

import (
	"fmt"
	"maps"
	"slices"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// table is one object's table. Stored records are never changed in place:
// a write stores a new map, so a clone of the table can share them, and a
// reader can copy one out while holding only the read lock.
type table struct {
	name    string
	columns map[string]string // object field → field type
	// indexes are in creation order, so that a write breaking two unique
	// indexes always reports the same one.
	indexes []*index
	rows    map[string]driver.Record
}

// index is an index of a table. Only unique indexes hold keys: the memory
// engine scans for queries, so a plain index is kept only so that steps and
// convergence behave as in the SQL engines.
type index struct {
	def  schema.Index
	keys map[string]string // unique key → id of the record holding it
}

func newTable(obj *schema.Object) *table {
	t := &table{name: obj.Name, columns: make(map[string]string, len(obj.Fields)), rows: make(map[string]driver.Record)}
	for _, f := range obj.Fields {
		t.columns[f.Name] = f.Type
	}
	return t
}

// drift compares t (nil: no table) with obj: every field needs its
// column, of its type (the system fields every table has).
func (t *table) drift(obj *schema.Object) error {
	if t == nil {
		return driver.MissingTable(obj.Name)
	}
	for _, f := range obj.Fields {
		typ, ok := t.columns[f.Name]
		if !ok {
			return driver.Drift(obj.Name, "field "+f.Name+" has no column")
		}
		if typ != f.Type {
			return driver.Drift(obj.Name, "the column of field "+f.Name+" is not of type "+f.Type)
		}
	}
	return nil
}

// clone returns a copy that can be changed without changing t, for a batch
// or a migration that must apply whole or not at all.
func (t *table) clone() *table {
	c := &table{name: t.name, columns: maps.Clone(t.columns), rows: maps.Clone(t.rows)}
	for _, idx := range t.indexes {
		c.indexes = append(c.indexes, &index{def: idx.def, keys: maps.Clone(idx.keys)})
	}
	return c
}

// typeOf returns the field type of a system or object field.
func (t *table) typeOf(field string) (string, bool) {
	if typ, ok := systemTypes[field]; ok {
		return typ, true
	}
	typ, ok := t.columns[field]
	return typ, ok
}

func (t *table) insert(rec driver.Record) (driver.Record, error) {
	r := make(driver.Record, len(rec))
	for k, v := range rec {
		nv, err := t.value(k, v)
		if err != nil {
			return nil, err
		}
		if nv != nil {
			r[k] = nv
		}
	}
	id, _ := r[schema.FieldID].(string)
	if id == "" {
		return nil, fmt.Errorf("drivermem: insert into %s: the record has no id", t.name)
	}
	if _, ok := t.rows[id]; ok {
		return nil, fmt.Errorf("drivermem: insert %s %q: %w", t.name, id, driver.ErrAlreadyExists)
	}
	if err := t.checkUnique(id, r); err != nil {
		return nil, err
	}
	t.put(id, nil, r)
	return r, nil
}

func (t *table) update(id string, set driver.Record, ifETag string) (driver.Record, error) {
	old, ok := t.rows[id]
	if !ok {
		return nil, fmt.Errorf("drivermem: update %s %q: %w", t.name, id, driver.ErrNotFound)
	}
	if ifETag != "" && old[schema.FieldETag] != ifETag {
		return nil, fmt.Errorf("drivermem: update %s %q: %w", t.name, id, driver.ErrEtagMismatch)
	}
	r := maps.Clone(old)
	for k, v := range set {
		if k == schema.FieldID {
			if v != id {
				return nil, fmt.Errorf("drivermem: update %s %q: the id cannot change", t.name, id)
			}
			continue
		}
		nv, err := t.value(k, v)
		if err != nil {
			return nil, err
		}
		if nv == nil {
			delete(r, k)
		} else {
			r[k] = nv
		}
	}
	if err := t.checkUnique(id, r); err != nil {
		return nil, err
	}
	t.put(id, old, r)
	return r, nil
}

func (t *table) delete(id, ifETag string) error {
	old, ok := t.rows[id]
	if !ok {
		return fmt.Errorf("drivermem: delete %s %q: %w", t.name, id, driver.ErrNotFound)
	}
	if ifETag != "" && old[schema.FieldETag] != ifETag {
		return fmt.Errorf("drivermem: delete %s %q: %w", t.name, id, driver.ErrEtagMismatch)
	}
	t.put(id, old, nil)
	return nil
}

// value checks and normalizes the value of field for storing.
func (t *table) value(field string, v any) (any, error) {
	typ, ok := t.typeOf(field)
	if !ok {
		return nil, fmt.Errorf("drivermem: %s has no field %q", t.name, field)
	}
	nv, err := normalize(typ, v)
	if err != nil {
		return nil, fmt.Errorf("drivermem: %s.%s: %w", t.name, field, err)
	}
	return nv, nil
}

// checkUnique reports the first unique index r (to be stored as id) would
// duplicate.
func (t *table) checkUnique(id string, r driver.Record) error {
	for _, idx := range t.indexes {
		if idx.keys == nil {
			continue
		}
		if key, ok := uniqueKey(r, idx.def.Fields); ok {
			if owner, taken := idx.keys[key]; taken && owner != id {
				return t.violation(idx)
			}
		}
	}
	return nil
}

func (t *table) violation(idx *index) error {
	return &driver.UniqueViolationError{Object: t.name, Fields: slices.Clone(idx.def.Fields)}
}

// put replaces record id's old version (nil: none) with r (nil: deleted),
// keeping the unique keys in step.
func (t *table) put(id string, old, r driver.Record) {
	for _, idx := range t.indexes {
		if idx.keys == nil {
			continue
		}
		if key, ok := uniqueKey(old, idx.def.Fields); ok && idx.keys[key] == id {
			delete(idx.keys, key)
		}
		if key, ok := uniqueKey(r, idx.def.Fields); ok {
			idx.keys[key] = id
		}
	}
	if r == nil {
		delete(t.rows, id)
	} else {
		t.rows[id] = r
	}
}

// build fills idx from the stored records; a unique index over duplicates
// fails, as CREATE UNIQUE INDEX does.
func (t *table) build(idx *index) error {
	if !idx.def.Unique {
		return nil
	}
	idx.keys = make(map[string]string, len(t.rows))
	for id, r := range t.rows {
		key, ok := uniqueKey(r, idx.def.Fields)
		if !ok {
			continue
		}
		if _, taken := idx.keys[key]; taken {
			return t.violation(idx)
		}
		idx.keys[key] = id
	}
	return nil
}

// rebuild rebuilds every index over field after its values changed.
func (t *table) rebuild(field string) error {
	for _, idx := range t.indexes {
		if slices.Contains(idx.def.Fields, field) {
			if err := t.build(idx); err != nil {
				return err
			}
		}
	}
	return nil
}

// setAll sets field to v in every record where fill says so (v nil clears
// it), storing new maps.
func (t *table) setAll(field string, v any, fill func(old any) bool) {
	for id, r := range t.rows {
		old, has := r[field]
		if !fill(old) || (v == nil && !has) {
			continue
		}
		n := maps.Clone(r)
		if v == nil {
			delete(n, field)
		} else {
			n[field] = copyJSON(v)
		}
		t.rows[id] = n
	}
}

// apply applies one migration step. A step already in effect is skipped,
// so that re-applying a plan converges. create_table is handled by Migrate.
func (t *table) apply(step schema.Step) error {
	switch step.Kind {
	case schema.StepAddField:
		f := step.Field
		if f == nil {
			return fmt.Errorf("add_field %q without a field", step.Target)
		}
		if _, ok := t.columns[f.Name]; ok {
			return nil
		}
		t.columns[f.Name] = f.Type
		// Records made before have no value; a required field gets its
		// default so that they satisfy it.
		if f.Required && f.Default != nil {
			return t.backfill(*f)
		}
	case schema.StepDropField:
		name := step.Target
		if _, ok := t.columns[name]; !ok {
			return nil
		}
		t.indexes = slices.DeleteFunc(t.indexes, func(idx *index) bool { return slices.Contains(idx.def.Fields, name) })
		delete(t.columns, name)
		t.setAll(name, nil, func(any) bool { return true })
	case schema.StepChangeField:
		f := step.Field
		if f == nil {
			return fmt.Errorf("change_field %q without a field", step.Target)
		}
		typ, ok := t.columns[f.Name]
		if !ok {
			return fmt.Errorf("change_field: %s has no field %q", t.name, f.Name)
		}
		if typ != f.Type {
			// The column is dropped and added again: its values are gone.
			t.columns[f.Name] = f.Type
			t.setAll(f.Name, nil, func(any) bool { return true })
			if err := t.rebuild(f.Name); err != nil {
				return err
			}
		}
		// Only a field that becomes required gets its default: a retyped
		// field that was required already loses its values like any other.
		if f.Required && f.Default != nil && step.Previous != nil && !step.Previous.Required {
			return t.backfill(*f)
		}
	case schema.StepAddIndex:
		if step.Index == nil {
			return fmt.Errorf("add_index %q without an index", step.Target)
		}
		if slices.ContainsFunc(t.indexes, func(idx *index) bool { return idx.def.Name == step.Index.Name }) {
			return nil
		}
		for _, f := range step.Index.Fields {
			if typ, ok := t.typeOf(f); !ok || f == schema.FieldID || f == schema.FieldETag || typ == schema.TypeJSON {
				return fmt.Errorf("add_index %q: %s has no indexable field %q", step.Index.Name, t.name, f)
			}
		}
		idx := &index{def: schema.Index{Name: step.Index.Name, Fields: slices.Clone(step.Index.Fields), Unique: step.Index.Unique}}
		if err := t.build(idx); err != nil {
			return err
		}
		t.indexes = append(t.indexes, idx)
	case schema.StepDropIndex:
		name := step.Target
		if step.Index != nil {
			name = step.Index.Name
		}
		t.indexes = slices.DeleteFunc(t.indexes, func(idx *index) bool { return idx.def.Name == name })
	default:
		return fmt.Errorf("unknown step kind %q", step.Kind)
	}
	return nil
}

// backfill gives f's default to the records where f is NULL.
func (t *table) backfill(f schema.Field) error {
	v, err := normalize(f.Type, f.Default)
	if err != nil {
		return fmt.Errorf("default of %s: %w", f.Name, err)
	}
	t.setAll(f.Name, v, func(old any) bool { return old == nil })
	return t.rebuild(f.Name)
}
