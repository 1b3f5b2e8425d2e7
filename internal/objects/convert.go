// Package objects is the object model between the API and the engines: a
// definition as the API writes it (metadatav1.ObjectDefinition), as the
// control plane stores it (protojson), and as the engines use it
// (schema.Object); and the cache the data plane reads definitions from.
// Both the metadata and the data services use it; neither imports the other.
package objects

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/schema"
)

// maxSafeInteger is the largest integer JSON clients represent exactly.
const maxSafeInteger = 1<<53 - 1

// FromProto converts a definition from the API; violations name the
// offending fields with request paths (object.fields[2].default_value).
func FromProto(name string, p *metadatav1.ObjectDefinition) (*schema.Object, []apierr.FieldViolation) {
	obj := &schema.Object{Name: name, DisplayName: p.GetDisplayName(), Description: p.GetDescription()}
	var violations []apierr.FieldViolation
	for i, f := range p.GetFields() {
		field := schema.Field{
			Name:        f.GetName(),
			Type:        f.GetType(),
			Required:    f.GetRequired(),
			Unique:      f.GetUnique(),
			Indexed:     f.GetIndexed(),
			MaxLength:   int(f.GetMaxLength()),
			Options:     f.GetOptions(),
			Description: f.GetDescription(),
		}
		if f.GetDefaultValue() != nil {
			v, err := defaultFromProto(field.Type, f.GetDefaultValue())
			if err != nil {
				violations = append(violations, apierr.FieldViolation{
					Field: fmt.Sprintf("object.fields[%d].default_value", i), Description: err.Error(),
				})
			}
			field.Default = v
		}
		obj.Fields = append(obj.Fields, field)
	}
	for _, idx := range p.GetIndexes() {
		obj.Indexes = append(obj.Indexes, schema.Index{Name: idx.GetName(), Fields: idx.GetFields(), Unique: idx.GetUnique()})
	}
	for _, v := range obj.Validate() {
		violations = append(violations, apierr.FieldViolation{Field: "object." + v.Field, Description: v.Description})
	}
	return obj, violations
}

func defaultFromProto(typ string, v *structpb.Value) (any, error) {
	if _, isNull := v.GetKind().(*structpb.Value_NullValue); isNull {
		return nil, nil
	}
	switch typ {
	case schema.TypeText, schema.TypeSelect:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, errors.New("want a string")
		}
		if strings.ContainsRune(s.StringValue, 0) {
			return nil, errors.New("must not contain NUL characters")
		}
		return s.StringValue, nil
	case schema.TypeInteger:
		switch k := v.GetKind().(type) {
		case *structpb.Value_NumberValue:
			n := k.NumberValue
			if n != math.Trunc(n) || math.Abs(n) > maxSafeInteger {
				return nil, errors.New("want a whole number within ±(2^53-1); send larger integers as strings")
			}
			return int64(n), nil
		case *structpb.Value_StringValue:
			n, err := strconv.ParseInt(k.StringValue, 10, 64)
			if err != nil {
				return nil, errors.New("want a 64-bit integer")
			}
			return n, nil
		}
		return nil, errors.New("want an integer")
	case schema.TypeNumber:
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return nil, errors.New("want a number")
		}
		return n.NumberValue, nil
	case schema.TypeBoolean:
		b, ok := v.GetKind().(*structpb.Value_BoolValue)
		if !ok {
			return nil, errors.New("want true or false")
		}
		return b.BoolValue, nil
	case schema.TypeTimestamp:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, errors.New("want an RFC 3339 timestamp string")
		}
		t, err := time.Parse(time.RFC3339Nano, s.StringValue)
		if err != nil || t.UTC().Year() < 1 || t.UTC().Year() > 9999 {
			return nil, errors.New("want an RFC 3339 timestamp string between years 1 and 9999")
		}
		return t.UTC().Truncate(time.Microsecond), nil
	case schema.TypeDate:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, errors.New("want a date string YYYY-MM-DD")
		}
		if d, err := time.Parse(schema.DateLayout, s.StringValue); err != nil || d.Year() < 1 {
			return nil, errors.New("want a date string YYYY-MM-DD from year 1")
		}
		return s.StringValue, nil
	case schema.TypeJSON:
		return v.AsInterface(), nil
	}
	return nil, errors.New("the field's type takes no default")
}

func defaultToProto(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return nil
	case int64:
		if x > maxSafeInteger || x < -maxSafeInteger {
			return structpb.NewStringValue(strconv.FormatInt(x, 10))
		}
		return structpb.NewNumberValue(float64(x))
	case time.Time:
		return structpb.NewStringValue(x.UTC().Format(time.RFC3339Nano))
	default:
		pv, err := structpb.NewValue(x)
		if err != nil {
			return nil
		}
		return pv
	}
}

func ToProto(o *schema.Object) *metadatav1.ObjectDefinition {
	p := &metadatav1.ObjectDefinition{
		Name:        o.Name,
		DisplayName: o.DisplayName,
		Description: o.Description,
		Version:     o.Version,
	}
	if !o.CreateTime.IsZero() {
		p.CreateTime = timestamppb.New(o.CreateTime)
	}
	if !o.UpdateTime.IsZero() {
		p.UpdateTime = timestamppb.New(o.UpdateTime)
	}
	for _, f := range o.Fields {
		p.Fields = append(p.Fields, &metadatav1.Field{
			Name:         f.Name,
			Type:         f.Type,
			Required:     f.Required,
			Unique:       f.Unique,
			Indexed:      f.Indexed,
			MaxLength:    int32(f.MaxLength),
			Options:      f.Options,
			Description:  f.Description,
			DefaultValue: defaultToProto(f.Default),
		})
	}
	for _, idx := range o.Indexes {
		p.Indexes = append(p.Indexes, &metadatav1.Index{Name: idx.Name, Fields: idx.Fields, Unique: idx.Unique})
	}
	return p
}
