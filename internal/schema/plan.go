package schema

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Plan returns the steps that turn the table of from into the table of to
// (from nil: a new table). Both must be valid. The order is fixed so that
// every engine can apply the steps one by one: index drops first (an engine
// may refuse to drop or retype an indexed column), then field drops, field
// adds, field changes, and index adds last (over the final columns). Within
// a group, steps follow the field or index order of the definition they
// come from. Plan(x, x) is empty.
//
// A step is Destructive when it can lose data or fail on existing rows:
// dropping a field, changing its type (the values are dropped), tightening
// a constraint (required, a shorter or new max_length, fewer options),
// adding a required field without a default, and adding a unique index
// (existing duplicates make it fail). Creating a table is never
// destructive: create_table makes every column and its add_index steps
// meet no rows.
func Plan(from, to *Object) []Step {
	if from == nil {
		return planCreate(to)
	}
	var dropIdx, dropFields, addFields, changes, addIdx []Step
	retyped := make(map[string]bool)
	for _, old := range from.Fields {
		if _, ok := to.Field(old.Name); !ok {
			dropFields = append(dropFields, dropFieldStep(old))
		}
	}
	for _, f := range to.Fields {
		old, ok := from.Field(f.Name)
		if !ok {
			addFields = append(addFields, addFieldStep(f))
			continue
		}
		if step, ok := changeFieldStep(old, f); ok {
			changes = append(changes, step)
		}
		if old.Type != f.Type {
			retyped[f.Name] = true
		}
	}

	before := indexesByName(from.AllIndexes())
	after := indexesByName(to.AllIndexes())
	// An index over a retyped field is rebuilt: the column it covers is
	// dropped and re-added.
	touchesRetyped := func(idx Index) bool {
		return slices.ContainsFunc(idx.Fields, func(name string) bool { return retyped[name] })
	}
	for _, idx := range from.AllIndexes() {
		if next, ok := after[idx.Name]; !ok || !sameIndex(idx, next) || touchesRetyped(idx) {
			dropIdx = append(dropIdx, dropIndexStep(idx))
		}
	}
	for _, idx := range to.AllIndexes() {
		if prev, ok := before[idx.Name]; !ok || !sameIndex(prev, idx) || touchesRetyped(idx) {
			addIdx = append(addIdx, addIndexStep(idx))
		}
	}

	var steps []Step
	for _, group := range [][]Step{dropIdx, dropFields, addFields, changes, addIdx} {
		steps = append(steps, group...)
	}
	return steps
}

func planCreate(to *Object) []Step {
	steps := []Step{{
		Kind:        StepCreateTable,
		Description: fmt.Sprintf("create table %q with %s", to.Name, plural(len(to.Fields), "field")),
	}}
	for _, idx := range to.AllIndexes() {
		step := addIndexStep(idx)
		step.Destructive = false // a new table has no rows to collide
		steps = append(steps, step)
	}
	return steps
}

func addFieldStep(f Field) Step {
	attrs := []string{f.Type}
	destructive := false
	if f.Required {
		if f.Default != nil {
			attrs = append(attrs, "required, existing records get the default "+formatValue(f.Default))
		} else {
			// Existing records have no value for a field that must have one.
			attrs = append(attrs, "required, existing records have no value")
			destructive = true
		}
	}
	return Step{
		Kind:        StepAddField,
		Target:      f.Name,
		Field:       cloneField(f),
		Destructive: destructive,
		Description: fmt.Sprintf("add field %q (%s)", f.Name, strings.Join(attrs, ", ")),
	}
}

func dropFieldStep(f Field) Step {
	return Step{
		Kind:        StepDropField,
		Target:      f.Name,
		Field:       cloneField(f),
		Destructive: true,
		Description: fmt.Sprintf("drop field %q (%s) and its values", f.Name, f.Type),
	}
}

// changeFieldStep describes how f differs from old in anything but Unique
// and Indexed (those are index steps); ok is false when nothing differs.
func changeFieldStep(old, f Field) (step Step, ok bool) {
	var parts []string
	destructive := false
	change := func(d bool, format string, args ...any) {
		parts = append(parts, fmt.Sprintf(format, args...))
		destructive = destructive || d
	}
	if old.Type != f.Type {
		change(true, "type %s → %s, existing values are dropped", old.Type, f.Type)
	}
	switch {
	case !old.Required && f.Required && f.Default != nil:
		change(true, "now required, empty values get the default %s", formatValue(f.Default))
	case !old.Required && f.Required:
		change(true, "now required, existing empty values stay empty")
	case old.Required && !f.Required:
		change(false, "no longer required")
	}
	if old.MaxLength != f.MaxLength {
		tighter := f.MaxLength != 0 && (old.MaxLength == 0 || f.MaxLength < old.MaxLength)
		change(tighter, "max_length %s → %s", formatLength(old.MaxLength), formatLength(f.MaxLength))
	}
	if !slices.Equal(old.Options, f.Options) {
		removed := missingFrom(old.Options, f.Options)
		added := missingFrom(f.Options, old.Options)
		if len(removed) > 0 {
			change(true, "options removed: %s", strings.Join(removed, ", "))
		}
		if len(added) > 0 {
			change(false, "options added: %s", strings.Join(added, ", "))
		}
		if len(removed) == 0 && len(added) == 0 {
			change(false, "options reordered")
		}
	}
	if !valueEqual(old.Default, f.Default) {
		change(false, "default %s → %s", formatValue(old.Default), formatValue(f.Default))
	}
	if old.Description != f.Description {
		change(false, "description changed")
	}
	if len(parts) == 0 {
		return Step{}, false
	}
	return Step{
		Kind:        StepChangeField,
		Target:      f.Name,
		Field:       cloneField(f),
		Previous:    cloneField(old),
		Destructive: destructive,
		Description: fmt.Sprintf("change field %q: %s", f.Name, strings.Join(parts, "; ")),
	}, true
}

func addIndexStep(idx Index) Step {
	kind := "index"
	if idx.Unique {
		kind = "unique index"
	}
	idx = cloneIndex(idx)
	return Step{
		Kind:   StepAddIndex,
		Target: idx.Name,
		Index:  &idx,
		// Existing duplicates make a unique index fail.
		Destructive: idx.Unique,
		Description: fmt.Sprintf("add %s %q on (%s)", kind, idx.Name, strings.Join(idx.Fields, ", ")),
	}
}

func dropIndexStep(idx Index) Step {
	idx = cloneIndex(idx)
	return Step{
		Kind:        StepDropIndex,
		Target:      idx.Name,
		Index:       &idx,
		Description: fmt.Sprintf("drop index %q", idx.Name),
	}
}

// Changed reports whether to differs from from in anything a definition
// holds (names, texts, fields, their order, indexes), ignoring Version and
// the times. It is wider than Plan: a new display name needs no step but is
// still a new version of the definition.
func Changed(from, to *Object) bool {
	if from == nil || to == nil {
		return from != to
	}
	return from.Name != to.Name ||
		from.DisplayName != to.DisplayName ||
		from.Description != to.Description ||
		!slices.EqualFunc(from.Fields, to.Fields, fieldEqual) ||
		!slices.EqualFunc(from.Indexes, to.Indexes, sameIndex)
}

func fieldEqual(a, b Field) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Required == b.Required &&
		a.Unique == b.Unique && a.Indexed == b.Indexed && a.MaxLength == b.MaxLength &&
		slices.Equal(a.Options, b.Options) && valueEqual(a.Default, b.Default) &&
		a.Description == b.Description
}

func sameIndex(a, b Index) bool {
	return a.Name == b.Name && a.Unique == b.Unique && slices.Equal(a.Fields, b.Fields)
}

// valueEqual compares default values; times compare as instants, whatever
// their location.
func valueEqual(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return reflect.DeepEqual(a, b)
}

func indexesByName(list []Index) map[string]Index {
	m := make(map[string]Index, len(list))
	for _, idx := range list {
		m[idx.Name] = idx
	}
	return m
}

// missingFrom returns the elements of a not in b, in a's order.
func missingFrom(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func cloneField(f Field) *Field {
	f.Options = slices.Clone(f.Options)
	return &f
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "none"
	case string:
		return fmt.Sprintf("%q", x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

func formatLength(n int) string {
	if n == 0 {
		return "unbounded"
	}
	return fmt.Sprint(n)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
