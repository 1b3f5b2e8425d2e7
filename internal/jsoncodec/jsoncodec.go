// Package jsoncodec marshals the data plane's answers to JSON without
// protojson's generic machinery: records are google.protobuf.Struct, and
// protojson spends most of a page of records sorting each Struct's keys
// through reflection (a quarter of the server's CPU on a REST list).
//
// AppendMessage writes what protojson writes (same names, same values, keys
// of a Struct sorted) for proto3 messages made of scalars, enums, repeated
// fields and Struct/Value/ListValue, and reports false for anything else —
// maps, other well-known types, extensions, invalid UTF-8, non-finite
// numbers in a Value — so that the codecs fall back to protojson, which then
// marshals it or gives its own error. Unmarshaling is protojson's.
package jsoncodec

import (
	"encoding/base64"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Full names of the well-known types written here.
const (
	structName    protoreflect.FullName = "google.protobuf.Struct"
	valueName     protoreflect.FullName = "google.protobuf.Value"
	listValueName protoreflect.FullName = "google.protobuf.ListValue"
	nullValueName protoreflect.FullName = "google.protobuf.NullValue"
)

// AppendMessage appends m's protojson form (protojson.MarshalOptions{}) to
// b; false means m holds something only protojson writes (b's contents past
// its original length are then garbage: append to a copy or discard it).
func AppendMessage(b []byte, m protoreflect.Message) ([]byte, bool) {
	return encoder{}.appendMessage(b, m)
}

// AppendMessageEmitUnpopulated is AppendMessage with protojson's
// EmitUnpopulated: fields without presence are written even when zero, and
// unset singular messages as null (fields of a oneof stay out), as vanguard
// writes REST answers.
func AppendMessageEmitUnpopulated(b []byte, m protoreflect.Message) ([]byte, bool) {
	return encoder{emitUnpopulated: true}.appendMessage(b, m)
}

// AppendValue appends v's protojson form to b; false as for AppendMessage
// (a Value with no kind, a number that is not finite, invalid UTF-8).
func AppendValue(b []byte, v *structpb.Value) ([]byte, bool) {
	return appendValue(b, v)
}

// AppendString appends s as protojson writes a string; false when s is not
// valid UTF-8, which protojson refuses.
func AppendString(b []byte, s string) ([]byte, bool) {
	return appendValidString(b, s)
}

// AppendNumber appends n as protojson writes a Value's number; false when n
// is not finite, which protojson refuses in a Value.
func AppendNumber(b []byte, n float64) ([]byte, bool) {
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return b, false
	}
	return appendFloat(b, n, 64), true
}

type encoder struct{ emitUnpopulated bool }

func (e encoder) appendMessage(b []byte, m protoreflect.Message) ([]byte, bool) {
	switch d := m.Descriptor(); {
	case d.FullName() == structName:
		s, ok := m.Interface().(*structpb.Struct)
		if !ok {
			return b, false
		}
		return appendStruct(b, s)
	case d.FullName() == valueName:
		v, ok := m.Interface().(*structpb.Value)
		if !ok {
			return b, false
		}
		return appendValue(b, v)
	case d.FullName() == listValueName:
		l, ok := m.Interface().(*structpb.ListValue)
		if !ok {
			return b, false
		}
		return appendList(b, l)
	case d.FullName().Parent() == "google.protobuf" || d.Syntax() != protoreflect.Proto3:
		return b, false
	}
	// Proto3 messages cannot be extended, so their fields are all there is;
	// unknown fields are not written, as by protojson.
	var ok bool
	first := true
	b = append(b, '{')
	// protojson writes fields in declaration order.
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsMap() {
			return b, false
		}
		set := m.Has(fd)
		if !set && (!e.emitUnpopulated || fd.ContainingOneof() != nil) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, fd.JSONName())
		b = append(b, ':')
		if !set && !fd.IsList() && fd.Message() != nil {
			b = append(b, "null"...)
			continue
		}
		if b, ok = e.appendField(b, fd, m.Get(fd)); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func (e encoder) appendField(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, bool) {
	if !fd.IsList() {
		return e.appendSingular(b, fd, v)
	}
	l := v.List()
	b = append(b, '[')
	var ok bool
	for i := range l.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = e.appendSingular(b, fd, l.Get(i)); !ok {
			return b, false
		}
	}
	return append(b, ']'), true
}

func (e encoder) appendSingular(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), true
	case protoreflect.StringKind:
		return appendValidString(b, v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		// 64-bit integers are strings in protojson: JSON numbers lose them.
		b = append(b, '"')
		return append(strconv.AppendInt(b, v.Int(), 10), '"'), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendUint(b, v.Uint(), 10), '"'), true
	case protoreflect.FloatKind:
		return appendFloat(b, v.Float(), 32), true
	case protoreflect.DoubleKind:
		return appendFloat(b, v.Float(), 64), true
	case protoreflect.BytesKind:
		b = append(b, '"')
		return append(base64.StdEncoding.AppendEncode(b, v.Bytes()), '"'), true
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == nullValueName {
			return append(b, "null"...), true
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendString(b, string(ev.Name())), true
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), true
	case protoreflect.MessageKind:
		return e.appendMessage(b, v.Message())
	default: // groups
		return b, false
	}
}

// appendStruct writes s's fields with their keys in byte order, as protojson does.
func appendStruct(b []byte, s *structpb.Struct) ([]byte, bool) {
	fields := s.GetFields()
	var buf [32]string
	keys := buf[:0]
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var ok bool
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendValidString(b, k); !ok {
			return b, false
		}
		b = append(b, ':')
		if b, ok = appendValue(b, fields[k]); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func appendList(b []byte, l *structpb.ListValue) ([]byte, bool) {
	b = append(b, '[')
	var ok bool
	for i, v := range l.GetValues() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendValue(b, v); !ok {
			return b, false
		}
	}
	return append(b, ']'), true
}

// appendValue writes v's kind; a Value with no kind or a non-finite number
// is an error in protojson, so it is left to protojson to say so.
func appendValue(b []byte, v *structpb.Value) ([]byte, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return append(b, "null"...), true
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(b, k.BoolValue), true
	case *structpb.Value_NumberValue:
		return AppendNumber(b, k.NumberValue)
	case *structpb.Value_StringValue:
		return appendValidString(b, k.StringValue)
	case *structpb.Value_StructValue:
		return appendStruct(b, k.StructValue)
	case *structpb.Value_ListValue:
		return appendList(b, k.ListValue)
	default:
		return b, false
	}
}

// appendFloat formats n as encoding/json and protojson do: the shortest
// decimal that reads back as n, in exponent form only below 1e-6 and from
// 1e21 on, with a one-digit negative exponent unpadded (1e-7, not 1e-07).
// Non-finite numbers are the strings protojson uses for them.
func appendFloat(b []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(b, `"NaN"`...)
	case math.IsInf(n, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, n, format, -1, bitSize)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendValidString is appendString for text that must be valid UTF-8
// (protojson refuses anything else).
func appendValidString(b []byte, s string) ([]byte, bool) {
	if !utf8.ValidString(s) {
		return b, false
	}
	return appendString(b, s), true
}

// appendString quotes valid UTF-8 s escaping what JSON requires and no more
// (as protojson: '"', '\\' and control characters; <, > and & stay).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
