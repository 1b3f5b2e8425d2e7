package drivermem

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// systemTypes are the field types of the columns every table has.
var systemTypes = map[string]string{
	schema.FieldID:        schema.TypeText,
	schema.FieldCreatedAt: schema.TypeTimestamp,
	schema.FieldUpdatedAt: schema.TypeTimestamp,
	schema.FieldETag:      schema.TypeText,
}

// normalize returns v as stored in a column of type typ: the field's Go
// type, timestamps in UTC truncated to the microsecond, JSON as
// encoding/json decodes it (a deep copy, with the same number semantics as
// the SQL engines that store JSON text). nil stays nil. Integer Go types
// other than int64 are widened, as a SQL engine would bind them.
func normalize(typ string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case schema.TypeText, schema.TypeSelect:
		if s, ok := v.(string); ok {
			return s, nil
		}
	case schema.TypeDate:
		if s, ok := v.(string); ok {
			if _, err := time.Parse(schema.DateLayout, s); err != nil {
				return nil, fmt.Errorf("%q is not a YYYY-MM-DD date", s)
			}
			return s, nil
		}
	case schema.TypeInteger:
		switch n := v.(type) {
		case int64:
			return n, nil
		case int:
			return int64(n), nil
		case int32:
			return int64(n), nil
		}
	case schema.TypeNumber:
		switch n := v.(type) {
		case float64:
			if math.IsNaN(n) || math.IsInf(n, 0) {
				return nil, fmt.Errorf("%v is not a finite number", n)
			}
			return n + 0, nil // -0 is 0, as in the SQL engines' indexes
		case float32:
			return float64(n), nil
		}
	case schema.TypeBoolean:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case schema.TypeTimestamp:
		if t, ok := v.(time.Time); ok {
			return t.UTC().Truncate(time.Microsecond), nil
		}
	case schema.TypeJSON:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("not a JSON value: %w", err)
		}
		var out any
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, err
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown field type %q", typ)
	}
	return nil, fmt.Errorf("%T is not a value of a %s field", v, typ)
}

// copyOut returns r for a caller: a new map, JSON values deep-copied (all
// other values are immutable), so the caller shares no memory with the
// store.
func copyOut(r driver.Record) driver.Record {
	if r == nil {
		return nil
	}
	out := make(driver.Record, len(r))
	for k, v := range r {
		out[k] = copyJSON(v)
	}
	return out
}

func copyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = copyJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = copyJSON(e)
		}
		return s
	}
	return v
}

// compareValues orders two non-NULL values of one field type: numbers and
// times by value, text by bytes, false before true.
func compareValues(a, b any) int {
	switch x := a.(type) {
	case int64:
		return cmp.Compare(x, b.(int64))
	case float64:
		return cmp.Compare(x, b.(float64))
	case string:
		return strings.Compare(x, b.(string))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case time.Time:
		return x.Compare(b.(time.Time))
	}
	// JSON has no order; Query refuses to order by it.
	return 0
}

// compareNullable orders values with NULL before every value.
func compareNullable(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return compareValues(a, b)
}

// uniqueKey encodes the values of fields in r as one string, or reports
// false when any is NULL: NULLs never collide in a unique index.
func uniqueKey(r driver.Record, fields []string) (string, bool) {
	var b strings.Builder
	for _, f := range fields {
		v := r[f]
		if v == nil {
			return "", false
		}
		switch x := v.(type) {
		case string:
			b.WriteString(strconv.Quote(x))
		case int64:
			b.WriteString("i" + strconv.FormatInt(x, 10))
		case float64:
			b.WriteString("f" + strconv.FormatFloat(x, 'g', -1, 64))
		case bool:
			b.WriteString("b" + strconv.FormatBool(x))
		case time.Time:
			b.WriteString("t" + strconv.FormatInt(x.UnixMicro(), 10))
		default:
			j, _ := json.Marshal(x)
			b.WriteString("j" + strconv.Quote(string(j)))
		}
		b.WriteByte(',')
	}
	return b.String(), true
}
