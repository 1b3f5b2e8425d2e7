package schema

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFieldIndex(t *testing.T) {
	tests := []struct {
		field Field
		want  Index
		ok    bool
	}{
		{Field{Name: "email", Unique: true}, Index{Name: "email_key", Fields: []string{"email"}, Unique: true}, true},
		{Field{Name: "email", Unique: true, Indexed: true}, Index{Name: "email_key", Fields: []string{"email"}, Unique: true}, true},
		{Field{Name: "age", Indexed: true}, Index{Name: "age_idx", Fields: []string{"age"}}, true},
		{Field{Name: "plain"}, Index{}, false},
	}
	for _, tc := range tests {
		got, ok := FieldIndex(tc.field)
		if ok != tc.ok || !cmp.Equal(got, tc.want) {
			t.Errorf("FieldIndex(%+v) = %+v, %v; want %+v, %v", tc.field, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAllIndexes(t *testing.T) {
	o := base()
	want := []Index{
		{Name: "email_key", Fields: []string{"email"}, Unique: true},
		{Name: "age_idx", Fields: []string{"age"}},
		{Name: "by_name_age", Fields: []string{"name", "age"}},
	}
	got := o.AllIndexes()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AllIndexes (-want +got):\n%s", diff)
	}
	got[2].Fields[0] = "changed"
	if o.Indexes[0].Fields[0] != "name" {
		t.Error("AllIndexes shares the explicit indexes' fields with the object")
	}
}

func TestPhysicalIndexName(t *testing.T) {
	long := "a" + strings.Repeat("b", 62)
	pairs := [][2]string{
		{"contacts", "email_key"},
		{"a_b", "c"},
		{"a", "b_c"},
		{long, long},
		{long, long[:62] + "c"},
		{long[:62] + "c", long},
		{long, "x"},
		{long, "y"},
		{"Weird-Name", "ÜBER index"},
		{"", ""},
	}
	allowed := regexp.MustCompile(`^[a-z0-9_]+$`)
	seen := make(map[string][2]string)
	for _, p := range pairs {
		name := PhysicalIndexName(p[0], p[1])
		if len(name) > 63 {
			t.Errorf("PhysicalIndexName(%q, %q) = %q is %d bytes", p[0], p[1], name, len(name))
		}
		if !allowed.MatchString(name) {
			t.Errorf("PhysicalIndexName(%q, %q) = %q has characters outside [a-z0-9_]", p[0], p[1], name)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("PhysicalIndexName(%q) = PhysicalIndexName(%q) = %q", p, other, name)
		}
		seen[name] = p
		if again := PhysicalIndexName(p[0], p[1]); again != name {
			t.Errorf("PhysicalIndexName(%q, %q) is not stable: %q, then %q", p[0], p[1], name, again)
		}
	}
	// The name is stored in databases: it must never change between
	// versions, or engines would lose track of the indexes they made.
	if got, want := PhysicalIndexName("contacts", "email_key"), "contacts__email_key_f48ad0f0"; got != want {
		t.Errorf("PhysicalIndexName(contacts, email_key) = %q, want %q", got, want)
	}
	idx := Index{Name: "by_name", Fields: []string{"name"}}
	if IndexName("contacts", idx) != PhysicalIndexName("contacts", "by_name") {
		t.Error("IndexName differs from PhysicalIndexName of the index's name")
	}
}

// FuzzPhysicalIndexName checks the name is always a valid, bounded
// PostgreSQL identifier, whatever the input.
func FuzzPhysicalIndexName(f *testing.F) {
	f.Add("contacts", "email_key")
	f.Add("a_b", "c")
	f.Add(strings.Repeat("x", 63), strings.Repeat("y", 63))
	f.Add("", "Ü-ber")
	allowed := regexp.MustCompile(`^[a-z0-9_]+$`)
	f.Fuzz(func(t *testing.T, object, index string) {
		name := PhysicalIndexName(object, index)
		if len(name) > 63 || !allowed.MatchString(name) {
			t.Errorf("PhysicalIndexName(%q, %q) = %q", object, index, name)
		}
	})
}
