package data

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// maxSafeInteger is the largest integer a JSON client holds exactly; larger
// integers are refused rather than silently rounded.
const maxSafeInteger = 1<<53 - 1

// maxRecordBytes bounds the encoded size of one record.
const maxRecordBytes = 1 << 20

// fieldValue converts a JSON value sent for field f to the field's Go type.
func fieldValue(f schema.Field, v *structpb.Value) (any, error) {
	if _, isNull := v.GetKind().(*structpb.Value_NullValue); isNull || v == nil {
		return nil, nil
	}
	switch f.Type {
	case schema.TypeText, schema.TypeSelect:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("want a string")
		}
		if strings.ContainsRune(s.StringValue, 0) {
			return nil, errNUL
		}
		if f.MaxLength > 0 && utf8.RuneCountInString(s.StringValue) > f.MaxLength {
			return nil, fmt.Errorf("longer than max_length %d", f.MaxLength)
		}
		if f.Type == schema.TypeSelect && !contains(f.Options, s.StringValue) {
			return nil, fmt.Errorf("not one of the field's options")
		}
		return s.StringValue, nil
	case schema.TypeInteger:
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return nil, fmt.Errorf("want an integer")
		}
		x := n.NumberValue
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("want a whole number")
		}
		if math.Abs(x) > maxSafeInteger {
			return nil, fmt.Errorf("outside ±(2^53-1), which JSON cannot carry exactly")
		}
		return int64(x), nil
	case schema.TypeNumber:
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return nil, fmt.Errorf("want a number")
		}
		// Only binary protocols can carry these; JSON has no such numbers.
		if math.IsNaN(n.NumberValue) || math.IsInf(n.NumberValue, 0) {
			return nil, fmt.Errorf("want a finite number")
		}
		return n.NumberValue, nil
	case schema.TypeBoolean:
		b, ok := v.GetKind().(*structpb.Value_BoolValue)
		if !ok {
			return nil, fmt.Errorf("want true or false")
		}
		return b.BoolValue, nil
	case schema.TypeTimestamp:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("want an RFC 3339 timestamp string")
		}
		t, err := time.Parse(time.RFC3339Nano, s.StringValue)
		if err != nil {
			return nil, fmt.Errorf("want an RFC 3339 timestamp string")
		}
		t = t.UTC().Truncate(time.Microsecond)
		// It is written back in UTC, which must be RFC 3339 too: a year
		// of four digits.
		if t.Year() < 0 || t.Year() > 9999 {
			return nil, fmt.Errorf("outside the years 0000 to 9999 in UTC")
		}
		return t, nil
	case schema.TypeDate:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("want a date string YYYY-MM-DD")
		}
		d, err := time.Parse(schema.DateLayout, s.StringValue)
		if err != nil {
			return nil, fmt.Errorf("want a date string YYYY-MM-DD")
		}
		// PostgreSQL, like the proleptic Gregorian calendar of ISO 8601
		// dates it follows, has no year 0.
		if d.Year() < 1 {
			return nil, fmt.Errorf("want a date from 0001-01-01")
		}
		return s.StringValue, nil
	case schema.TypeJSON:
		if err := checkJSON(v); err != nil {
			return nil, err
		}
		return v.AsInterface(), nil
	}
	return nil, fmt.Errorf("the field's type %q is unknown", f.Type)
}

// errNUL refuses text with the NUL character, which PostgreSQL cannot
// store (in text or jsonb); every engine refuses it alike.
var errNUL = errors.New("contains the NUL character U+0000, which no engine stores")

// checkJSON refuses what a json field cannot hold as sent: numbers that are
// not finite (which structpb would turn into the strings "NaN" and
// "Infinity") and the NUL character in strings and keys.
// Its depth is the decoder's to bound, as it is for AsInterface.
func checkJSON(v *structpb.Value) error {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return fmt.Errorf("holds a number that is not finite")
		}
	case *structpb.Value_StringValue:
		if strings.ContainsRune(k.StringValue, 0) {
			return errNUL
		}
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if err := checkJSON(e); err != nil {
				return err
			}
		}
	case *structpb.Value_StructValue:
		for key, e := range k.StructValue.GetFields() {
			if strings.ContainsRune(key, 0) {
				return errNUL
			}
			if err := checkJSON(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// toValue converts a stored value to JSON.
func toValue(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
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
			return structpb.NewNullValue()
		}
		return pv
	}
}

// recordToStruct renders a stored record: system fields, then the object's
// fields (NULL ones as null), limited to mask when it is not nil.
func recordToStruct(obj *schema.Object, rec driver.Record, mask map[string]bool) *structpb.Struct {
	out := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(obj.Fields)+4)}
	for _, name := range []string{schema.FieldID, schema.FieldCreatedAt, schema.FieldUpdatedAt, schema.FieldETag} {
		out.Fields[name] = toValue(rec[name])
	}
	for _, f := range obj.Fields {
		// A mask naming only system fields is not empty: it asks for none
		// of the object's fields.
		if mask != nil && !mask[f.Name] {
			continue
		}
		out.Fields[f.Name] = toValue(rec[f.Name])
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
		val, err := fieldValue(f, v)
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

func contains(options []string, s string) bool {
	for _, o := range options {
		if o == s {
			return true
		}
	}
	return false
}
