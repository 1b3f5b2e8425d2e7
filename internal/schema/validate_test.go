package schema

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// valid returns an object that passes Validate; cases break one thing.
func valid() *Object {
	return &Object{
		Name: "contacts",
		Fields: []Field{
			{Name: "name", Type: TypeText, Required: true, MaxLength: 100, Default: "anon"},
			{Name: "email", Type: TypeText, Unique: true},
			{Name: "age", Type: TypeInteger, Indexed: true, Default: int64(0)},
			{Name: "score", Type: TypeNumber, Default: 1.5},
			{Name: "active", Type: TypeBoolean, Default: true},
			{Name: "seen", Type: TypeTimestamp, Default: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)},
			{Name: "born", Type: TypeDate, Default: "2024-02-29"},
			{Name: "extra", Type: TypeJSON, Default: map[string]any{"a": []any{1.0, "b", true, nil}}},
			{Name: "level", Type: TypeSelect, Options: []string{"low", "high"}, MaxLength: 4, Default: "low"},
		},
		Indexes: []Index{
			{Name: "by_name_age", Fields: []string{"name", "age"}},
			{Name: "recent", Fields: []string{"created_at", "updated_at"}, Unique: true},
		},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(o *Object)
		want []string // violation paths
	}{
		{"valid", func(*Object) {}, nil},
		{"no fields", func(o *Object) { o.Fields, o.Indexes = nil, nil }, nil},
		{"object name uppercase", func(o *Object) { o.Name = "Contacts" }, []string{"name"}},
		{"object name empty", func(o *Object) { o.Name = "" }, []string{"name"}},
		{"object name too long", func(o *Object) { o.Name = "a" + strings.Repeat("b", 63) }, []string{"name"}},
		{"object name longest", func(o *Object) { o.Name = "a" + strings.Repeat("b", 62) }, nil},
		{"field name digit first", func(o *Object) { o.Fields[1].Name = "1email" }, []string{"fields[1].name"}},
		{"field name dash", func(o *Object) { o.Fields[3].Name = "sc-ore" }, []string{"fields[3].name"}},
		{"duplicate field", func(o *Object) { o.Fields[3].Name = "email" }, []string{"fields[3].name"}},
		{"system field id", func(o *Object) { o.Fields[3].Name = "id" }, []string{"fields[3].name"}},
		{"system field etag", func(o *Object) { o.Fields[3].Name = "etag" }, []string{"fields[3].name"}},
		{"system field created_at", func(o *Object) { o.Fields[3].Name = "created_at" }, []string{"fields[3].name"}},
		{"unknown type", func(o *Object) { o.Fields[3].Type, o.Fields[3].Default = "float", nil }, []string{"fields[3].type"}},
		{"empty type", func(o *Object) { o.Fields[3].Type, o.Fields[3].Default = "", nil }, []string{"fields[3].type"}},
		{"select without options", func(o *Object) { o.Fields[8].Options, o.Fields[8].Default = nil, nil }, []string{"fields[8].options"}},
		{"options on text", func(o *Object) { o.Fields[1].Options = []string{"a"} }, []string{"fields[1].options"}},
		{"duplicate option", func(o *Object) { o.Fields[8].Options = []string{"low", "high", "low"} }, []string{"fields[8].options[2]"}},
		{"empty option", func(o *Object) { o.Fields[8].Options = []string{"low", ""} }, []string{"fields[8].options[1]"}},
		{"option longer than max_length", func(o *Object) { o.Fields[8].Options = []string{"low", "highest"} }, []string{"fields[8].options[1]"}},
		{"option too long", func(o *Object) {
			o.Fields[8].MaxLength = 0
			o.Fields[8].Options = []string{"low", strings.Repeat("x", 201)}
		}, []string{"fields[8].options[1]"}},
		{"max_length on integer", func(o *Object) { o.Fields[2].MaxLength = 3 }, []string{"fields[2].max_length"}},
		{"max_length on json", func(o *Object) { o.Fields[7].MaxLength = 3 }, []string{"fields[7].max_length"}},
		{"negative max_length", func(o *Object) { o.Fields[1].MaxLength = -1 }, []string{"fields[1].max_length"}},
		{"max_length counts characters", func(o *Object) { o.Fields[0].MaxLength, o.Fields[0].Default = 4, "äöüß" }, nil},
		{"text default too long", func(o *Object) { o.Fields[0].Default = strings.Repeat("x", 101) }, []string{"fields[0].default_value"}},
		{"text default not a string", func(o *Object) { o.Fields[0].Default = 3 }, []string{"fields[0].default_value"}},
		{"integer default int", func(o *Object) { o.Fields[2].Default = 3 }, []string{"fields[2].default_value"}},
		{"integer default float", func(o *Object) { o.Fields[2].Default = 3.0 }, []string{"fields[2].default_value"}},
		{"number default int64", func(o *Object) { o.Fields[3].Default = int64(1) }, []string{"fields[3].default_value"}},
		{"boolean default string", func(o *Object) { o.Fields[4].Default = "true" }, []string{"fields[4].default_value"}},
		{"timestamp default string", func(o *Object) { o.Fields[5].Default = "2024-01-02T03:04:05Z" }, []string{"fields[5].default_value"}},
		{"date default not a day", func(o *Object) { o.Fields[6].Default = "2023-02-29" }, []string{"fields[6].default_value"}},
		{"date default time.Time", func(o *Object) { o.Fields[6].Default = time.Now() }, []string{"fields[6].default_value"}},
		{"date default with time", func(o *Object) { o.Fields[6].Default = "2024-02-29T00:00:00Z" }, []string{"fields[6].default_value"}},
		{"json default with int", func(o *Object) { o.Fields[7].Default = map[string]any{"a": 1} }, []string{"fields[7].default_value"}},
		{"json default scalar", func(o *Object) { o.Fields[7].Default = "s" }, nil},
		{"json default typed slice", func(o *Object) { o.Fields[7].Default = []string{"a"} }, []string{"fields[7].default_value"}},
		{"select default not an option", func(o *Object) { o.Fields[8].Default = "mid" }, []string{"fields[8].default_value"}},
		{"description of 1000 characters", func(o *Object) { o.Fields[0].Description = strings.Repeat("ü", 1000) }, nil},
		{"description too long", func(o *Object) { o.Fields[0].Description = strings.Repeat("x", 1001) }, []string{"fields[0].description"}},
		{"unique json", func(o *Object) { o.Fields[7].Unique = true }, []string{"fields[7].unique"}},
		{"indexed json", func(o *Object) { o.Fields[7].Indexed = true }, []string{"fields[7].unique"}},
		{"index name invalid", func(o *Object) { o.Indexes[0].Name = "By" }, []string{"indexes[0].name"}},
		{"index names duplicate", func(o *Object) { o.Indexes[1].Name = "by_name_age" }, []string{"indexes[1].name"}},
		{"index name of a unique field", func(o *Object) { o.Indexes[0].Name = "email_key" }, []string{"indexes[0].name"}},
		{"index name reserved", func(o *Object) { o.Indexes[0].Name = "score_idx" }, []string{"indexes[0].name"}},
		{"index without fields", func(o *Object) { o.Indexes[0].Fields = nil }, []string{"indexes[0].fields"}},
		{"index on missing field", func(o *Object) { o.Indexes[0].Fields = []string{"name", "nope"} }, []string{"indexes[0].fields[1]"}},
		{"index on id", func(o *Object) { o.Indexes[0].Fields = []string{"id"} }, []string{"indexes[0].fields[0]"}},
		{"index on etag", func(o *Object) { o.Indexes[0].Fields = []string{"etag"} }, []string{"indexes[0].fields[0]"}},
		{"index field twice", func(o *Object) { o.Indexes[0].Fields = []string{"age", "name", "age"} }, []string{"indexes[0].fields[2]"}},
		{"index on json", func(o *Object) { o.Indexes[0].Fields = []string{"extra"} }, []string{"indexes[0].fields[0]"}},
		{"index too wide", func(o *Object) { o.Indexes[0].Fields = slices.Repeat([]string{"name"}, 17) }, append([]string{"indexes[0].fields"}, paths("indexes[0].fields[%d]", 1, 17)...)},
		{"too many fields", func(o *Object) {
			o.Fields, o.Indexes = nil, nil
			for i := range 501 {
				o.Fields = append(o.Fields, Field{Name: fmt.Sprintf("f%d", i), Type: TypeText})
			}
		}, []string{"fields"}},
		{"many problems at once", func(o *Object) {
			o.Name = "X"
			o.Fields[2].Type = "nope"
			o.Indexes[1].Fields = []string{"gone"}
		}, []string{"name", "fields[2].type", "indexes[1].fields[0]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.edit(o)
			var got []string
			for _, v := range o.Validate() {
				if v.Description == "" {
					t.Errorf("violation of %s has no description", v.Field)
				}
				got = append(got, v.Field)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("violations %q, want %q\n%+v", got, tc.want, o.Validate())
			}
		})
	}
}

// paths returns format applied to from..to-1.
func paths(format string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}
