package driversql

import (
	"fmt"
	"strings"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// Order is a query's order with the id tiebreaker appended, so that every
// record has a distinct position and keyset paging never skips or repeats
// one.
func Order(order []driver.OrderBy) []driver.OrderBy {
	out := make([]driver.OrderBy, 0, len(order)+1)
	out = append(out, order...)
	return append(out, driver.OrderBy{Field: schema.FieldID})
}

// OrderBy renders the ORDER BY list of order (from Order). NULLs are the
// smallest value, as in drivermem: first ascending, last descending. Both
// engines take the explicit NULLS FIRST / NULLS LAST; SQLite's default
// already agrees, PostgreSQL's is the opposite.
func OrderBy(d Dialect, obj *schema.Object, order []driver.OrderBy) (string, error) {
	var b strings.Builder
	for i, o := range order {
		if _, err := orderable(obj, o.Field); err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.Quote(o.Field))
		if o.Desc {
			b.WriteString(" DESC NULLS LAST")
		} else {
			b.WriteString(" ASC NULLS FIRST")
		}
	}
	return b.String(), nil
}

// orderable returns the type of field, a field of obj that has an order
// (every type but json).
func orderable(obj *schema.Object, field string) (string, error) {
	typ, ok := FieldType(obj, field)
	if !ok {
		return "", fmt.Errorf("driversql: %s has no field %q", obj.Name, field)
	}
	if typ == schema.TypeJSON {
		return "", fmt.Errorf("driversql: %s.%s: json fields have no order", obj.Name, field)
	}
	return typ, nil
}

// After renders the keyset predicate "comes after the position after" in
// order (from Order), with after holding one value per key (nil for NULL).
// It is the lexicographic expansion
//
//	k1 ≻ a1 OR (k1 ≐ a1 AND k2 ≻ a2) OR …
//
// where ≐ is IS NULL for a NULL position value and = otherwise, and ≻ means
// "strictly later in this key's direction" with NULL the smallest value:
//
//	ascending,  a = NULL:  k IS NOT NULL
//	ascending,  a ≠ NULL:  k > a             (a NULL k is earlier)
//	descending, a = NULL:  nothing is later  (the term is dropped)
//	descending, a ≠ NULL:  (k < a OR k IS NULL)
//
// No NOT is applied above these, so an unknown comparison with a NULL
// column counts as false, which is right for each of them. When the first
// key is ascending and a1 is not NULL, the redundant "k1 >= a1 AND …" is
// added for the index.
func After(d Dialect, obj *schema.Object, order []driver.OrderBy, after []any, args *Args) (string, error) {
	if len(after) != len(order) {
		return "", fmt.Errorf("driversql: keyset position has %d values for %d order keys", len(after), len(order))
	}
	cols := make([]string, len(order))
	vals := make([]any, len(order))
	for i, o := range order {
		typ, err := orderable(obj, o.Field)
		if err != nil {
			return "", err
		}
		v, err := d.Encode(typ, after[i])
		if err != nil {
			return "", fmt.Errorf("driversql: %s.%s: keyset position: %w", obj.Name, o.Field, err)
		}
		cols[i], vals[i] = d.Quote(o.Field), v
	}
	// Implied by the alternatives, but a plain range on the first key lets
	// the database seek in an index instead of filtering every earlier row.
	// It comes first in the text, so it is bound first.
	var bound, closing string
	if len(order) > 1 && !order[0].Desc && vals[0] != nil {
		bound, closing = "("+cols[0]+" >= "+args.Add(vals[0])+" AND ", ")"
	}
	var alts []string
	for i, o := range order {
		if o.Desc && vals[i] == nil {
			continue // nothing is later than NULL descending
		}
		// Placeholders are bound in the order they appear: SQLite's ? are
		// positional.
		conj := make([]string, 0, i+1)
		for j := range i {
			if vals[j] == nil {
				conj = append(conj, cols[j]+" IS NULL")
			} else {
				conj = append(conj, cols[j]+" = "+args.Add(vals[j]))
			}
		}
		conj = append(conj, laterThan(cols[i], o.Desc, vals[i], args))
		alts = append(alts, "("+strings.Join(conj, " AND ")+")")
	}
	if len(alts) == 0 {
		return "FALSE", nil
	}
	return bound + "(" + strings.Join(alts, " OR ") + ")" + closing, nil
}

// laterThan renders "col is strictly later than v" in a key's direction;
// After has already dropped the descending NULL case, where nothing is.
func laterThan(col string, desc bool, v any, args *Args) string {
	switch {
	case !desc && v == nil:
		return col + " IS NOT NULL"
	case !desc:
		return col + " > " + args.Add(v)
	default:
		return "(" + col + " < " + args.Add(v) + " OR " + col + " IS NULL)"
	}
}
