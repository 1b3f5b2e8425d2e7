package drivermem

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// match is a compiled filter.
type match func(driver.Record) bool

// compile turns e into a predicate over t's records, checking every field
// and value once rather than per record. The logic is two-valued: a NULL
// field fails every comparison but "!= value", so Not negates exactly.
func (t *table) compile(e filter.Expr) (match, error) {
	switch x := e.(type) {
	case nil:
		return func(driver.Record) bool { return true }, nil
	case filter.And:
		return t.compileTerms(x.Terms, true)
	case *filter.And:
		return t.compileTerms(x.Terms, true)
	case filter.Or:
		return t.compileTerms(x.Terms, false)
	case *filter.Or:
		return t.compileTerms(x.Terms, false)
	case filter.Not:
		return t.compileNot(x.Term)
	case *filter.Not:
		return t.compileNot(x.Term)
	case filter.Compare:
		return t.compileCompare(x)
	case *filter.Compare:
		return t.compileCompare(*x)
	case filter.Prefix:
		return t.compilePrefix(x)
	case *filter.Prefix:
		return t.compilePrefix(*x)
	}
	return nil, fmt.Errorf("drivermem: unknown filter node %T", e)
}

func (t *table) compileTerms(terms []filter.Expr, all bool) (match, error) {
	ms := make([]match, len(terms))
	for i, term := range terms {
		m, err := t.compile(term)
		if err != nil {
			return nil, err
		}
		ms[i] = m
	}
	return func(r driver.Record) bool {
		for _, m := range ms {
			if m(r) != all {
				return !all
			}
		}
		return all
	}, nil
}

func (t *table) compileNot(term filter.Expr) (match, error) {
	m, err := t.compile(term)
	if err != nil {
		return nil, err
	}
	return func(r driver.Record) bool { return !m(r) }, nil
}

func (t *table) compileCompare(c filter.Compare) (match, error) {
	typ, ok := t.typeOf(c.Field)
	if !ok {
		return nil, fmt.Errorf("drivermem: filter: %s has no field %q", t.name, c.Field)
	}
	field := c.Field
	if c.Value == nil {
		switch c.Op {
		case filter.Eq:
			return func(r driver.Record) bool { return r[field] == nil }, nil
		case filter.Ne:
			return func(r driver.Record) bool { return r[field] != nil }, nil
		case filter.Lt, filter.Le, filter.Gt, filter.Ge:
			return func(driver.Record) bool { return false }, nil
		}
		return nil, fmt.Errorf("drivermem: filter: unknown operator %q", c.Op)
	}
	v, err := normalize(typ, c.Value)
	if err != nil {
		return nil, fmt.Errorf("drivermem: filter on %s: %w", field, err)
	}
	if typ == schema.TypeJSON {
		if c.Op != filter.Eq && c.Op != filter.Ne {
			return nil, fmt.Errorf("drivermem: filter: json field %s has no order", field)
		}
		eq := c.Op == filter.Eq
		return func(r driver.Record) bool {
			fv := r[field]
			if fv == nil {
				return !eq
			}
			return reflect.DeepEqual(fv, v) == eq
		}, nil
	}
	var test func(c int) bool
	switch c.Op {
	case filter.Eq:
		test = func(c int) bool { return c == 0 }
	case filter.Ne:
		test = func(c int) bool { return c != 0 }
	case filter.Lt:
		test = func(c int) bool { return c < 0 }
	case filter.Le:
		test = func(c int) bool { return c <= 0 }
	case filter.Gt:
		test = func(c int) bool { return c > 0 }
	case filter.Ge:
		test = func(c int) bool { return c >= 0 }
	default:
		return nil, fmt.Errorf("drivermem: filter: unknown operator %q", c.Op)
	}
	nullMatches := c.Op == filter.Ne // NULL differs from every value
	return func(r driver.Record) bool {
		fv := r[field]
		if fv == nil {
			return nullMatches
		}
		return test(compareValues(fv, v))
	}, nil
}

func (t *table) compilePrefix(p filter.Prefix) (match, error) {
	switch typ, ok := t.typeOf(p.Field); {
	case !ok:
		return nil, fmt.Errorf("drivermem: filter: %s has no field %q", t.name, p.Field)
	case typ != schema.TypeText && typ != schema.TypeSelect && typ != schema.TypeDate:
		return nil, fmt.Errorf("drivermem: filter: prefix on %s field %s", typ, p.Field)
	}
	field, prefix := p.Field, p.Prefix
	return func(r driver.Record) bool {
		s, ok := r[field].(string)
		return ok && strings.HasPrefix(s, prefix)
	}, nil
}

// ordering is a compiled order: the keys of a query and id ascending as the
// final tiebreaker.
type ordering []driver.OrderBy

func (t *table) ordering(order []driver.OrderBy) (ordering, error) {
	for _, o := range order {
		typ, ok := t.typeOf(o.Field)
		if !ok {
			return nil, fmt.Errorf("drivermem: order: %s has no field %q", t.name, o.Field)
		}
		if typ == schema.TypeJSON {
			return nil, fmt.Errorf("drivermem: order: json field %s has no order", o.Field)
		}
	}
	return append(slices.Clone(order), driver.OrderBy{Field: schema.FieldID}), nil
}

// compare orders two records: NULL first ascending, last descending.
func (o ordering) compare(a, b driver.Record) int {
	for _, k := range o {
		c := compareNullable(a[k.Field], b[k.Field])
		if k.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

// position turns a query's After into a record holding the keys, so that
// "after" is ordering.compare(r, position) > 0.
func (t *table) position(o ordering, after []any) (driver.Record, error) {
	if len(after) != len(o) {
		return nil, fmt.Errorf("drivermem: after has %d values, the order %d keys and the id", len(after), len(o)-1)
	}
	pos := make(driver.Record, len(o))
	for i, k := range o {
		typ, _ := t.typeOf(k.Field)
		v, err := normalize(typ, after[i])
		if err != nil {
			return nil, fmt.Errorf("drivermem: after value %d (%s): %w", i, k.Field, err)
		}
		if v != nil {
			pos[k.Field] = v
		}
	}
	return pos, nil
}

// query returns t's records matching q in its order, shared with the store:
// the caller copies them out.
func (t *table) query(q driver.Query) ([]driver.Record, error) {
	m, err := t.compile(q.Filter)
	if err != nil {
		return nil, err
	}
	o, err := t.ordering(q.Order)
	if err != nil {
		return nil, err
	}
	var pos driver.Record
	if q.After != nil {
		if pos, err = t.position(o, q.After); err != nil {
			return nil, err
		}
	}
	var out []driver.Record
	for _, r := range t.rows {
		if m(r) && (pos == nil || o.compare(r, pos) > 0) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, o.compare)
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

func (t *table) count(e filter.Expr) (int64, error) {
	m, err := t.compile(e)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, r := range t.rows {
		if m(r) {
			n++
		}
	}
	return n, nil
}
