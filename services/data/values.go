package data

import (
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/schema"
)

// maxRecordBytes bounds the encoded size of one record.
const maxRecordBytes = 1 << 20

// recordToStruct renders a stored record: system fields, then the object's
// fields (NULL ones as null), limited to mask when it is not nil.
func recordToStruct(obj *schema.Object, rec driver.Record, mask map[string]bool) *structpb.Struct {
	out := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(obj.Fields)+4)}
	for _, name := range []string{schema.FieldID, schema.FieldCreatedAt, schema.FieldUpdatedAt, schema.FieldETag} {
		out.Fields[name] = objects.ToValue(rec[name])
	}
	for _, f := range obj.Fields {
		// A mask naming only system fields is not empty: it asks for none
		// of the object's fields.
		if mask != nil && !mask[f.Name] {
			continue
		}
		out.Fields[f.Name] = objects.ToValue(rec[f.Name])
	}
	return out
}

// recordInput converts the fields of a create or update to a record,
// collecting every violation. Creates apply defaults and check required
// fields; updates check only the fields they set.
func recordInput(obj *schema.Object, in *structpb.Struct, create bool, prefix string) (driver.Record, []apierr.FieldViolation) {
	rec := driver.Record{}
	var violations []apierr.FieldViolation
	add := func(field, desc string) {
		violations = append(violations, apierr.FieldViolation{Field: prefix + field, Description: desc})
	}
	for name, v := range in.GetFields() {
		switch name {
		case schema.FieldID:
			if !create {
				add(name, "the id of a record cannot change")
				continue
			}
			s, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok || !validID(s.StringValue) {
				add(name, `want a string of 1 to 128 letters, digits, "-", "_" or ".", other than "." and ".."`)
				continue
			}
			rec[name] = s.StringValue
			continue
		case schema.FieldCreatedAt, schema.FieldUpdatedAt, schema.FieldETag:
			add(name, "server-managed; leave it out")
			continue
		}
		f, ok := obj.Field(name)
		if !ok {
			add(name, "the object has no such field")
			continue
		}
		val, err := objects.Value(f, v)
		if err != nil {
			add(name, err.Error())
			continue
		}
		if val == nil && f.Required {
			add(name, "required")
			continue
		}
		rec[name] = val
	}
	if create {
		for _, f := range obj.Fields {
			if _, set := rec[f.Name]; set {
				continue
			}
			if _, bad := in.GetFields()[f.Name]; bad {
				continue // already reported
			}
			if f.Default != nil {
				rec[f.Name] = f.Default
			} else if f.Required {
				add(f.Name, "required")
			}
		}
	}
	return rec, violations
}

func validID(s string) bool {
	// "." and ".." are path segments every URL normalizer removes: such a
	// record could not be named in a REST path.
	if len(s) == 0 || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
