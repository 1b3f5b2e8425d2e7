package data

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/jsoncodec"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/schema"
	"github.com/envplane/envplane/internal/server"
)

// The answers of the record RPCs are built from stored records in two
// ways. The RPC protocols carry a record as a google.protobuf.Struct
// (recordToStruct). A direct REST route (server.Body) writes the record's
// JSON straight from the stored values: the bytes the transcoder writes for
// the Struct, without the Struct, whose building and writing were a fifth
// of a REST list's CPU. Both are held to one another by the tests.

// shown is a stored record as an answer shows it: system fields, then the
// object's fields (NULL ones as null), limited to mask when it is not nil.
type shown struct {
	obj  *schema.Object
	rec  driver.Record
	mask map[string]bool
}

var _ server.Body = (*shown)(nil)

func (s *shown) proto() *structpb.Struct {
	return recordToStruct(s.obj, s.rec, s.mask)
}

// AppendJSON writes the record as the REST body of GetRecord, CreateRecord
// and UpdateRecord (their response_body is the record).
func (s *shown) AppendJSON(b []byte) ([]byte, error) {
	return appendRecord(b, jsonKeys(s.obj, s.mask), s.rec)
}

// page is a page of ListRecords.
type page struct {
	obj   *schema.Object
	recs  []driver.Record
	mask  map[string]bool
	next  string
	total int64
}

var _ server.Body = (*page)(nil)

func (p *page) proto() *datav1.ListRecordsResponse {
	resp := &datav1.ListRecordsResponse{NextPageToken: p.next, TotalSize: p.total}
	for _, r := range p.recs {
		resp.Records = append(resp.Records, recordToStruct(p.obj, r, p.mask))
	}
	return resp
}

// AppendJSON writes the page as the transcoder writes a
// ListRecordsResponse: every field, in declaration order, the total (an
// int64) as a string.
func (p *page) AppendJSON(b []byte) ([]byte, error) {
	keys := jsonKeys(p.obj, p.mask)
	b = append(b, `{"records":[`...)
	for i, r := range p.recs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendRecord(b, keys, r); err != nil {
			return b, err
		}
	}
	b = append(b, `],"nextPageToken":`...)
	b, ok := jsoncodec.AppendString(b, p.next)
	if !ok {
		return b, errors.New("data: the page token is not UTF-8")
	}
	b = append(b, `,"totalSize":"`...)
	b = strconv.AppendInt(b, p.total, 10)
	return append(b, `"}`...), nil
}

// rest turns the core of a record RPC into the method a direct REST route
// calls: its answer writes its own JSON (server.Body).
func rest[Req, A any](core func(context.Context, *Req) (*A, error)) func(context.Context, *connect.Request[Req]) (*connect.Response[A], error) {
	return func(ctx context.Context, req *connect.Request[Req]) (*connect.Response[A], error) {
		a, err := core(ctx, req.Msg)
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(a), nil
	}
}

// jsonKeys are the keys of a record shown through mask, in the order
// protojson writes a Struct's: by bytes.
func jsonKeys(obj *schema.Object, mask map[string]bool) []string {
	keys := make([]string, 0, 4+len(obj.Fields))
	keys = append(keys, schema.FieldID, schema.FieldCreatedAt, schema.FieldUpdatedAt, schema.FieldETag)
	for _, f := range obj.Fields {
		// A mask naming only system fields is not empty: it asks for none
		// of the object's fields.
		if mask == nil || mask[f.Name] {
			keys = append(keys, f.Name)
		}
	}
	slices.Sort(keys)
	return keys
}

// appendRecord writes rec's values of keys (jsonKeys') as protojson writes
// the Struct recordToStruct builds of it.
func appendRecord(b []byte, keys []string, rec driver.Record) ([]byte, error) {
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		// Keys are field names: ASCII identifiers, quoted as they are.
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
		var err error
		if b, err = appendStored(b, rec[k]); err != nil {
			return b, fmt.Errorf("data: field %s: %w", k, err)
		}
	}
	return append(b, '}'), nil
}

// appendStored writes v as protojson writes objects.ToValue(v). The values records
// hold are written here; anything else goes through objects.ToValue.
func appendStored(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		if out, ok := jsoncodec.AppendString(b, x); ok {
			return out, nil
		}
		// objects.ToValue: structpb refuses text that is not UTF-8, and it shows as null.
		return append(b, "null"...), nil
	case int64:
		if x > objects.MaxSafeInteger || x < -objects.MaxSafeInteger {
			b = append(b, '"')
			return append(strconv.AppendInt(b, x, 10), '"'), nil
		}
		out, _ := jsoncodec.AppendNumber(b, float64(x))
		return out, nil
	case float64:
		if out, ok := jsoncodec.AppendNumber(b, x); ok {
			return out, nil
		}
		return b, fmt.Errorf("the number %v has no JSON form", x)
	case bool:
		return strconv.AppendBool(b, x), nil
	case time.Time:
		// RFC 3339 in UTC needs no escaping.
		b = append(b, '"')
		return append(x.UTC().AppendFormat(b, time.RFC3339Nano), '"'), nil
	}
	pv := objects.ToValue(v)
	if out, ok := jsoncodec.AppendValue(b, pv); ok {
		return out, nil
	}
	js, err := protojson.Marshal(pv)
	if err != nil {
		return b, err
	}
	return append(b, js...), nil
}
