package schema

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// step is the part of a Step a case checks.
type step struct {
	Kind        StepKind
	Target      string
	Destructive bool
}

func summarize(steps []Step) []step {
	var out []step
	for _, s := range steps {
		out = append(out, step{s.Kind, s.Target, s.Destructive})
	}
	return out
}

// base is the definition the evolution cases start from.
func base() *Object {
	return &Object{
		Name:        "contacts",
		DisplayName: "Contacts",
		Fields: []Field{
			{Name: "name", Type: TypeText, MaxLength: 50},
			{Name: "email", Type: TypeText, Unique: true},
			{Name: "age", Type: TypeInteger, Indexed: true},
			{Name: "level", Type: TypeSelect, Options: []string{"low", "mid", "high"}},
			{Name: "note", Type: TypeText, Required: true, Default: "-"},
		},
		Indexes: []Index{{Name: "by_name_age", Fields: []string{"name", "age"}}},
		Version: 3,
	}
}

// edit returns a copy of base changed by fn.
func edit(fn func(o *Object)) *Object {
	o := base()
	fn(o)
	return o
}

func field(o *Object, name string) *Field {
	for i := range o.Fields {
		if o.Fields[i].Name == name {
			return &o.Fields[i]
		}
	}
	panic("no field " + name)
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name     string
		from, to *Object
		want     []step
	}{
		{
			name: "create",
			to:   base(),
			want: []step{
				{StepCreateTable, "", false},
				// A new table is empty: its unique index cannot fail.
				{StepAddIndex, "email_key", false},
				{StepAddIndex, "age_idx", false},
				{StepAddIndex, "by_name_age", false},
			},
		},
		{name: "same", from: base(), to: base()},
		{
			name: "display name, description, version and times",
			from: base(),
			to: edit(func(o *Object) {
				o.DisplayName, o.Description, o.Version, o.UpdateTime = "People", "who", 4, time.Now()
			}),
		},
		{
			name: "field order",
			from: base(),
			to:   edit(func(o *Object) { slices.Reverse(o.Fields) }),
		},
		{
			name: "add field",
			from: base(),
			to:   edit(func(o *Object) { o.Fields = append(o.Fields, Field{Name: "city", Type: TypeText}) }),
			want: []step{{StepAddField, "city", false}},
		},
		{
			name: "add required field with a default",
			from: base(),
			to: edit(func(o *Object) {
				o.Fields = append(o.Fields, Field{Name: "tier", Type: TypeInteger, Required: true, Default: int64(1)})
			}),
			want: []step{{StepAddField, "tier", false}},
		},
		{
			name: "add required field without a default",
			from: base(),
			to: edit(func(o *Object) {
				o.Fields = append(o.Fields, Field{Name: "tier", Type: TypeInteger, Required: true})
			}),
			want: []step{{StepAddField, "tier", true}},
		},
		{
			name: "add unique field",
			from: base(),
			to: edit(func(o *Object) {
				o.Fields = append(o.Fields, Field{Name: "code", Type: TypeText, Unique: true})
			}),
			want: []step{{StepAddField, "code", false}, {StepAddIndex, "code_key", true}},
		},
		{
			name: "drop field",
			from: base(),
			to:   edit(func(o *Object) { o.Fields = slices.Delete(o.Fields, 3, 4) }),
			want: []step{{StepDropField, "level", true}},
		},
		{
			name: "drop unique field",
			from: base(),
			to:   edit(func(o *Object) { o.Fields = slices.Delete(o.Fields, 1, 2) }),
			want: []step{{StepDropIndex, "email_key", false}, {StepDropField, "email", true}},
		},
		{
			name: "drop indexed field with its composite index",
			from: base(),
			to: edit(func(o *Object) {
				o.Fields = slices.Delete(o.Fields, 2, 3)
				o.Indexes = nil
			}),
			want: []step{
				{StepDropIndex, "age_idx", false},
				{StepDropIndex, "by_name_age", false},
				{StepDropField, "age", true},
			},
		},
		{
			name: "change type",
			from: base(),
			to:   edit(func(o *Object) { field(o, "note").Type, field(o, "note").Default = TypeJSON, nil }),
			want: []step{{StepChangeField, "note", true}},
		},
		{
			name: "change type of an indexed field rebuilds its indexes",
			from: base(),
			to:   edit(func(o *Object) { field(o, "age").Type = TypeNumber }),
			want: []step{
				{StepDropIndex, "age_idx", false},
				{StepDropIndex, "by_name_age", false},
				{StepChangeField, "age", true},
				{StepAddIndex, "age_idx", false},
				{StepAddIndex, "by_name_age", false},
			},
		},
		{
			name: "change type of a unique field",
			from: base(),
			to:   edit(func(o *Object) { field(o, "email").Type = TypeInteger }),
			want: []step{
				{StepDropIndex, "email_key", false},
				{StepChangeField, "email", true},
				{StepAddIndex, "email_key", true},
			},
		},
		{
			name: "required tightened",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").Required = true }),
			want: []step{{StepChangeField, "name", true}},
		},
		{
			name: "required tightened with a default",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").Required, field(o, "name").Default = true, "x" }),
			want: []step{{StepChangeField, "name", true}},
		},
		{
			name: "required loosened",
			from: base(),
			to:   edit(func(o *Object) { field(o, "note").Required = false }),
			want: []step{{StepChangeField, "note", false}},
		},
		{
			name: "max_length added",
			from: base(),
			to:   edit(func(o *Object) { field(o, "note").MaxLength = 10 }),
			want: []step{{StepChangeField, "note", true}},
		},
		{
			name: "max_length decreased",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").MaxLength = 49 }),
			want: []step{{StepChangeField, "name", true}},
		},
		{
			name: "max_length increased",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").MaxLength = 51 }),
			want: []step{{StepChangeField, "name", false}},
		},
		{
			name: "max_length removed",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").MaxLength = 0 }),
			want: []step{{StepChangeField, "name", false}},
		},
		{
			name: "option removed",
			from: base(),
			to:   edit(func(o *Object) { field(o, "level").Options = []string{"low", "high"} }),
			want: []step{{StepChangeField, "level", true}},
		},
		{
			name: "option added",
			from: base(),
			to:   edit(func(o *Object) { field(o, "level").Options = []string{"low", "mid", "high", "max"} }),
			want: []step{{StepChangeField, "level", false}},
		},
		{
			name: "options reordered",
			from: base(),
			to:   edit(func(o *Object) { field(o, "level").Options = []string{"high", "mid", "low"} }),
			want: []step{{StepChangeField, "level", false}},
		},
		{
			name: "default changed",
			from: base(),
			to:   edit(func(o *Object) { field(o, "note").Default = "?" }),
			want: []step{{StepChangeField, "note", false}},
		},
		{
			name: "default added",
			from: base(),
			to:   edit(func(o *Object) { field(o, "age").Default = int64(18) }),
			want: []step{{StepChangeField, "age", false}},
		},
		{
			name: "description changed",
			from: base(),
			to:   edit(func(o *Object) { field(o, "age").Description = "years" }),
			want: []step{{StepChangeField, "age", false}},
		},
		{
			name: "unique added",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").Unique = true }),
			want: []step{{StepAddIndex, "name_key", true}},
		},
		{
			name: "unique removed",
			from: base(),
			to:   edit(func(o *Object) { field(o, "email").Unique = false }),
			want: []step{{StepDropIndex, "email_key", false}},
		},
		{
			name: "unique removed, indexed kept",
			from: base(),
			to:   edit(func(o *Object) { field(o, "email").Unique, field(o, "email").Indexed = false, true }),
			want: []step{{StepDropIndex, "email_key", false}, {StepAddIndex, "email_idx", false}},
		},
		{
			name: "indexed on a unique field changes nothing",
			from: base(),
			to:   edit(func(o *Object) { field(o, "email").Indexed = true }),
		},
		{
			name: "indexed added",
			from: base(),
			to:   edit(func(o *Object) { field(o, "name").Indexed = true }),
			want: []step{{StepAddIndex, "name_idx", false}},
		},
		{
			name: "indexed removed",
			from: base(),
			to:   edit(func(o *Object) { field(o, "age").Indexed = false }),
			want: []step{{StepDropIndex, "age_idx", false}},
		},
		{
			name: "index added",
			from: base(),
			to:   edit(func(o *Object) { o.Indexes = append(o.Indexes, Index{Name: "by_level", Fields: []string{"level"}}) }),
			want: []step{{StepAddIndex, "by_level", false}},
		},
		{
			name: "unique index added",
			from: base(),
			to: edit(func(o *Object) {
				o.Indexes = append(o.Indexes, Index{Name: "one_per_level", Fields: []string{"level", "created_at"}, Unique: true})
			}),
			want: []step{{StepAddIndex, "one_per_level", true}},
		},
		{
			name: "index removed",
			from: base(),
			to:   edit(func(o *Object) { o.Indexes = nil }),
			want: []step{{StepDropIndex, "by_name_age", false}},
		},
		{
			name: "index fields changed",
			from: base(),
			to:   edit(func(o *Object) { o.Indexes[0].Fields = []string{"age", "name"} }),
			want: []step{{StepDropIndex, "by_name_age", false}, {StepAddIndex, "by_name_age", false}},
		},
		{
			name: "index made unique",
			from: base(),
			to:   edit(func(o *Object) { o.Indexes[0].Unique = true }),
			want: []step{{StepDropIndex, "by_name_age", false}, {StepAddIndex, "by_name_age", true}},
		},
		{
			name: "index renamed",
			from: base(),
			to:   edit(func(o *Object) { o.Indexes[0].Name = "name_then_age" }),
			want: []step{{StepDropIndex, "by_name_age", false}, {StepAddIndex, "name_then_age", false}},
		},
		{
			name: "everything at once, in order",
			from: base(),
			to: edit(func(o *Object) {
				o.Fields = []Field{
					{Name: "zip", Type: TypeText, Indexed: true},
					{Name: "level", Type: TypeSelect, Options: []string{"low", "mid", "high", "max"}},
					{Name: "age", Type: TypeInteger},
					{Name: "name", Type: TypeText, MaxLength: 10, Unique: true},
					{Name: "city", Type: TypeText},
				}
				o.Indexes = []Index{{Name: "by_city", Fields: []string{"city", "zip"}}}
			}),
			want: []step{
				{StepDropIndex, "email_key", false},
				{StepDropIndex, "age_idx", false},
				{StepDropIndex, "by_name_age", false},
				{StepDropField, "email", true},
				{StepDropField, "note", true},
				{StepAddField, "zip", false},
				{StepAddField, "city", false},
				{StepChangeField, "level", false},
				{StepChangeField, "name", true},
				{StepAddIndex, "zip_idx", false},
				{StepAddIndex, "name_key", true},
				{StepAddIndex, "by_city", false},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range []*Object{tc.from, tc.to} {
				if o != nil {
					if v := o.Validate(); len(v) > 0 {
						t.Fatalf("fixture invalid: %v", v)
					}
				}
			}
			steps := Plan(tc.from, tc.to)
			if diff := cmp.Diff(tc.want, summarize(steps)); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
			for _, s := range steps {
				if s.Description == "" {
					t.Errorf("%s %s has no description", s.Kind, s.Target)
				}
				checkStepPayload(t, tc.from, tc.to, s)
			}
			if tc.from != nil && len(Plan(tc.to, tc.to)) != 0 {
				t.Errorf("Plan(to, to) = %v, want none", Plan(tc.to, tc.to))
			}
		})
	}
}

// checkStepPayload checks the field and index a step carries.
func checkStepPayload(t *testing.T, from, to *Object, s Step) {
	t.Helper()
	switch s.Kind {
	case StepAddField, StepChangeField:
		want, _ := to.Field(s.Target)
		if s.Field == nil || !fieldEqual(*s.Field, want) {
			t.Errorf("%s %s carries field %+v, want %+v", s.Kind, s.Target, s.Field, want)
		}
		if s.Kind == StepChangeField {
			prev, _ := from.Field(s.Target)
			if s.Previous == nil || !fieldEqual(*s.Previous, prev) {
				t.Errorf("change_field %s carries previous %+v, want %+v", s.Target, s.Previous, prev)
			}
		}
	case StepDropField:
		want, _ := from.Field(s.Target)
		if s.Field == nil || !fieldEqual(*s.Field, want) {
			t.Errorf("drop_field %s carries field %+v, want %+v", s.Target, s.Field, want)
		}
	case StepAddIndex, StepDropIndex:
		if s.Index == nil || s.Index.Name != s.Target || len(s.Index.Fields) == 0 {
			t.Errorf("%s %s carries index %+v", s.Kind, s.Target, s.Index)
		}
	}
}

func TestPlanDescriptions(t *testing.T) {
	from := &Object{Name: "people", Fields: []Field{
		{Name: "name", Type: TypeText, MaxLength: 10},
		{Name: "old", Type: TypeInteger},
		{Name: "level", Type: TypeSelect, Options: []string{"a", "b"}},
	}}
	to := &Object{Name: "people", Fields: []Field{
		{Name: "name", Type: TypeText, MaxLength: 5, Required: true, Default: "x"},
		{Name: "level", Type: TypeSelect, Options: []string{"b", "c"}, Unique: true},
		{Name: "age", Type: TypeInteger},
		{Name: "tier", Type: TypeInteger, Required: true, Default: int64(1)},
	}, Indexes: []Index{{Name: "by_name", Fields: []string{"name", "age"}}}}
	want := []string{
		`drop field "old" (integer) and its values`,
		`add field "age" (integer)`,
		`add field "tier" (integer, required, existing records get the default 1)`,
		`change field "name": now required, empty values get the default "x"; max_length 10 → 5; default none → "x"`,
		`change field "level": options removed: a; options added: c`,
		`add unique index "level_key" on (level)`,
		`add index "by_name" on (name, age)`,
	}
	var got []string
	for _, s := range Plan(from, to) {
		got = append(got, s.Description)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("descriptions (-want +got):\n%s", diff)
	}
	create := Plan(nil, to)
	if got := create[0].Description; got != `create table "people" with 4 fields` {
		t.Errorf("create_table description %q", got)
	}
	if got := Plan(to, from)[0].Description; got != `drop index "level_key"` {
		t.Errorf("drop_index description %q", got)
	}
}

// TestPlanDoesNotAlias checks steps hold copies: a service keeping the steps
// and the definition must be free to change either.
func TestPlanDoesNotAlias(t *testing.T) {
	to := base()
	steps := Plan(nil, edit(func(o *Object) { o.Indexes = nil }))
	steps = append(steps, Plan(base(), edit(func(o *Object) { field(o, "level").Options = []string{"low"} }))...)
	steps = append(steps, Plan(nil, to)...)
	for _, s := range steps {
		if s.Field != nil && len(s.Field.Options) > 0 {
			s.Field.Options[0] = "changed"
		}
		if s.Index != nil {
			s.Index.Fields[0] = "changed"
		}
	}
	if diff := cmp.Diff(base(), to); diff != "" {
		t.Errorf("changing steps changed the definition:\n%s", diff)
	}
}

func TestChanged(t *testing.T) {
	zone := time.FixedZone("X", 3600)
	withTime := func(ts time.Time) *Object {
		return edit(func(o *Object) {
			o.Fields = append(o.Fields, Field{Name: "at", Type: TypeTimestamp, Default: ts})
		})
	}
	instant := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name     string
		from, to *Object
		want     bool
	}{
		{"nil nil", nil, nil, false},
		{"nil to object", nil, base(), true},
		{"same", base(), base(), false},
		{"version and times", base(), edit(func(o *Object) { o.Version, o.CreateTime, o.UpdateTime = 9, time.Now(), time.Now() }), false},
		{"display name", base(), edit(func(o *Object) { o.DisplayName = "People" }), true},
		{"description", base(), edit(func(o *Object) { o.Description = "who" }), true},
		{"field order", base(), edit(func(o *Object) { slices.Reverse(o.Fields) }), true},
		{"field description", base(), edit(func(o *Object) { field(o, "age").Description = "y" }), true},
		{"indexed", base(), edit(func(o *Object) { field(o, "name").Indexed = true }), true},
		{"index field order", base(), edit(func(o *Object) { o.Indexes[0].Fields = []string{"age", "name"} }), true},
		{"options nil and empty", edit(func(o *Object) { field(o, "name").Options = []string{} }), base(), false},
		{"indexes nil and empty", edit(func(o *Object) { o.Indexes = []Index{} }), edit(func(o *Object) { o.Indexes = nil }), false},
		{"default instant in another zone", withTime(instant), withTime(instant.In(zone)), false},
		{"default instant moved", withTime(instant), withTime(instant.Add(time.Microsecond)), true},
		{"json default", edit(func(o *Object) { field(o, "note").Type = TypeJSON; field(o, "note").Default = map[string]any{"a": 1.0} }),
			edit(func(o *Object) { field(o, "note").Type = TypeJSON; field(o, "note").Default = map[string]any{"a": 2.0} }), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Changed(tc.from, tc.to); got != tc.want {
				t.Errorf("Changed = %v, want %v", got, tc.want)
			}
			if tc.from != nil && tc.to != nil && !tc.want && len(Plan(tc.from, tc.to)) != 0 {
				t.Errorf("unchanged, yet Plan = %v", summarize(Plan(tc.from, tc.to)))
			}
		})
	}
}
