package objects

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/internal/schema"
)

// MaxSafeInteger is the largest integer a JSON number carries exactly.
// Larger integers travel as decimal strings, as protojson writes int64.
const MaxSafeInteger = 1<<53 - 1

// ErrNUL refuses text with the NUL character, which PostgreSQL cannot store
// (in text or jsonb); every engine refuses it alike.
var ErrNUL = errors.New("contains the NUL character U+0000, which no engine stores")

// Value converts a JSON value for field f — a record's field as sent, or
// the field's default in its definition — to the field's Go type (see
// schema.Field.Default), checking everything the field asks of its values:
// one function, so records and defaults cannot drift apart. Null is nil.
func Value(f schema.Field, v *structpb.Value) (any, error) {
	if _, isNull := v.GetKind().(*structpb.Value_NullValue); isNull || v == nil {
		return nil, nil
	}
	switch f.Type {
	case schema.TypeText, schema.TypeSelect:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, errors.New("want a string")
		}
		if strings.ContainsRune(s.StringValue, 0) {
			return nil, ErrNUL
		}
		if f.MaxLength > 0 && utf8.RuneCountInString(s.StringValue) > f.MaxLength {
			return nil, fmt.Errorf("longer than max_length %d", f.MaxLength)
		}
		if f.Type == schema.TypeSelect && !slices.Contains(f.Options, s.StringValue) {
			return nil, errors.New("not one of the field's options")
		}
		return s.StringValue, nil
	case schema.TypeInteger:
		switch k := v.GetKind().(type) {
		case *structpb.Value_NumberValue:
			x := k.NumberValue
			if x != math.Trunc(x) || math.IsInf(x, 0) {
				return nil, errors.New("want a whole number")
			}
			if math.Abs(x) > MaxSafeInteger {
				return nil, errors.New("outside ±(2^53-1), which a JSON number cannot carry exactly: send it as a decimal string")
			}
			return int64(x), nil
		case *structpb.Value_StringValue:
			n, err := strconv.ParseInt(k.StringValue, 10, 64)
			if err != nil {
				return nil, errors.New("want an integer: a number, or a decimal string of a 64-bit integer")
			}
			return n, nil
		}
		return nil, errors.New("want an integer")
	case schema.TypeNumber:
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return nil, errors.New("want a number")
		}
		// Only binary protocols can carry these; JSON has no such numbers.
		if math.IsNaN(n.NumberValue) || math.IsInf(n.NumberValue, 0) {
			return nil, errors.New("want a finite number")
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
		if err != nil {
			return nil, errors.New("want an RFC 3339 timestamp string")
		}
		t = t.UTC().Truncate(time.Microsecond)
		// Written back in UTC, it must be RFC 3339 too (a year of four
		// digits), and PostgreSQL has no year 0.
		if t.Year() < 1 || t.Year() > 9999 {
			return nil, errors.New("outside the years 0001 to 9999 in UTC")
		}
		return t, nil
	case schema.TypeDate:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, errors.New("want a date string YYYY-MM-DD")
		}
		d, err := time.Parse(schema.DateLayout, s.StringValue)
		if err != nil {
			return nil, errors.New("want a date string YYYY-MM-DD")
		}
		// PostgreSQL, like the proleptic Gregorian calendar of ISO 8601
		// dates it follows, has no year 0.
		if d.Year() < 1 {
			return nil, errors.New("want a date from 0001-01-01")
		}
		return s.StringValue, nil
	case schema.TypeJSON:
		if err := CheckJSON(v); err != nil {
			return nil, err
		}
		return v.AsInterface(), nil
	}
	return nil, fmt.Errorf("the field's type %q is unknown", f.Type)
}

// CheckJSON refuses what a json field cannot hold as sent: numbers that are
// not finite (which structpb would turn into the strings "NaN" and
// "Infinity") and the NUL character in strings and keys. Its depth is the
// decoder's to bound, as it is for AsInterface.
func CheckJSON(v *structpb.Value) error {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return errors.New("holds a number that is not finite")
		}
	case *structpb.Value_StringValue:
		if strings.ContainsRune(k.StringValue, 0) {
			return ErrNUL
		}
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if err := CheckJSON(e); err != nil {
				return err
			}
		}
	case *structpb.Value_StructValue:
		for key, e := range k.StructValue.GetFields() {
			if strings.ContainsRune(key, 0) {
				return ErrNUL
			}
			if err := CheckJSON(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// ToValue is the JSON form of a stored value (a record's, or a default):
// integers beyond MaxSafeInteger as decimal strings, timestamps as RFC 3339
// in UTC, null for nil.
func ToValue(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case int64:
		if x > MaxSafeInteger || x < -MaxSafeInteger {
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
