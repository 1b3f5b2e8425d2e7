package jsoncodec

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// maxDepth bounds the nesting the fast decoder follows; deeper bodies go to
// protojson.
const maxDepth = 64

// UnmarshalStruct reads data, a JSON object, into s (which must be empty),
// as protojson would, and reports whether it could: a record's body is
// parsed a few times faster than by protojson. Anything it does not take
// (invalid JSON, a duplicate key, a number beyond float64, invalid UTF-8, deep
// nesting) leaves it false and s unusable: the caller hands the body to
// protojson, whose answer (an error, usually) is the one that counts.
func UnmarshalStruct(data []byte, s *structpb.Struct) bool {
	d := decoder{data: data}
	d.space()
	if !d.object(s, 0) {
		return false
	}
	d.space()
	return d.pos == len(d.data)
}

type decoder struct {
	data []byte
	pos  int
}

func (d *decoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// next consumes c, after any whitespace.
func (d *decoder) next(c byte) bool {
	d.space()
	if d.pos < len(d.data) && d.data[d.pos] == c {
		d.pos++
		return true
	}
	return false
}

func (d *decoder) object(s *structpb.Struct, depth int) bool {
	if depth > maxDepth || !d.next('{') {
		return false
	}
	s.Fields = map[string]*structpb.Value{}
	if d.next('}') {
		return true
	}
	for {
		d.space()
		key, ok := d.string()
		if !ok || !d.next(':') {
			return false
		}
		if _, dup := s.Fields[key]; dup {
			return false
		}
		v, ok := d.value(depth)
		if !ok {
			return false
		}
		s.Fields[key] = v
		if d.next(',') {
			continue
		}
		return d.next('}')
	}
}

func (d *decoder) list(depth int) (*structpb.ListValue, bool) {
	if depth > maxDepth || !d.next('[') {
		return nil, false
	}
	l := &structpb.ListValue{}
	if d.next(']') {
		return l, true
	}
	for {
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		l.Values = append(l.Values, v)
		if d.next(',') {
			continue
		}
		return l, d.next(']')
	}
}

func (d *decoder) value(depth int) (*structpb.Value, bool) {
	d.space()
	if d.pos >= len(d.data) {
		return nil, false
	}
	switch c := d.data[d.pos]; {
	case c == '"':
		s, ok := d.string()
		return structpb.NewStringValue(s), ok
	case c == '{':
		s := &structpb.Struct{}
		ok := d.object(s, depth+1)
		return structpb.NewStructValue(s), ok
	case c == '[':
		l, ok := d.list(depth + 1)
		return structpb.NewListValue(l), ok
	case c == '-' || ('0' <= c && c <= '9'):
		return d.number()
	}
	for _, lit := range [...]struct {
		text  string
		value func() *structpb.Value
	}{
		{"true", func() *structpb.Value { return structpb.NewBoolValue(true) }},
		{"false", func() *structpb.Value { return structpb.NewBoolValue(false) }},
		{"null", structpb.NewNullValue},
	} {
		if len(d.data)-d.pos >= len(lit.text) && string(d.data[d.pos:d.pos+len(lit.text)]) == lit.text {
			d.pos += len(lit.text)
			return lit.value(), d.delimited()
		}
	}
	return nil, false
}

// delimited reports whether a literal or number ends where it should: not
// run into a letter or digit ("truex", "1a").
func (d *decoder) delimited() bool {
	if d.pos == len(d.data) {
		return true
	}
	switch d.data[d.pos] {
	case ' ', '\t', '\n', '\r', ',', '}', ']':
		return true
	}
	return false
}

// number reads a number in JSON's grammar, as a float64 that must be finite.
func (d *decoder) number() (*structpb.Value, bool) {
	start := d.pos
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && '0' <= d.data[d.pos] && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.data[d.pos] == '-' {
		d.pos++
	}
	if d.pos < len(d.data) && d.data[d.pos] == '0' {
		d.pos++
	} else if digits() == 0 {
		return nil, false
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return nil, false
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	if !d.delimited() {
		return nil, false
	}
	f, err := strconv.ParseFloat(string(d.data[start:d.pos]), 64)
	if err != nil {
		return nil, false
	}
	return structpb.NewNumberValue(f), true
}

// string reads a quoted string: valid UTF-8, no control characters, the
// escapes JSON has (a lone surrogate is refused, as protojson refuses it).
func (d *decoder) string() (string, bool) {
	if d.pos >= len(d.data) || d.data[d.pos] != '"' {
		return "", false
	}
	d.pos++
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			s := d.data[start:d.pos]
			d.pos++
			return string(s), utf8.Valid(s)
		case c == '\\':
			return d.escaped(start)
		case c < ' ':
			return "", false
		}
		d.pos++
	}
	return "", false
}

// escaped finishes a string from start whose first escape is at d.pos.
func (d *decoder) escaped(start int) (string, bool) {
	b := append([]byte(nil), d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			return string(b), utf8.Valid(b)
		case c < ' ':
			return "", false
		case c != '\\':
			b = append(b, c)
			d.pos++
			continue
		}
		if d.pos+1 >= len(d.data) {
			return "", false
		}
		e := d.data[d.pos+1]
		d.pos += 2
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				if d.pos+1 >= len(d.data) || d.data[d.pos] != '\\' || d.data[d.pos+1] != 'u' {
					return "", false
				}
				d.pos += 2
				low, ok := d.hex4()
				if !ok {
					return "", false
				}
				if r = utf16.DecodeRune(r, low); r == utf8.RuneError {
					return "", false
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (d *decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(d.data[d.pos:d.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	d.pos += 4
	return rune(n), true
}
