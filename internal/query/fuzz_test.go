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

var reasons = map[string]bool{
	ReasonInvalidFilter: true, ReasonUnknownField: true, ReasonFieldTypeMismatch: true,
	ReasonUnsupportedOperator: true, ReasonFilterTooComplex: true,
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		``, `name = "ab"`, `name = "ab*"`, `name != "ab*"`, `pages = 42 AND rating >= 4.5`,
		`public = true OR due = "2026-03-31"`, `NOT (seen > "2026-01-01T00:00:00Z")`,
		`-id = "x"`, `created_at > timestamp("2026-01-01T00:00:00Z")`, `meta = null`,
		`pages = 0x1F`, `pages = -9223372036854775807`, `rating = .5`, `a.b.c = 1`,
		`(name = "a" OR name = "b") status = "draft"`, `name : "x"`, `f(x) = 1`,
		`pages = 010`, `pages = 99999999999999999999`, "name = \"\xff\"", `((((name = "x"))))`,
		`public < true`, `name < null`, `due = "2026-02-30"`, `name = "x" and pages = 1`,
		strings.Repeat("(", 17) + `name = "x"` + strings.Repeat(")", 17),
		strings.Repeat(`pages = 1 AND `, 51) + `pages = 1`,
		strings.Repeat("NOT (", 8) + `name = "x"` + strings.Repeat(")", 8),
	} {
		f.Add(s)
	}
	obj := testObject()
	f.Fuzz(func(t *testing.T, text string) {
		start := time.Now()
		got, err := ParseFilter(obj, text)
		if d := time.Since(start); d > time.Second {
			t.Errorf("ParseFilter took %v", d)
		}
		if err != nil {
			var qe *Error
			if !errors.As(err, &qe) || !reasons[qe.Reason] {
				t.Fatalf("error %v is not a filter *Error", err)
			}
			if len(qe.Message) > 400 {
				t.Fatalf("message of %d bytes: %.100q", len(qe.Message), qe.Message)
			}
			if p := qe.Position; p != nil && (p.Offset < 0 || p.Offset > len(text) || p.Line < 1 || p.Column < 1) {
				t.Fatalf("position %+v outside a text of %d bytes", *p, len(text))
			}
			return
		}
		if got == nil {
			if strings.TrimSpace(text) != "" {
				t.Fatalf("non-empty filter %q accepted as no filter", text)
			}
			return
		}
		comparisons := checkTree(t, obj, got, 0)
		if comparisons > MaxComparisons {
			t.Fatalf("accepted %d comparisons", comparisons)
		}
		again, err := ParseFilter(obj, text)
		if err != nil || !cmp.Equal(got, again) {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

// checkTree checks an accepted tree against obj independently of the
// parser, returning its number of comparisons. depth counts the AND, OR and
// NOT above e.
func checkTree(t *testing.T, obj *schema.Object, e filter.Expr, depth int) int {
	t.Helper()
	if depth > MaxDepth {
		t.Fatalf("accepted a tree nested %d deep", depth)
	}
	typeOf := func(field string) string {
		switch field {
		case schema.FieldID:
			return schema.TypeText
		case schema.FieldCreatedAt, schema.FieldUpdatedAt:
			return schema.TypeTimestamp
		}
		fd, ok := obj.Field(field)
		if !ok {
			t.Fatalf("accepted unknown field %q", field)
		}
		return fd.Type
	}
	switch x := e.(type) {
	case filter.And:
		return checkTerms(t, obj, x.Terms, depth)
	case filter.Or:
		return checkTerms(t, obj, x.Terms, depth)
	case filter.Not:
		return checkTree(t, obj, x.Term, depth+1)
	case filter.Prefix:
		switch typeOf(x.Field) {
		case schema.TypeText, schema.TypeSelect, schema.TypeDate:
		default:
			t.Fatalf("prefix match on %s", x.Field)
		}
		return 1
	case filter.Compare:
		typ := typeOf(x.Field)
		ordering := x.Op != filter.Eq && x.Op != filter.Ne
		switch x.Op {
		case filter.Eq, filter.Ne, filter.Lt, filter.Le, filter.Gt, filter.Ge:
		default:
			t.Fatalf("operator %q", x.Op)
		}
		if x.Value == nil {
			if ordering {
				t.Fatalf("ordering %s against null", x.Op)
			}
			return 1
		}
		if ordering && (typ == schema.TypeBoolean || typ == schema.TypeJSON) {
			t.Fatalf("ordering on %s field %s", typ, x.Field)
		}
		ok := false
		switch v := x.Value.(type) {
		case string:
			ok = typ == schema.TypeText || typ == schema.TypeSelect || (typ == schema.TypeDate && isDate(v))
		case int64:
			ok = typ == schema.TypeInteger
		case float64:
			ok = typ == schema.TypeNumber
		case bool:
			ok = typ == schema.TypeBoolean
		case time.Time:
			ok = typ == schema.TypeTimestamp && v.Location() == time.UTC
		}
		if !ok {
			t.Fatalf("value %#v (%T) for %s field %s", x.Value, x.Value, typ, x.Field)
		}
		return 1
	}
	t.Fatalf("node %T", e)
	return 0
}

func checkTerms(t *testing.T, obj *schema.Object, terms []filter.Expr, depth int) int {
	t.Helper()
	if len(terms) < 2 {
		t.Fatalf("AND/OR of %d terms", len(terms))
	}
	n := 0
	for _, term := range terms {
		n += checkTree(t, obj, term, depth+1)
	}
	return n
}

func FuzzDecodeCursor(f *testing.F) {
	c := newTestCursors(f)
	obj := testObject()
	fp := NewFingerprint("env-1", obj, nil, allOrder)
	otherFP := NewFingerprint("env-2", obj, nil, allOrder)
	ts := time.Date(2026, 5, 17, 10, 11, 12, 123456000, time.UTC)
	for _, after := range [][]any{
		{"", int64(0), 0.0, false, "2026-01-01", ts, "draft", ts, "id-1"},
		{nil, nil, nil, nil, nil, nil, nil, nil, "id-2"},
		{"\xff", int64(-1), 1.5, true, "2026-01-01", ts, "s", ts, "id"},
	} {
		tok, err := c.Encode(fp, after)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	f.Add("")
	f.Add("W10")
	f.Add("!!!")
	f.Fuzz(func(t *testing.T, token string) {
		after, err := c.Decode(fp, token, obj, allOrder)
		if err != nil {
			if reason(err) != ReasonInvalidPageToken {
				t.Fatalf("Decode error %v is not INVALID_PAGE_TOKEN", err)
			}
			return
		}
		if token == "" {
			if after != nil {
				t.Fatalf("empty token decoded to %v", after)
			}
			return
		}
		// Only the server's own tokens verify, and they are canonical: a
		// token that decodes is exactly the one the server would write.
		again, err := c.Encode(fp, after)
		if err != nil || again != token {
			t.Fatalf("accepted token %q is not the server's (%q, %v)", token, again, err)
		}
		if _, err := c.Decode(otherFP, token, obj, allOrder); reason(err) != ReasonInvalidPageToken {
			t.Fatalf("token accepted for another query: %v", err)
		}
	})
}
