package query

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// testObject has one field of every type.
func testObject() *schema.Object {
	return &schema.Object{
		Name:    "books",
		Version: 3,
		Fields: []schema.Field{
			{Name: "name", Type: schema.TypeText},
			{Name: "status", Type: schema.TypeSelect, Options: []string{"draft", "published"}},
			{Name: "pages", Type: schema.TypeInteger},
			{Name: "rating", Type: schema.TypeNumber},
			{Name: "public", Type: schema.TypeBoolean},
			{Name: "due", Type: schema.TypeDate},
			{Name: "seen", Type: schema.TypeTimestamp},
			{Name: "meta", Type: schema.TypeJSON},
		},
	}
}

func cmpEq(f string, v any) filter.Compare { return filter.Compare{Field: f, Op: filter.Eq, Value: v} }

func TestParseFilter(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want filter.Expr
	}{
		{"", nil},
		{"   \n\t", nil},
		{`name = "ab"`, cmpEq("name", "ab")},
		{`name="ab"`, cmpEq("name", "ab")},
		{`name = 'single'`, cmpEq("name", "single")},
		{`name = "esc\"aped"`, cmpEq("name", `esc"aped`)},
		{`name = ""`, cmpEq("name", "")},
		{`name != "ab"`, filter.Compare{Field: "name", Op: filter.Ne, Value: "ab"}},
		{`name < "m"`, filter.Compare{Field: "name", Op: filter.Lt, Value: "m"}},
		{`name <= "m"`, filter.Compare{Field: "name", Op: filter.Le, Value: "m"}},
		{`name > "m"`, filter.Compare{Field: "name", Op: filter.Gt, Value: "m"}},
		{`name >= "m"`, filter.Compare{Field: "name", Op: filter.Ge, Value: "m"}},
		{`status = "draft"`, cmpEq("status", "draft")},
		{`id = "0193"`, cmpEq("id", "0193")},
		// Prefix matches.
		{`name = "ab*"`, filter.Prefix{Field: "name", Prefix: "ab"}},
		{`name = "*"`, filter.Prefix{Field: "name", Prefix: ""}},
		{`name = "a*b*"`, filter.Prefix{Field: "name", Prefix: "a*b"}},
		{`name != "ab*"`, filter.Not{Term: filter.Prefix{Field: "name", Prefix: "ab"}}},
		{`status = "dr*"`, filter.Prefix{Field: "status", Prefix: "dr"}},
		{`id = "0193*"`, filter.Prefix{Field: "id", Prefix: "0193"}},
		{`due = "2026-03*"`, filter.Prefix{Field: "due", Prefix: "2026-03"}},
		// With an ordering a * is a character.
		{`name >= "ab*"`, filter.Compare{Field: "name", Op: filter.Ge, Value: "ab*"}},
		// Integers, numbers, booleans.
		{`pages = 42`, cmpEq("pages", int64(42))},
		{`pages = -42`, cmpEq("pages", int64(-42))},
		{`pages = 0`, cmpEq("pages", int64(0))},
		{`pages = 0x1F`, cmpEq("pages", int64(31))},
		{`pages > 9007199254740993`, filter.Compare{Field: "pages", Op: filter.Gt, Value: int64(9007199254740993)}},
		{`pages < 9223372036854775807`, filter.Compare{Field: "pages", Op: filter.Lt, Value: int64(9223372036854775807)}},
		{`pages > -9223372036854775807`, filter.Compare{Field: "pages", Op: filter.Gt, Value: int64(-9223372036854775807)}},
		{`rating = 4`, cmpEq("rating", float64(4))},
		{`rating >= 4.5`, filter.Compare{Field: "rating", Op: filter.Ge, Value: 4.5}},
		{`rating < -0.25`, filter.Compare{Field: "rating", Op: filter.Lt, Value: -0.25}},
		{`rating < .5`, filter.Compare{Field: "rating", Op: filter.Lt, Value: 0.5}},
		{`rating = 1.05`, cmpEq("rating", 1.05)},
		{`rating = 00.5`, cmpEq("rating", 0.5)},
		{`public = true`, cmpEq("public", true)},
		{`public != false`, filter.Compare{Field: "public", Op: filter.Ne, Value: false}},
		// Dates and timestamps.
		{`due = "2026-03-31"`, cmpEq("due", "2026-03-31")},
		{`due < "2026-03-31"`, filter.Compare{Field: "due", Op: filter.Lt, Value: "2026-03-31"}},
		{`created_at > "2026-01-01T00:00:00Z"`, filter.Compare{Field: "created_at", Op: filter.Gt, Value: ts}},
		{`updated_at <= "2026-01-01T02:00:00+02:00"`, filter.Compare{Field: "updated_at", Op: filter.Le, Value: ts}},
		{`seen = "2026-01-01T00:00:00.123456Z"`, cmpEq("seen", ts.Add(123456*time.Microsecond))},
		{`seen > timestamp("2026-01-01T00:00:00Z")`, filter.Compare{Field: "seen", Op: filter.Gt, Value: ts}},
		// Null.
		{`name = null`, cmpEq("name", nil)},
		{`pages != null`, filter.Compare{Field: "pages", Op: filter.Ne, Value: nil}},
		{`meta = null`, cmpEq("meta", nil)},
		{`meta != null`, filter.Compare{Field: "meta", Op: filter.Ne, Value: nil}},
		// Logic.
		{`pages = 1 AND public = true`, filter.And{Terms: []filter.Expr{cmpEq("pages", int64(1)), cmpEq("public", true)}}},
		{`pages = 1 public = true`, filter.And{Terms: []filter.Expr{cmpEq("pages", int64(1)), cmpEq("public", true)}}},
		{`pages = 1 AND pages = 2 AND pages = 3`, filter.And{Terms: []filter.Expr{cmpEq("pages", int64(1)), cmpEq("pages", int64(2)), cmpEq("pages", int64(3))}}},
		{`pages = 1 OR pages = 2 OR pages = 3`, filter.Or{Terms: []filter.Expr{cmpEq("pages", int64(1)), cmpEq("pages", int64(2)), cmpEq("pages", int64(3))}}},
		{`NOT pages = 1`, filter.Not{Term: cmpEq("pages", int64(1))}},
		{`-pages = 1`, filter.Not{Term: cmpEq("pages", int64(1))}},
		{`NOT (pages = 1 OR pages = 2)`, filter.Not{Term: filter.Or{Terms: []filter.Expr{cmpEq("pages", int64(1)), cmpEq("pages", int64(2))}}}},
		// OR binds tighter than AND (AIP-160).
		{`pages = 1 AND pages = 2 OR pages = 3`, filter.And{Terms: []filter.Expr{
			cmpEq("pages", int64(1)),
			filter.Or{Terms: []filter.Expr{cmpEq("pages", int64(2)), cmpEq("pages", int64(3))}},
		}}},
		{`(pages = 1 AND pages = 2) OR pages = 3`, filter.Or{Terms: []filter.Expr{
			filter.And{Terms: []filter.Expr{cmpEq("pages", int64(1)), cmpEq("pages", int64(2))}},
			cmpEq("pages", int64(3)),
		}}},
		{`((((name = "x"))))`, cmpEq("name", "x")},
		{"  name = \"x\"\n", cmpEq("name", "x")},
	} {
		got, err := ParseFilter(testObject(), c.in)
		if err != nil {
			t.Errorf("ParseFilter(%q): %v", c.in, err)
			continue
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("ParseFilter(%q) (-want +got):\n%s", c.in, diff)
		}
	}
}

func TestParseFilterErrors(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("(", MaxDepth+1) + `name = "x"` + strings.Repeat(")", MaxDepth+1)
	notChain := strings.Repeat("NOT (", MaxDepth+1) + `name = "x"` + strings.Repeat(")", MaxDepth+1)
	many := strings.TrimSuffix(strings.Repeat(`pages = 1 AND `, MaxComparisons+1), " AND ")
	longName := strings.Repeat("n", 5000)
	for _, c := range []struct {
		in, reason, inMessage string
	}{
		// Syntax.
		{`name = `, ReasonInvalidFilter, "syntax"},
		{`name = "unterminated`, ReasonInvalidFilter, "unterminated string"},
		{`(name = "x"`, ReasonInvalidFilter, "syntax"},
		{`name = "x")`, ReasonInvalidFilter, "syntax"},
		{`AND name = "x"`, ReasonInvalidFilter, ""},
		{"name = \"\xff\"", ReasonInvalidFilter, "UTF-8"},
		{`name`, ReasonInvalidFilter, "bare value"},
		{`"free text"`, ReasonInvalidFilter, "bare value"},
		{`42`, ReasonInvalidFilter, "bare value"},
		{`name = "x" and pages = 1`, ReasonInvalidFilter, "upper case"},
		{`name = other`, ReasonInvalidFilter, "literal"},
		{`name = a.b`, ReasonInvalidFilter, "literal"},
		{`name = (pages = 1)`, ReasonInvalidFilter, "literal"},
		{`"name" = "x"`, ReasonInvalidFilter, "left side"},
		{`5 = pages`, ReasonInvalidFilter, "left side"},
		{`pages = 99999999999999999999`, ReasonInvalidFilter, "64-bit"},
		{`pages = -9223372036854775809`, ReasonInvalidFilter, "64-bit"},
		{`pages = 0x1FFFFFFFFFFFFFFFF`, ReasonInvalidFilter, "64-bit"},
		{`pages = 010`, ReasonInvalidFilter, "leading zero"},
		{`seen > timestamp(1)`, ReasonInvalidFilter, "timestamp()"},
		// Fields.
		{`nope = 1`, ReasonUnknownField, `"nope"`},
		{`etag = "x"`, ReasonUnknownField, `"etag"`},
		{`meta.a = 1`, ReasonUnknownField, `"meta.a"`},
		{`Name = "x"`, ReasonUnknownField, `"Name"`},
		{longName + ` = 1`, ReasonUnknownField, "…"},
		// Types.
		{`name = 1`, ReasonFieldTypeMismatch, "not an integer"},
		{`name = true`, ReasonFieldTypeMismatch, "not a boolean"},
		{`name = timestamp("2026-01-01T00:00:00Z")`, ReasonFieldTypeMismatch, "not a timestamp"},
		{`pages = 1.5`, ReasonFieldTypeMismatch, "not a number"},
		{`pages = "1"`, ReasonFieldTypeMismatch, "not a string"},
		{`rating = "1.5"`, ReasonFieldTypeMismatch, "not a string"},
		{`rating = true`, ReasonFieldTypeMismatch, "not a boolean"},
		{`public = "true"`, ReasonFieldTypeMismatch, "true or false"},
		{`public = 1`, ReasonFieldTypeMismatch, "true or false"},
		{`due = "2026-02-30"`, ReasonFieldTypeMismatch, "YYYY-MM-DD"},
		{`due = "2026-3-1"`, ReasonFieldTypeMismatch, "YYYY-MM-DD"},
		{`due = 20260301`, ReasonFieldTypeMismatch, "YYYY-MM-DD"},
		{`due = "0000-01-01"`, ReasonFieldTypeMismatch, "YYYY-MM-DD"},
		{`name = "a\x00b"`, ReasonInvalidFilter, "NUL"},
		{`name = "\u0000*"`, ReasonInvalidFilter, "NUL"},
		{`seen > "2026-01-01"`, ReasonFieldTypeMismatch, "RFC 3339"},
		{`seen > "yesterday"`, ReasonFieldTypeMismatch, "RFC 3339"},
		{`seen > timestamp("2026-01-01")`, ReasonFieldTypeMismatch, "RFC 3339"},
		{`seen > 1767225600`, ReasonFieldTypeMismatch, "RFC 3339"},
		{`created_at = true`, ReasonFieldTypeMismatch, ""},
		{`name = "` + strings.Repeat("z", 3000) + `" AND pages = "x"`, ReasonFieldTypeMismatch, ""},
		{`due = "` + strings.Repeat("9", 3000) + `"`, ReasonFieldTypeMismatch, "…"},
		// Operators.
		{`public < true`, ReasonUnsupportedOperator, "no order"},
		{`public >= false`, ReasonUnsupportedOperator, "no order"},
		{`meta = "x"`, ReasonUnsupportedOperator, "only be compared with null"},
		{`meta < 1`, ReasonUnsupportedOperator, "json"},
		{`pages = "1*"`, ReasonUnsupportedOperator, "prefix"},
		{`rating = "1*"`, ReasonUnsupportedOperator, "prefix"},
		{`seen = "2026*"`, ReasonUnsupportedOperator, "prefix"},
		{`name < null`, ReasonUnsupportedOperator, "null"},
		{`pages >= null`, ReasonUnsupportedOperator, "null"},
		{`name : "x"`, ReasonUnsupportedOperator, "has operator"},
		{`name = lower("x")`, ReasonUnsupportedOperator, `"lower"`},
		{`lower(name) = "x"`, ReasonUnsupportedOperator, `"lower"`},
		// Limits.
		{deep, ReasonFilterTooComplex, "nest"},
		{notChain, ReasonFilterTooComplex, "nest"},
		{many, ReasonFilterTooComplex, "comparisons"},
		{strings.Repeat("x", MaxFilterLength+1), ReasonFilterTooComplex, "longer"},
		{strings.Repeat("é", MaxFilterLength+1), ReasonFilterTooComplex, "longer"},
	} {
		got, err := ParseFilter(testObject(), c.in)
		var qe *Error
		if !errors.As(err, &qe) {
			t.Errorf("ParseFilter(%.60q) = %v, %v; want *Error %s", c.in, got, err, c.reason)
			continue
		}
		if qe.Reason != c.reason || !strings.Contains(qe.Message, c.inMessage) {
			t.Errorf("ParseFilter(%.60q) = %s: %q; want %s containing %q", c.in, qe.Reason, qe.Message, c.reason, c.inMessage)
		}
		if len(qe.Message) > 300 {
			t.Errorf("ParseFilter(%.60q): message of %d bytes echoes the input", c.in, len(qe.Message))
		}
	}
}

func TestParseFilterLimitsInclusive(t *testing.T) {
	t.Parallel()
	// Exactly at the limits is fine.
	atDepth := strings.Repeat("(", MaxDepth) + `name = "x"` + strings.Repeat(")", MaxDepth)
	notChain := strings.Repeat("NOT (", MaxDepth-1) + `NOT name = "x"` + strings.Repeat(")", MaxDepth-1)
	atCount := strings.TrimSuffix(strings.Repeat(`pages = 1 AND `, MaxComparisons), " AND ")
	for _, in := range []string{atDepth, notChain, atCount} {
		if _, err := ParseFilter(testObject(), in); err != nil {
			t.Errorf("ParseFilter(%.60q): %v", in, err)
		}
	}
	long := `name = "` + strings.Repeat("é", MaxFilterLength-len(`name = ""`)) + `"`
	if _, err := ParseFilter(testObject(), long); err != nil {
		t.Errorf("filter of %d characters: %v", MaxFilterLength, err)
	}
}

func TestParseFilterPosition(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in         string
		line, col  int
		offset     int
		wantReason string
	}{
		{`name = "x" AND nope = 1`, 1, 16, 15, ReasonUnknownField},
		{"  name = \"x\" AND\n  pages = \"y\"", 2, 11, 27, ReasonFieldTypeMismatch},
		{`é = 1`, 1, 1, 0, ReasonUnknownField},
		{`name = "é" AND pages = 1.5`, 1, 24, 24, ReasonFieldTypeMismatch},
		{`pages = 1 AND (pages = 2`, 1, 25, 24, ReasonInvalidFilter},
	} {
		_, err := ParseFilter(testObject(), c.in)
		var qe *Error
		if !errors.As(err, &qe) || qe.Position == nil {
			t.Errorf("ParseFilter(%q) = %v; want a positioned *Error", c.in, err)
			continue
		}
		if qe.Reason != c.wantReason || qe.Position.Line != c.line || qe.Position.Column != c.col || qe.Position.Offset != c.offset {
			t.Errorf("ParseFilter(%q) = %s at %+v; want %s at %d:%d (offset %d)", c.in, qe.Reason, *qe.Position, c.wantReason, c.line, c.col, c.offset)
		}
	}
}

// TestParseFilterBacktracking guards against the parser's backtracking
// growing exponentially with nesting: the worst shapes within the limits
// must still parse (or fail) fast.
func TestParseFilterBacktracking(t *testing.T) {
	t.Parallel()
	n := MaxDepth / 2
	for _, in := range []string{
		strings.Repeat("f((", n),
		strings.Repeat("f((", n) + strings.Repeat("))", n),
		strings.Repeat("(", MaxDepth) + strings.Repeat("a.b.c.d ", 1000),
		strings.Repeat("f(", MaxDepth) + strings.Repeat("x,", 2000),
		strings.Repeat("-(", MaxDepth) + "name = 1",
	} {
		start := time.Now()
		_, _ = ParseFilter(testObject(), in)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("ParseFilter(%.40q) took %v", in, d)
		}
	}
}
