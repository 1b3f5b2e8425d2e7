package query

import (
	"encoding/base64"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func newTestCursors(t testing.TB) *Cursors {
	t.Helper()
	c, err := NewCursors(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// allOrder orders by one field of every orderable type, so that a position
// holds a value of every Go type.
var allOrder = []driver.OrderBy{
	{Field: "name"}, {Field: "pages", Desc: true}, {Field: "rating"}, {Field: "public"},
	{Field: "due"}, {Field: "seen"}, {Field: "status"}, {Field: "created_at", Desc: true},
}

func testFingerprint(t testing.TB, filterText, order string) Fingerprint {
	t.Helper()
	obj := testObject()
	f, err := ParseFilter(obj, filterText)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseOrder(obj, order)
	if err != nil {
		t.Fatal(err)
	}
	return NewFingerprint("env-1", obj, f, o)
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	c := newTestCursors(t)
	obj := testObject()
	fp := NewFingerprint("env-1", obj, nil, allOrder)
	ts := time.Date(2026, 5, 17, 10, 11, 12, 123456000, time.UTC)
	for _, after := range [][]any{
		{"", int64(0), 0.0, false, "2026-01-01", ts, "draft", ts, "id-1"},
		{nil, nil, nil, nil, nil, nil, nil, nil, "id-2"},
		{"ünïcödé ✓ \x00 \"quoted\" *", int64(math.MaxInt64), math.MaxFloat64, true, "9999-12-31",
			time.Unix(0, 0).UTC(), "published", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), "x"},
		{"\xff\xfe not utf-8", int64(math.MinInt64), -math.SmallestNonzeroFloat64, false, "0001-01-01",
			time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC), "", time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), "\xff"},
		{"a", int64(1<<53 + 1), 0.1, true, "2026-02-28", ts.Add(time.Nanosecond), "s", time.Date(-500, 3, 1, 0, 0, 0, 1, time.UTC), strings.Repeat("i", 100)},
		{"a", int64(-(1 << 53) - 1), math.Copysign(0, -1), true, "2026-02-28", ts, "s", ts, "id"},
	} {
		tok, err := c.Encode(fp, after)
		if err != nil {
			t.Fatalf("Encode(%v): %v", after, err)
		}
		if strings.ContainsAny(tok, "+/=") {
			t.Errorf("token %q is not unpadded base64url", tok)
		}
		got, err := c.Decode(fp, tok, obj, allOrder)
		if err != nil {
			t.Fatalf("Decode(Encode(%v)): %v", after, err)
		}
		if len(got) != len(after) {
			t.Fatalf("Decode = %v, want %v", got, after)
		}
		for i := range after {
			if !sameValue(got[i], after[i]) {
				t.Errorf("value %d: got %#v (%T), want %#v (%T)", i, got[i], got[i], after[i], after[i])
			}
		}
	}
	if got, err := c.Decode(fp, "", obj, allOrder); got != nil || err != nil {
		t.Errorf("Decode(\"\") = %v, %v; want the first page", got, err)
	}
}

// sameValue compares exactly: same Go type, same bits, same instant in UTC.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y) && x.Location() == time.UTC
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	}
	return a == b
}

func TestCursorBinding(t *testing.T) {
	t.Parallel()
	c := newTestCursors(t)
	obj := testObject()
	order := []driver.OrderBy{{Field: "pages"}}
	fp := testFingerprint(t, `name = "x"`, "pages")
	tok, err := c.Encode(fp, []any{int64(5), "id-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decode(fp, tok, obj, order); err != nil {
		t.Fatalf("own query: %v", err)
	}
	if _, err := c.Decode(testFingerprint(t, `name="x"`, "pages asc"), tok, obj, order); err != nil {
		t.Errorf("same filter and order spelled differently: %v", err)
	}
	other := func(mutate func(*schema.Object) (string, *schema.Object, filter.Expr, []driver.OrderBy)) Fingerprint {
		o := testObject()
		env, obj, f, ord := mutate(o)
		return NewFingerprint(env, obj, f, ord)
	}
	f := filter.Compare{Field: "name", Op: filter.Eq, Value: "x"}
	for name, fp2 := range map[string]Fingerprint{
		"other filter": testFingerprint(t, `name = "y"`, "pages"),
		"no filter":    testFingerprint(t, ``, "pages"),
		"other order":  testFingerprint(t, `name = "x"`, "pages desc"),
		"other environment": other(func(o *schema.Object) (string, *schema.Object, filter.Expr, []driver.OrderBy) {
			return "env-2", o, f, order
		}),
		"other object": other(func(o *schema.Object) (string, *schema.Object, filter.Expr, []driver.OrderBy) {
			o.Name = "authors"
			return "env-1", o, f, order
		}),
		"other version": other(func(o *schema.Object) (string, *schema.Object, filter.Expr, []driver.OrderBy) {
			o.Version++
			return "env-1", o, f, order
		}),
		"typed value": other(func(o *schema.Object) (string, *schema.Object, filter.Expr, []driver.OrderBy) {
			return "env-1", o, filter.Compare{Field: "name", Op: filter.Eq, Value: int64(0)}, order
		}),
	} {
		if fp2 == fp {
			t.Errorf("%s: same fingerprint", name)
		}
		if _, err := c.Decode(fp2, tok, obj, order); reason(err) != ReasonInvalidPageToken {
			t.Errorf("%s: token accepted (%v)", name, err)
		}
	}
	other2, err := NewCursors([]byte(strings.Repeat("k", MinKeyLength)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other2.Decode(fp, tok, obj, order); reason(err) != ReasonInvalidPageToken {
		t.Errorf("token verified under another key (%v)", err)
	}
}

func reason(err error) string {
	var qe *Error
	if errors.As(err, &qe) {
		return qe.Reason
	}
	return ""
}

func TestCursorRejects(t *testing.T) {
	t.Parallel()
	c := newTestCursors(t)
	obj := testObject()
	order := []driver.OrderBy{{Field: "pages"}}
	fp := testFingerprint(t, "", "pages")
	tok, err := c.Encode(fp, []any{int64(5), "id-1"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	flipped := append([]byte(nil), raw...)
	flipped[3] ^= 1
	payloadOnly := raw[:len(raw)-macLength]
	// A validly signed position that does not fit the order: encoded by the
	// server for another shape, then decoded against this one.
	wrongCount, _ := c.Encode(fp, []any{int64(5)})
	wrongType, _ := c.Encode(fp, []any{"5", "id-1"})
	nullID, _ := c.Encode(fp, []any{int64(5), nil})
	for name, bad := range map[string]string{
		"garbage":      "!!!",
		"padding":      tok + "=",
		"json":         base64.RawURLEncoding.EncodeToString([]byte(`["i5","sid-1"]`)),
		"flipped bit":  base64.RawURLEncoding.EncodeToString(flipped),
		"no mac":       base64.RawURLEncoding.EncodeToString(payloadOnly),
		"truncated":    tok[:len(tok)-1],
		"extended":     tok + "AA",
		"too long":     strings.Repeat("A", MaxTokenLength+1),
		"wrong count":  wrongCount,
		"wrong type":   wrongType,
		"null id":      nullID,
		"standard b64": base64.StdEncoding.EncodeToString(raw),
		"line break":   tok[:10] + "\n" + tok[10:],
		"carriage ret": tok[:10] + "\r" + tok[10:],
	} {
		if _, err := c.Decode(fp, bad, obj, order); reason(err) != ReasonInvalidPageToken {
			t.Errorf("%s: Decode = %v; want INVALID_PAGE_TOKEN", name, err)
		}
	}
	// A field of the order that is gone or became json.
	changed := testObject()
	changed.Fields[2].Type = schema.TypeJSON
	if _, err := c.Decode(fp, tok, changed, order); reason(err) != ReasonInvalidPageToken {
		t.Errorf("order key now json: Decode = %v", err)
	}
}

func TestCursorEncodeErrors(t *testing.T) {
	t.Parallel()
	c := newTestCursors(t)
	fp := testFingerprint(t, "", "")
	for _, after := range [][]any{
		{1, "id"},          // int, not int64
		{float32(1), "id"}, // float32
		{math.NaN(), "id"},
		{math.Inf(1), "id"},
		{map[string]any{}, "id"},
	} {
		if _, err := c.Encode(fp, after); err == nil {
			t.Errorf("Encode(%v) succeeded", after)
		}
	}
	if _, err := c.Encode(fp, []any{strings.Repeat("x", MaxTokenLength)}); !errors.Is(err, ErrCursorTooLong) {
		t.Errorf("Encode of a huge key = %v, want ErrCursorTooLong", err)
	}
	if _, err := NewCursors(make([]byte, MinKeyLength-1)); err == nil {
		t.Error("NewCursors took a short key")
	}
	// The key is copied: changing the caller's slice does not change tokens.
	key := append([]byte(nil), testKey...)
	c2, _ := NewCursors(key)
	tok, _ := c2.Encode(fp, []any{"id"})
	key[0] ^= 1
	if _, err := c2.Decode(fp, tok, testObject(), nil); err != nil {
		t.Errorf("key not copied: %v", err)
	}
}
