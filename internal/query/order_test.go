package query

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/envplane/envplane/internal/driver"
)

func TestParseOrder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want []driver.OrderBy
	}{
		{"", nil},
		{"  ", nil},
		{"name", []driver.OrderBy{{Field: "name"}}},
		{"name asc", []driver.OrderBy{{Field: "name"}}},
		{"created_at desc, name", []driver.OrderBy{{Field: "created_at", Desc: true}, {Field: "name"}}},
		{" pages  desc ,rating,public desc,due,seen,status,updated_at,id desc", []driver.OrderBy{
			{Field: "pages", Desc: true}, {Field: "rating"}, {Field: "public", Desc: true}, {Field: "due"},
			{Field: "seen"}, {Field: "status"}, {Field: "updated_at"}, {Field: "id", Desc: true},
		}},
	} {
		got, err := ParseOrder(testObject(), c.in)
		if err != nil {
			t.Errorf("ParseOrder(%q): %v", c.in, err)
			continue
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("ParseOrder(%q) (-want +got):\n%s", c.in, diff)
		}
	}
}

func TestParseOrderErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, reason, inMessage string
	}{
		{"name descending", ReasonInvalidOrderBy, "asc or desc"},
		{"name DESC", ReasonInvalidOrderBy, "asc or desc"},
		{"name desc extra", ReasonInvalidOrderBy, ""},
		{"name,", ReasonInvalidOrderBy, ""},
		{",name", ReasonInvalidOrderBy, ""},
		{"name,,pages", ReasonInvalidOrderBy, ""},
		{"name; drop table", ReasonInvalidOrderBy, ""},
		{`"name"`, ReasonInvalidOrderBy, ""},
		{"name, name desc", ReasonInvalidOrderBy, "more than once"},
		{"meta", ReasonInvalidOrderBy, "json"},
		{"nope", ReasonUnknownField, `"nope"`},
		{"etag", ReasonUnknownField, `"etag"`},
		{"meta.a", ReasonUnknownField, `"meta.a"`},
		{strings.Repeat("x", 1000), ReasonUnknownField, "…"},
	} {
		got, err := ParseOrder(testObject(), c.in)
		var qe *Error
		if !errors.As(err, &qe) {
			t.Errorf("ParseOrder(%q) = %v, %v; want *Error %s", c.in, got, err, c.reason)
			continue
		}
		if qe.Reason != c.reason || !strings.Contains(qe.Message, c.inMessage) || len(qe.Message) > 200 {
			t.Errorf("ParseOrder(%q) = %s: %q; want %s containing %q", c.in, qe.Reason, qe.Message, c.reason, c.inMessage)
		}
	}
}
