// Package query is the query-language front end of record listing: it turns
// an AIP-160 filter and an AIP-132 order_by, written by a client against an
// object's definition, into the typed filter tree and order engines evaluate,
// and it makes the opaque, tamper-evident page tokens that carry a keyset
// position from one page to the next. Everything a client writes is checked
// here, so engines only ever see known fields and values of the field's type.
package query

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/envplane/envplane/internal/schema"
)

// Reasons of an *Error, the google.rpc.ErrorInfo reasons clients branch on.
const (
	// ReasonInvalidFilter is a filter that is not AIP-160 syntax, or uses a
	// form this API does not take (a bare value, a field on the right side).
	ReasonInvalidFilter = "INVALID_FILTER"
	// ReasonUnknownField names a field the object does not have.
	ReasonUnknownField = "UNKNOWN_FIELD"
	// ReasonFieldTypeMismatch is a literal whose type is not the field's.
	ReasonFieldTypeMismatch = "FIELD_TYPE_MISMATCH"
	// ReasonUnsupportedOperator is an operator the field's type has no
	// meaning for (ordering on a boolean, prefix on a number, null with <),
	// or an AIP-160 operator or function this API does not implement.
	ReasonUnsupportedOperator = "UNSUPPORTED_OPERATOR"
	// ReasonFilterTooComplex is a filter over the size, comparison or
	// nesting limits.
	ReasonFilterTooComplex = "FILTER_TOO_COMPLEX"
	// ReasonInvalidOrderBy is an order_by that is not AIP-132 syntax, names a
	// field twice or a field that has no order.
	ReasonInvalidOrderBy = "INVALID_ORDER_BY"
	// ReasonInvalidPageToken is a page token that is malformed, forged, or
	// was issued for another query.
	ReasonInvalidPageToken = "INVALID_PAGE_TOKEN"
)

// Error is a problem with what a client wrote. Reason is one of the Reason
// constants; Message is safe to show the client: it names fields and
// operators but quotes at most a short excerpt of the input.
type Error struct {
	Reason  string
	Message string
	// Position is where in the filter the problem is; nil when it concerns
	// the whole text (and for order_by and page tokens).
	Position *Position
}

// Position locates a problem in a filter so that a client can point at it.
type Position struct {
	Offset int // bytes from the start of the filter, from 0
	Line   int // from 1
	Column int // characters from the start of the line, from 1
}

// Error returns the message and, when known, the line and column.
func (e *Error) Error() string {
	if e.Position != nil {
		return fmt.Sprintf("%s (at %d:%d)", e.Message, e.Position.Line, e.Position.Column)
	}
	return e.Message
}

// maxQuoted bounds how much of a client's input a message repeats, so that
// an 8 KiB filter does not come back in every error.
const maxQuoted = 64

// quote quotes s for a message, cut to maxQuoted bytes at a character
// boundary.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

// System field types, as the engines store them. etag is deliberately
// absent: it is an opaque concurrency token, neither filterable nor
// orderable.
var systemTypes = map[string]string{
	schema.FieldID:        schema.TypeText,
	schema.FieldCreatedAt: schema.TypeTimestamp,
	schema.FieldUpdatedAt: schema.TypeTimestamp,
}

// fieldType returns the type of a field a client may filter or order by.
func fieldType(obj *schema.Object, name string) (string, bool) {
	if t, ok := systemTypes[name]; ok {
		return t, true
	}
	if f, ok := obj.Field(name); ok {
		return f.Type, true
	}
	return "", false
}
