// Package objects is the object model between the API and the engines: a
// definition as the API writes it (metadatav1.ObjectDefinition), as the
// control plane stores it (protojson), and as the engines use it
// (schema.Object); and the cache the data plane reads definitions from.
// Both the metadata and the data services use it; neither imports the other.
package objects

import (
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/schema"
)

// FromProto converts a definition from the API; violations name the
// offending fields with request paths (object.fields[2].default_value).
func FromProto(name string, p *metadatav1.ObjectDefinition) (*schema.Object, []apierr.FieldViolation) {
	return fromProto(name, p, false)
}

// FromStored converts a definition envplane stored (in the control plane
// or a schema ledger), which was valid when it was stored: a json default
// that today's rules refuse (NUL characters, which older versions took) is
// kept as it was, so that no object stops working after an upgrade.
func FromStored(name string, p *metadatav1.ObjectDefinition) (*schema.Object, []apierr.FieldViolation) {
	return fromProto(name, p, true)
}

func fromProto(name string, p *metadatav1.ObjectDefinition, stored bool) (*schema.Object, []apierr.FieldViolation) {
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
			v, err := Value(field, f.GetDefaultValue())
			if err != nil && stored && field.Type == schema.TypeJSON {
				v, err = f.GetDefaultValue().AsInterface(), nil
			}
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
		var def *structpb.Value // none
		if f.Default != nil {
			def = ToValue(f.Default)
		}
		p.Fields = append(p.Fields, &metadatav1.Field{
			Name:         f.Name,
			Type:         f.Type,
			Required:     f.Required,
			Unique:       f.Unique,
			Indexed:      f.Indexed,
			MaxLength:    int32(f.MaxLength),
			Options:      f.Options,
			Description:  f.Description,
			DefaultValue: def,
		})
	}
	for _, idx := range o.Indexes {
		p.Indexes = append(p.Indexes, &metadatav1.Index{Name: idx.Name, Fields: idx.Fields, Unique: idx.Unique})
	}
	return p
}
