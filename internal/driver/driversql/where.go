package driversql

import (
	"fmt"
	"strings"

	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Where renders the filter tree e over obj as a predicate, binding every
// value through args. A nil tree renders TRUE.
//
// The tree has two-valued logic (a record matches or not) while SQL has
// three (a comparison with NULL is unknown, and NOT unknown is unknown), so
// the builder pushes every Not down to the leaves (De Morgan) and renders each
// leaf in the polarity it ends up in, adding "OR col IS NULL" where the
// comparison must match a NULL. Without a NOT above it, an unknown leaf acts
// exactly like false, so the result matches what drivermem computes in Go
// while each comparison stays a plain, indexable "col op ?".
func Where(d Dialect, obj *schema.Object, e filter.Expr, args *Args) (string, error) {
	w := whereBuilder{d: d, obj: obj, args: args}
	var b strings.Builder
	if err := w.node(&b, e, false, 0); err != nil {
		return "", err
	}
	return b.String(), nil
}

// whereBuilder holds what every node of one Where call needs.
type whereBuilder struct {
	d    Dialect
	obj  *schema.Object
	args *Args
}

// maxDepth bounds the nesting of a filter tree, so a hostile tree cannot
// exhaust the stack or produce a statement the database refuses anyway.
const maxDepth = 64

// node renders e, negated when neg, at nesting depth.
func (w *whereBuilder) node(b *strings.Builder, e filter.Expr, neg bool, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("driversql: filter nested deeper than %d", maxDepth)
	}
	switch e := e.(type) {
	case nil:
		b.WriteString(boolSQL(!neg))
		return nil
	case filter.And:
		return w.terms(b, e.Terms, neg, !neg, depth)
	case *filter.And:
		if e == nil {
			return w.node(b, nil, neg, depth)
		}
		return w.terms(b, e.Terms, neg, !neg, depth)
	case filter.Or:
		return w.terms(b, e.Terms, neg, neg, depth)
	case *filter.Or:
		if e == nil {
			return w.node(b, nil, neg, depth)
		}
		return w.terms(b, e.Terms, neg, neg, depth)
	case filter.Not:
		return w.node(b, e.Term, !neg, depth+1)
	case *filter.Not:
		if e == nil {
			return w.node(b, nil, neg, depth)
		}
		return w.node(b, e.Term, !neg, depth+1)
	case filter.Compare:
		return w.compare(b, e, neg)
	case *filter.Compare:
		if e == nil {
			return w.node(b, nil, neg, depth)
		}
		return w.compare(b, *e, neg)
	case filter.Prefix:
		return w.prefix(b, e, neg)
	case *filter.Prefix:
		if e == nil {
			return w.node(b, nil, neg, depth)
		}
		return w.prefix(b, *e, neg)
	default:
		return fmt.Errorf("driversql: unknown filter node %T", e)
	}
}

// terms renders a conjunction (all) or disjunction of terms, each negated
// when neg: NOT (a AND b) is (NOT a OR NOT b) and the other way round.
func (w *whereBuilder) terms(b *strings.Builder, terms []filter.Expr, neg, all bool, depth int) error {
	if len(terms) == 0 {
		// All of nothing holds; any of nothing does not.
		b.WriteString(boolSQL(all))
		return nil
	}
	sep := " OR "
	if all {
		sep = " AND "
	}
	b.WriteByte('(')
	for i, t := range terms {
		if i > 0 {
			b.WriteString(sep)
		}
		if err := w.node(b, t, neg, depth+1); err != nil {
			return err
		}
	}
	b.WriteByte(')')
	return nil
}

// negated maps each comparison to the one matching exactly the non-NULL
// values it does not.
var negated = map[filter.Op]filter.Op{
	filter.Eq: filter.Ne, filter.Ne: filter.Eq,
	filter.Lt: filter.Ge, filter.Ge: filter.Lt,
	filter.Gt: filter.Le, filter.Le: filter.Gt,
}

// sqlOps spells each comparison in SQL.
var sqlOps = map[filter.Op]string{
	filter.Eq: "=", filter.Ne: "<>",
	filter.Lt: "<", filter.Le: "<=",
	filter.Gt: ">", filter.Ge: ">=",
}

// column returns the quoted column and the type of a field of the object.
func (w *whereBuilder) column(field string) (string, string, error) {
	typ, ok := FieldType(w.obj, field)
	if !ok {
		return "", "", fmt.Errorf("driversql: %s has no field %q", w.obj.Name, field)
	}
	return w.d.Quote(field), typ, nil
}

// compare renders one comparison. NULL differs from every value, so
// "!= value" matches a NULL field while = and the orderings do not; a
// negated ordering therefore does. Eq and Ne with a nil value test for
// NULL, and an ordering against nil matches nothing.
func (w *whereBuilder) compare(b *strings.Builder, c filter.Compare, neg bool) error {
	col, typ, err := w.column(c.Field)
	if err != nil {
		return err
	}
	if _, ok := sqlOps[c.Op]; !ok {
		return fmt.Errorf("driversql: unknown comparison %q", c.Op)
	}
	if typ == schema.TypeJSON && c.Op != filter.Eq && c.Op != filter.Ne {
		// Engines order JSON differently (PostgreSQL's jsonb order, SQLite's
		// text order), so it has none.
		return fmt.Errorf("driversql: %s.%s: json fields have no order", w.obj.Name, c.Field)
	}
	if c.Value == nil {
		switch c.Op {
		case filter.Eq, filter.Ne:
			if (c.Op == filter.Eq) != neg {
				b.WriteString(col + " IS NULL")
			} else {
				b.WriteString(col + " IS NOT NULL")
			}
		default:
			// Ordering against NULL never matches.
			b.WriteString(boolSQL(neg))
		}
		return nil
	}
	v, err := w.d.Encode(typ, c.Value)
	if err != nil {
		return fmt.Errorf("driversql: %s.%s: %w", w.obj.Name, c.Field, err)
	}
	op := c.Op
	if neg {
		op = negated[op]
	}
	orNull := op == filter.Ne || (neg && op != filter.Eq)
	p := w.args.Add(v)
	if orNull {
		fmt.Fprintf(b, "(%s %s %s OR %s IS NULL)", col, sqlOps[op], p, col)
	} else {
		fmt.Fprintf(b, "%s %s %s", col, sqlOps[op], p)
	}
	return nil
}

// prefix renders a prefix match; negated it matches NULL too, as drivermem's
// !HasPrefix does.
func (w *whereBuilder) prefix(b *strings.Builder, p filter.Prefix, neg bool) error {
	col, typ, err := w.column(p.Field)
	if err != nil {
		return err
	}
	switch typ {
	case schema.TypeText, schema.TypeSelect, schema.TypeDate:
	default:
		return fmt.Errorf("driversql: %s.%s: prefix match on a %s field", w.obj.Name, p.Field, typ)
	}
	pred := w.d.Prefix(col, typ, p.Prefix, w.args)
	if neg {
		fmt.Fprintf(b, "(NOT (%s) OR %s IS NULL)", pred, col)
	} else {
		b.WriteString("(" + pred + ")")
	}
	return nil
}

// boolSQL renders a constant predicate; both engines take TRUE and FALSE.
func boolSQL(v bool) string {
	if v {
		return "TRUE"
	}
	return "FALSE"
}
