package data

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/schema"
)

var contact = &schema.Object{Name: "contact", Fields: []schema.Field{
	{Name: "name", Type: schema.TypeText},
	{Name: "age", Type: schema.TypeInteger},
	{Name: "score", Type: schema.TypeNumber},
	{Name: "vip", Type: schema.TypeBoolean},
	{Name: "seen", Type: schema.TypeTimestamp},
	{Name: "doc", Type: schema.TypeJSON},
}}

func stored(i int) driver.Record {
	at := time.Date(2026, 11, 27, 14, 0, 0, i*1000, time.UTC)
	rec := driver.Record{
		"id": fmt.Sprintf("r%d", i), "created_at": at, "updated_at": at.Add(time.Second), "etag": "e1",
		"name": fmt.Sprintf("name %d", i), "age": int64(i), "score": float64(i) / 3, "vip": i%2 == 0,
		"doc": map[string]any{"k": []any{"v", float64(i)}},
	}
	switch i % 4 {
	case 1:
		delete(rec, "name") // NULL
	case 2:
		rec["age"] = int64(math.MaxInt64) // beyond JSON's safe range: a string
		rec["seen"] = at.In(time.FixedZone("x", 3600))
	case 3:
		rec["name"] = "bad \xff utf-8" // null, as structpb.NewValue would have it
	}
	return rec
}

var systemFields = []string{schema.FieldID, schema.FieldCreatedAt, schema.FieldUpdatedAt, schema.FieldETag}

// want is the record as structpb.NewValue renders it field by field.
func want(rec driver.Record, mask map[string]bool) *structpb.Struct {
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, name := range append(slices.Clone(systemFields), "name", "age", "score", "vip", "seen", "doc") {
		if mask != nil && !mask[name] && !slices.Contains(systemFields, name) {
			continue
		}
		v := rec[name]
		switch x := v.(type) {
		case int64:
			if x > objects.MaxSafeInteger || x < -objects.MaxSafeInteger {
				v = fmt.Sprint(x)
			}
		case time.Time:
			v = x.UTC().Format(time.RFC3339Nano)
		}
		pv, err := structpb.NewValue(v)
		if err != nil {
			pv = structpb.NewNullValue()
		}
		out.Fields[name] = pv
	}
	return out
}

// recordToStruct renders each value as structpb.NewValue would, after
// turning timestamps into RFC 3339 text and integers beyond JSON's safe
// range into strings; the result survives proto marshaling.
func TestRecordToStruct(t *testing.T) {
	for _, mask := range []map[string]bool{nil, {"age": true, "doc": true}, {}} {
		for i := range 9 {
			rec := stored(i)
			got := recordToStruct(contact, rec, mask)
			if w := want(rec, mask); !proto.Equal(got, w) {
				t.Errorf("mask %v, record %d:\n got %v\nwant %v", mask, i, got, w)
			}
			if _, err := proto.Marshal(got); err != nil {
				t.Errorf("record %d: %v", i, err)
			}
		}
	}
}

func BenchmarkRecordToStruct(b *testing.B) {
	recs := make([]driver.Record, 20)
	for i := range recs {
		recs[i] = stored(i * 4) // no NULLs, no oddities
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range recs {
			_ = recordToStruct(contact, r, nil)
		}
	}
}
