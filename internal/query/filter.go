package query

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.einride.tech/aip/filtering"
	expr "google.golang.org/genproto/googleapis/api/expr/v1alpha1"

	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// Filter limits. The API bounds the text already; the other two keep the
// tree an engine renders (and the SQL it sends) small whatever the client
// writes.
const (
	// MaxFilterLength is the longest filter, in characters, as the API's
	// validation counts them.
	MaxFilterLength = 8192
	// MaxComparisons is the most comparisons (prefix matches included) one
	// filter may hold.
	MaxComparisons = 50
	// MaxDepth is how deep parentheses and AND/OR/NOT may nest.
	MaxDepth = 16
)

// ParseFilter parses an AIP-160 filter and type-checks it against obj,
// returning the tree engines evaluate; an empty filter is nil (every
// record). Errors are *Error.
//
// The syntax is parsed by go.einride.tech/aip/filtering; the type checking
// is done here on its syntax tree rather than by its checker, because the
// checker has no null, no date or timestamp written as a string and no
// prefix match, all of which this API takes:
//
//	field = "text"    field != 42    field < 1.5    field = true
//	a = 1 AND b = 2   a = 1 b = 2 (AND)   a = 1 OR b = 2   NOT a = 1   -a = 1
//	(a = 1 OR b = 2) AND c = 3
//	field = null      field != null
//	name = "ab*"      (prefix match on text, select and date fields)
//	created_at > "2026-01-01T00:00:00Z"   created_at > timestamp("2026-01-01T00:00:00Z")
//	due = "2026-03-31"
//
// As in AIP-160, OR binds tighter than AND.
func ParseFilter(obj *schema.Object, text string) (filter.Expr, error) {
	if len(text) > utf8.UTFMax*MaxFilterLength || utf8.RuneCountInString(text) > MaxFilterLength {
		return nil, &Error{
			Reason:  ReasonFilterTooComplex,
			Message: fmt.Sprintf("filter is longer than %d characters", MaxFilterLength),
		}
	}
	trimmed := strings.TrimSpace(text)
	if trimmed == "" {
		return nil, nil
	}
	// The parser sees the text without its surrounding space (it trims it
	// too); lead maps its offsets back to the text the client wrote.
	c := checker{obj: obj, text: text, lead: len(text) - len(strings.TrimLeftFunc(text, unicode.IsSpace))}
	if err := c.scan(trimmed); err != nil {
		return nil, err
	}
	var p filtering.Parser
	p.Init(trimmed)
	parsed, err := p.Parse()
	if err != nil {
		return nil, c.syntaxError(err)
	}
	c.positions = parsed.GetSourceInfo().GetPositions()
	return c.node(parsed.GetExpr(), 0)
}

// checker holds what checking one filter needs.
type checker struct {
	obj       *schema.Object
	text      string          // as the client wrote it, for positions
	lead      int             // bytes of leading space the parser did not see
	positions map[int64]int32 // syntax node id → offset in the trimmed text
	compares  int
}

// errorAt returns an *Error at a byte offset of the trimmed text.
func (c *checker) errorAt(reason string, offset int, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...), Position: c.position(offset)}
}

// errorOn returns an *Error located at a syntax node.
func (c *checker) errorOn(e *expr.Expr, reason, format string, args ...any) *Error {
	off, ok := c.positions[e.GetId()]
	if !ok {
		return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	return c.errorAt(reason, int(off), format, args...)
}

// position turns an offset in the trimmed text into a Position in the text
// the client wrote.
func (c *checker) position(offset int) *Position {
	offset += c.lead
	if offset < 0 || offset > len(c.text) {
		return nil
	}
	before := c.text[:offset]
	line := strings.Count(before, "\n") + 1
	col := utf8.RuneCountInString(before[strings.LastIndexByte(before, '\n')+1:]) + 1
	return &Position{Offset: offset, Line: line, Column: col}
}

// filterError is what the parser's and lexer's errors implement; their
// Error methods repeat the whole filter, so only these parts are used.
type filterError interface {
	Position() filtering.Position
	Message() string
}

// syntaxError turns a parse error into INVALID_FILTER at its innermost
// position: the parser wraps each grammar rule around the token at fault.
func (c *checker) syntaxError(err error) *Error {
	var inner filterError
	for e := err; e != nil; e = errors.Unwrap(e) {
		if fe, ok := e.(filterError); ok {
			inner = fe
		}
	}
	if inner == nil {
		return &Error{Reason: ReasonInvalidFilter, Message: "invalid filter syntax"}
	}
	msg := inner.Message()
	if errors.Is(err, io.EOF) {
		msg = "unexpected end of filter"
	}
	return c.errorAt(ReasonInvalidFilter, int(inner.Position().Offset), "invalid filter syntax: %s", msg)
}

// scan lexes the filter before it is parsed, to refuse what the parser would
// accept wrongly or spend too long on: more comparisons or deeper
// parentheses than the limits (the parser backtracks, so its time grows
// with nesting), integer literals beyond int64 (which it would report as a
// bare syntax error) and integers with a leading zero (which it would read
// as octal).
func (c *checker) scan(text string) error {
	var lx filtering.Lexer
	lx.Init(text)
	var toks []filtering.Token
	for {
		tok, err := lx.Lex()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return c.syntaxError(err)
		}
		if tok.Type != filtering.TokenTypeWhitespace {
			toks = append(toks, tok)
		}
	}
	depth, comparisons := 0, 0
	for i, tok := range toks {
		off := int(tok.Position.Offset)
		switch {
		case tok.Type == filtering.TokenTypeLeftParen:
			depth++
			if depth > MaxDepth {
				return c.errorAt(ReasonFilterTooComplex, off, "parentheses nest deeper than %d", MaxDepth)
			}
		case tok.Type == filtering.TokenTypeRightParen:
			depth--
		case tok.Type.IsComparator():
			comparisons++
			if comparisons > MaxComparisons {
				return c.errorAt(ReasonFilterTooComplex, off, "filter has more than %d comparisons", MaxComparisons)
			}
		case tok.Type == filtering.TokenTypeHexNumber:
			if _, err := strconv.ParseInt(tok.Value, 0, 64); err != nil {
				return c.errorAt(ReasonInvalidFilter, off, "hexadecimal literal %s is empty or beyond the 64-bit integer range", quote(tok.Value))
			}
		case tok.Type == filtering.TokenTypeNumber:
			// Digits next to a dot are a part of a float (or of a member
			// path), not an integer.
			if (i > 0 && toks[i-1].Type == filtering.TokenTypeDot) ||
				(i+1 < len(toks) && toks[i+1].Type == filtering.TokenTypeDot) {
				continue
			}
			if len(tok.Value) > 1 && tok.Value[0] == '0' {
				return c.errorAt(ReasonInvalidFilter, off, "integer literal %s has a leading zero", quote(tok.Value))
			}
			if _, err := strconv.ParseInt(tok.Value, 10, 64); err != nil {
				return c.errorAt(ReasonInvalidFilter, off, "integer literal %s is beyond the 64-bit integer range", quote(tok.Value))
			}
		}
	}
	return nil
}

// comparators maps the parser's comparison functions to the tree's.
var comparators = map[string]filter.Op{
	filtering.FunctionEquals:        filter.Eq,
	filtering.FunctionNotEquals:     filter.Ne,
	filtering.FunctionLessThan:      filter.Lt,
	filtering.FunctionLessEquals:    filter.Le,
	filtering.FunctionGreaterThan:   filter.Gt,
	filtering.FunctionGreaterEquals: filter.Ge,
}

// node converts a syntax node at a nesting depth of AND/OR/NOT.
func (c *checker) node(e *expr.Expr, depth int) (filter.Expr, error) {
	if depth > MaxDepth {
		return nil, c.errorOn(e, ReasonFilterTooComplex, "AND, OR and NOT nest deeper than %d", MaxDepth)
	}
	call := e.GetCallExpr()
	if call == nil {
		return nil, c.bareValue(e)
	}
	switch fn := call.GetFunction(); fn {
	case filtering.FunctionAnd, filtering.FunctionFuzzyAnd:
		terms, err := c.terms(e, depth, filtering.FunctionAnd, filtering.FunctionFuzzyAnd)
		return filter.And{Terms: terms}, err
	case filtering.FunctionOr:
		terms, err := c.terms(e, depth, filtering.FunctionOr, "")
		return filter.Or{Terms: terms}, err
	case filtering.FunctionNot:
		if len(call.GetArgs()) != 1 {
			return nil, c.errorOn(e, ReasonInvalidFilter, "NOT takes one term")
		}
		term, err := c.node(call.GetArgs()[0], depth+1)
		if err != nil {
			return nil, err
		}
		return filter.Not{Term: term}, nil
	case filtering.FunctionHas:
		return nil, c.errorOn(e, ReasonUnsupportedOperator, "the has operator \":\" is not supported; use = or a prefix match \"ab*\"")
	default:
		if op, ok := comparators[fn]; ok {
			return c.compare(e, op, depth)
		}
		return nil, c.errorOn(e, ReasonUnsupportedOperator, "function %s is not supported here", quote(fn))
	}
}

// terms flattens a chain of one logical function (and its alias) into the
// terms of one node, as the parser nests them two by two.
func (c *checker) terms(e *expr.Expr, depth int, fn, alias string) ([]filter.Expr, error) {
	var flat []*expr.Expr
	var collect func(*expr.Expr)
	collect = func(x *expr.Expr) {
		if call := x.GetCallExpr(); call != nil && (call.GetFunction() == fn || (alias != "" && call.GetFunction() == alias)) {
			for _, a := range call.GetArgs() {
				collect(a)
			}
			return
		}
		flat = append(flat, x)
	}
	collect(e)
	terms := make([]filter.Expr, 0, len(flat))
	for _, x := range flat {
		t, err := c.node(x, depth+1)
		if err != nil {
			return nil, err
		}
		terms = append(terms, t)
	}
	return terms, nil
}

// bareValue explains a term that is not a comparison: AIP-160 reads it as
// a search of every field, which this API does not have.
func (c *checker) bareValue(e *expr.Expr) *Error {
	if id := e.GetIdentExpr(); id != nil {
		switch strings.ToUpper(id.GetName()) {
		case "AND", "OR", "NOT":
			return c.errorOn(e, ReasonInvalidFilter, "%s is not an operator: AND, OR and NOT are upper case", quote(id.GetName()))
		}
	}
	return c.errorOn(e, ReasonInvalidFilter, "expected a comparison such as field = \"value\", not a bare value")
}

// compare converts and type-checks one comparison.
func (c *checker) compare(e *expr.Expr, op filter.Op, depth int) (filter.Expr, error) {
	args := e.GetCallExpr().GetArgs()
	if len(args) != 2 {
		return nil, c.errorOn(e, ReasonInvalidFilter, "comparison %s needs a field and a value", op)
	}
	lhs, rhs := args[0], args[1]
	name, ok := fieldName(lhs)
	if !ok {
		if err := c.function(lhs); err != nil {
			return nil, err
		}
		return nil, c.errorOn(lhs, ReasonInvalidFilter, "the left side of %s must be a field name", op)
	}
	typ, ok := fieldType(c.obj, name)
	if !ok {
		return nil, c.errorOn(lhs, ReasonUnknownField, "object %s has no field %s", quote(c.obj.Name), quote(name))
	}
	c.compares++
	if c.compares > MaxComparisons {
		return nil, c.errorOn(e, ReasonFilterTooComplex, "filter has more than %d comparisons", MaxComparisons)
	}
	lit, err := c.literal(rhs, name, op)
	if err != nil {
		return nil, err
	}
	if lit.null {
		if op != filter.Eq && op != filter.Ne {
			return nil, c.errorOn(e, ReasonUnsupportedOperator, "field %s can be compared with null only by = and !=", quote(name))
		}
		return filter.Compare{Field: name, Op: op, Value: nil}, nil
	}
	if lit.isString && strings.ContainsRune(lit.str, 0) {
		// No engine stores it (PostgreSQL cannot even compare with it).
		return nil, c.errorOn(rhs, ReasonInvalidFilter, "string literal contains the NUL character U+0000")
	}
	mismatch := func(want string) (filter.Expr, error) {
		return nil, c.errorOn(rhs, ReasonFieldTypeMismatch, "%s field %s takes %s, not %s", typ, quote(name), want, lit.kind())
	}
	ordering := op != filter.Eq && op != filter.Ne
	// A trailing * is a prefix match (AIP-160), with = and != only: with an
	// ordering the string is taken as written.
	prefix := !ordering && lit.isString && !lit.timestamp && strings.HasSuffix(lit.str, "*")
	switch typ {
	case schema.TypeJSON:
		return nil, c.errorOn(e, ReasonUnsupportedOperator, "json field %s can only be compared with null", quote(name))
	case schema.TypeBoolean:
		if ordering {
			return nil, c.errorOn(e, ReasonUnsupportedOperator, "boolean field %s has no order: use = or !=", quote(name))
		}
		if !lit.isBool {
			return mismatch("true or false")
		}
		return filter.Compare{Field: name, Op: op, Value: lit.b}, nil
	case schema.TypeText, schema.TypeSelect, schema.TypeDate:
		if !lit.isString || lit.timestamp {
			if typ == schema.TypeDate {
				return mismatch("a \"YYYY-MM-DD\" string")
			}
			return mismatch("a string")
		}
		if prefix {
			var p filter.Expr = filter.Prefix{Field: name, Prefix: strings.TrimSuffix(lit.str, "*")}
			if op == filter.Ne {
				if depth+1 > MaxDepth {
					return nil, c.errorOn(e, ReasonFilterTooComplex, "AND, OR and NOT nest deeper than %d", MaxDepth)
				}
				p = filter.Not{Term: p}
			}
			return p, nil
		}
		if typ == schema.TypeDate && !isDate(lit.str) {
			return nil, c.errorOn(rhs, ReasonFieldTypeMismatch, "date field %s takes a \"YYYY-MM-DD\" date, not %s", quote(name), quote(lit.str))
		}
		return filter.Compare{Field: name, Op: op, Value: lit.str}, nil
	case schema.TypeInteger:
		if !lit.isInt {
			if prefix {
				return nil, c.prefixOn(e, typ, name)
			}
			return mismatch("an integer")
		}
		return filter.Compare{Field: name, Op: op, Value: lit.i}, nil
	case schema.TypeNumber:
		switch {
		case lit.isInt:
			return filter.Compare{Field: name, Op: op, Value: float64(lit.i)}, nil
		case lit.isFloat:
			return filter.Compare{Field: name, Op: op, Value: lit.f}, nil
		case prefix:
			return nil, c.prefixOn(e, typ, name)
		}
		return mismatch("a number")
	case schema.TypeTimestamp:
		if !lit.isString {
			return mismatch("an RFC 3339 timestamp string")
		}
		if prefix {
			return nil, c.prefixOn(e, typ, name)
		}
		t, err := time.Parse(time.RFC3339Nano, lit.str)
		if err != nil {
			return nil, c.errorOn(rhs, ReasonFieldTypeMismatch,
				"timestamp field %s takes an RFC 3339 timestamp such as \"2026-01-01T00:00:00Z\", not %s", quote(name), quote(lit.str))
		}
		return filter.Compare{Field: name, Op: op, Value: t.UTC()}, nil
	}
	return nil, c.errorOn(lhs, ReasonUnsupportedOperator, "field %s of type %s cannot be filtered", quote(name), quote(typ))
}

// prefixOn refuses a prefix match on a field that is not a string.
func (c *checker) prefixOn(e *expr.Expr, typ, name string) *Error {
	return c.errorOn(e, ReasonUnsupportedOperator, "prefix match \"…*\" is for text, select and date fields, not %s field %s", typ, quote(name))
}

// function refuses a call of a function other than the operators and
// timestamp(), which AIP-160 lets a service define; it is nil for anything
// else.
func (c *checker) function(e *expr.Expr) *Error {
	call := e.GetCallExpr()
	if call == nil {
		return nil
	}
	switch fn := call.GetFunction(); fn {
	case filtering.FunctionAnd, filtering.FunctionFuzzyAnd, filtering.FunctionOr, filtering.FunctionNot,
		filtering.FunctionHas, filtering.FunctionTimestamp:
		return nil
	default:
		if _, ok := comparators[fn]; ok {
			return nil
		}
		return c.errorOn(e, ReasonUnsupportedOperator, "function %s is not supported here", quote(fn))
	}
}

// fieldName returns the name a comparison's left side refers to: an
// identifier, or a dotted path (which no field has, but the error should
// name it).
func fieldName(e *expr.Expr) (string, bool) {
	if id := e.GetIdentExpr(); id != nil {
		return id.GetName(), true
	}
	sel := e.GetSelectExpr()
	if sel == nil {
		return "", false
	}
	parts := []string{sel.GetField()}
	for x := sel.GetOperand(); ; {
		if id := x.GetIdentExpr(); id != nil {
			parts = append(parts, id.GetName())
			break
		}
		s := x.GetSelectExpr()
		if s == nil {
			return "", false
		}
		parts = append(parts, s.GetField())
		x = s.GetOperand()
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "."), true
}

// literal is the right side of a comparison, before it meets a field type.
type literal struct {
	null, isBool, isInt, isFloat, isString bool
	timestamp                              bool // written timestamp("…")

	b   bool
	i   int64
	f   float64
	str string
}

// kind names the literal's type for a message.
func (l literal) kind() string {
	switch {
	case l.isBool:
		return "a boolean"
	case l.isInt:
		return "an integer"
	case l.isFloat:
		return "a number"
	case l.timestamp:
		return "a timestamp"
	case l.isString:
		return "a string"
	}
	return "null"
}

// literal reads the right side of a comparison with field name.
func (c *checker) literal(e *expr.Expr, name string, op filter.Op) (literal, error) {
	switch {
	case e.GetIdentExpr() != nil:
		switch e.GetIdentExpr().GetName() {
		case "null":
			return literal{null: true}, nil
		case "true":
			return literal{isBool: true, b: true}, nil
		case "false":
			return literal{isBool: true}, nil
		}
	case e.GetConstExpr() != nil:
		switch k := e.GetConstExpr().GetConstantKind().(type) {
		case *expr.Constant_StringValue:
			return literal{isString: true, str: k.StringValue}, nil
		case *expr.Constant_Int64Value:
			return literal{isInt: true, i: k.Int64Value}, nil
		case *expr.Constant_DoubleValue:
			if math.IsNaN(k.DoubleValue) || math.IsInf(k.DoubleValue, 0) {
				return literal{}, c.errorOn(e, ReasonInvalidFilter, "number literal is not finite")
			}
			return literal{isFloat: true, f: k.DoubleValue}, nil
		}
	case e.GetCallExpr() != nil && e.GetCallExpr().GetFunction() == filtering.FunctionTimestamp:
		args := e.GetCallExpr().GetArgs()
		if len(args) == 1 {
			if s, ok := args[0].GetConstExpr().GetConstantKind().(*expr.Constant_StringValue); ok {
				return literal{isString: true, timestamp: true, str: s.StringValue}, nil
			}
		}
		return literal{}, c.errorOn(e, ReasonInvalidFilter, "timestamp() takes one string such as \"2026-01-01T00:00:00Z\"")
	}
	if err := c.function(e); err != nil {
		return literal{}, err
	}
	return literal{}, c.errorOn(e, ReasonInvalidFilter,
		"the right side of %s %s must be a literal: a quoted string, a number, true, false or null", quote(name), op)
}

// isDate reports whether s is a date as the engines store it: year 0001
// or later (PostgreSQL has no year 0).
func isDate(s string) bool {
	t, err := time.Parse(schema.DateLayout, s)
	return err == nil && t.Year() >= 1 && t.Format(schema.DateLayout) == s
}
