package driversql

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/envplane/envplane/internal/schema"
)

// Value is a field value checked against its field type and held in the
// Go type of the type (see schema.Field.Default), for an engine to turn
// into its storage form. Errors name the Go type, never the value, so no
// record data reaches a log through them.
type Value struct {
	Str  string    // text, select, date
	Int  int64     // integer
	Num  float64   // number
	Bool bool      // boolean
	Time time.Time // timestamp, UTC
	JSON []byte    // json, encoded
}

// CheckValue checks that v has fieldType's Go type (int and int32 widen to
// int64, float32 to float64, as drivermem accepts them) and returns it as a
// Value; ok is false for nil, which every engine stores as NULL.
func CheckValue(fieldType string, v any) (val Value, ok bool, err error) {
	if v == nil {
		return Value{}, false, nil
	}
	switch fieldType {
	case schema.TypeText, schema.TypeSelect:
		s, isStr := v.(string)
		if !isStr {
			return Value{}, false, typeError(fieldType, v)
		}
		val.Str = s
	case schema.TypeDate:
		s, isStr := v.(string)
		if !isStr {
			return Value{}, false, typeError(fieldType, v)
		}
		if _, err := time.Parse(schema.DateLayout, s); err != nil {
			return Value{}, false, fmt.Errorf("a date value is not YYYY-MM-DD")
		}
		val.Str = s
	case schema.TypeInteger:
		// Narrower Go integers widen, as drivermem and database/sql do.
		switch n := v.(type) {
		case int64:
			val.Int = n
		case int:
			val.Int = int64(n)
		case int32:
			val.Int = int64(n)
		default:
			return Value{}, false, typeError(fieldType, v)
		}
	case schema.TypeNumber:
		switch n := v.(type) {
		case float64:
			val.Num = n
		case float32:
			val.Num = float64(n)
		default:
			return Value{}, false, typeError(fieldType, v)
		}
		if math.IsNaN(val.Num) || math.IsInf(val.Num, 0) {
			return Value{}, false, fmt.Errorf("a number value is not finite")
		}
		val.Num += 0 // -0 is stored as 0, as drivermem stores it
	case schema.TypeBoolean:
		b, isBool := v.(bool)
		if !isBool {
			return Value{}, false, typeError(fieldType, v)
		}
		val.Bool = b
	case schema.TypeTimestamp:
		t, isTime := v.(time.Time)
		if !isTime {
			return Value{}, false, typeError(fieldType, v)
		}
		val.Time = t.UTC()
	case schema.TypeJSON:
		b, err := json.Marshal(v)
		if err != nil {
			return Value{}, false, fmt.Errorf("a json value of Go type %T cannot be encoded", v)
		}
		val.JSON = b
	default:
		return Value{}, false, fmt.Errorf("unknown field type %q", fieldType)
	}
	return val, true, nil
}

func typeError(fieldType string, v any) error {
	return fmt.Errorf("a %s value cannot be of Go type %T", fieldType, v)
}

// DecodeJSON decodes a stored JSON document into the Go values
// encoding/json gives an any: map[string]any, []any, string, float64, bool.
func DecodeJSON(b []byte) (any, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("stored json does not decode")
	}
	return v, nil
}
