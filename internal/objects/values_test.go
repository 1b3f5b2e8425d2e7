package objects_test

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/schema"
)

// TestDefaultsFollowRecords: a value a field refuses in a record it refuses
// as its default, and one it takes it takes as both (the two had drifted:
// NaN, NUL in json and timestamps of year 0 differed).
func TestDefaultsFollowRecords(t *testing.T) {
	t.Parallel()
	str, num := structpb.NewStringValue, structpb.NewNumberValue
	nulJSON, _ := structpb.NewValue(map[string]any{"a\x00": 1})
	cases := []struct {
		field schema.Field
		value *structpb.Value
		ok    bool
	}{
		{schema.Field{Name: "n", Type: schema.TypeNumber}, num(math.NaN()), false},
		{schema.Field{Name: "n", Type: schema.TypeNumber}, num(math.Inf(1)), false},
		{schema.Field{Name: "n", Type: schema.TypeNumber}, num(1.5), true},
		{schema.Field{Name: "j", Type: schema.TypeJSON}, nulJSON, false},
		{schema.Field{Name: "j", Type: schema.TypeJSON}, num(math.NaN()), false},
		{schema.Field{Name: "j", Type: schema.TypeJSON}, str("fine"), true},
		{schema.Field{Name: "t", Type: schema.TypeText}, str("a\x00b"), false},
		{schema.Field{Name: "t", Type: schema.TypeText, MaxLength: 3}, str("four"), false},
		{schema.Field{Name: "s", Type: schema.TypeSelect, Options: []string{"a", "b"}}, str("c"), false},
		{schema.Field{Name: "s", Type: schema.TypeSelect, Options: []string{"a", "b"}}, str("b"), true},
		{schema.Field{Name: "ts", Type: schema.TypeTimestamp}, str("0000-06-01T00:00:00Z"), false},
		{schema.Field{Name: "ts", Type: schema.TypeTimestamp}, str("0001-01-01T00:00:00Z"), true},
		{schema.Field{Name: "ts", Type: schema.TypeTimestamp}, str("10000-01-01T00:00:00Z"), false},
		{schema.Field{Name: "d", Type: schema.TypeDate}, str("0000-12-31"), false},
		{schema.Field{Name: "i", Type: schema.TypeInteger}, str("9223372036854775807"), true},
		{schema.Field{Name: "i", Type: schema.TypeInteger}, str("9223372036854775808"), false},
		{schema.Field{Name: "i", Type: schema.TypeInteger}, num(1 << 54), false},
		{schema.Field{Name: "i", Type: schema.TypeInteger}, num(-(1<<53 - 1)), true},
		{schema.Field{Name: "i", Type: schema.TypeInteger}, str("1e3"), false},
		{schema.Field{Name: "b", Type: schema.TypeBoolean}, str("true"), false},
	}
	for _, c := range cases {
		what := c.field.Type + " " + strings.ReplaceAll(c.value.String(), "\x00", `\0`)
		_, recErr := objects.Value(c.field, c.value)
		if (recErr == nil) != c.ok {
			t.Errorf("record %s: %v, want ok %v", what, recErr, c.ok)
		}
		p := &metadatav1.Field{Name: c.field.Name, Type: c.field.Type, MaxLength: int32(c.field.MaxLength), Options: c.field.Options, DefaultValue: c.value}
		obj, violations := objects.FromProto("thing", &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{p}})
		if (len(violations) == 0) != c.ok {
			t.Errorf("default %s: %v, want ok %v", what, violations, c.ok)
		}
		if c.ok && len(violations) == 0 {
			// The default's JSON form reads back as the same value.
			back := objects.ToProto(obj).GetFields()[0].GetDefaultValue()
			again, err := objects.Value(c.field, back)
			if err != nil || !sameValue(again, obj.Fields[0].Default) {
				t.Errorf("default %s: read back as %v (%v), want %v", what, again, err, obj.Fields[0].Default)
			}
		}
	}
}

func sameValue(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return reflect.DeepEqual(a, b)
}

// TestStoredDefaultsStillDecode: a json default with a NUL character,
// which versions before one Value for records and defaults stored, still
// decodes from the control plane (the object keeps working), while a new
// definition with it is refused.
func TestStoredDefaultsStillDecode(t *testing.T) {
	t.Parallel()
	stored := []byte(`{"fields":[{"name":"j","type":"json","defaultValue":{"k":"a\u0000b"}}]}`)
	obj, err := objects.Decode(controlplane.ObjectDefinition{EnvironmentID: "e", Name: "thing", Definition: stored, Version: 3})
	if err != nil {
		t.Fatalf("Decode of a stored definition with a NUL in a json default: %v", err)
	}
	if got, want := obj.Fields[0].Default, map[string]any{"k": "a\x00b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("the stored default = %#v, want %#v", got, want)
	}
	var p metadatav1.ObjectDefinition
	if err := protojson.Unmarshal(stored, &p); err != nil {
		t.Fatal(err)
	}
	if _, violations := objects.FromProto("thing", &p); len(violations) == 0 {
		t.Error("FromProto took a json default with a NUL character")
	}
}
