package data

import (
	"context"
	"strings"

	"connectrpc.com/connect"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/schema"
)

// ReasonETagHeaderConflict: the If-Match header and the request's etag
// field name different etags.
const ReasonETagHeaderConflict = "ETAG_HEADER_CONFLICT"

// maxETagLength bounds an If-Match value; envplane's etags are 16 hex digits.
const maxETagLength = 128

// conditionals gives the data calls HTTP's conditional headers, on every
// protocol alike (REST, Connect, gRPC metadata): If-Match on UpdateRecord
// and DeleteRecord is the record's etag check, as the etag field is (a
// stale one answers ABORTED ETAG_MISMATCH, 409 over REST), and the calls
// that answer a record answer its ETag header. A client that sends If-Match
// is protected, never silently not.
type conditionals struct{}

func (conditionals) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		switch m := req.Any().(type) {
		case *datav1.UpdateRecordRequest:
			if err := ifMatch(req.Header().Get("If-Match"), &m.Etag); err != nil {
				return nil, err
			}
		case *datav1.DeleteRecordRequest:
			if err := ifMatch(req.Header().Get("If-Match"), &m.Etag); err != nil {
				return nil, err
			}
		case *datav1.GetRecordRequest, *datav1.CreateRecordRequest:
		default:
			return next(ctx, req)
		}
		resp, err := next(ctx, req)
		if err == nil {
			if etag := answeredETag(resp.Any()); etag != "" {
				resp.Header().Set("ETag", `"`+etag+`"`)
			}
		}
		return resp, err
	}
}

func (conditionals) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (conditionals) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// ifMatch sets *etag from an If-Match header value: one entity tag, quoted
// as HTTP writes it or bare; "*" (any current record) asks for no check.
// A header and a field that disagree are refused.
func ifMatch(header string, etag *string) error {
	header = strings.TrimSpace(header)
	if header == "" || header == "*" {
		return nil
	}
	if strings.Contains(header, ",") {
		return apierr.InvalidArgument(ReasonETagHeaderConflict, "If-Match takes one entity tag: the record's etag",
			apierr.FieldViolation{Field: "etag", Description: "If-Match lists several entity tags"})
	}
	tag := header
	if len(tag) >= 2 && tag[0] == '"' && tag[len(tag)-1] == '"' {
		tag = tag[1 : len(tag)-1]
	}
	if len(tag) > maxETagLength {
		return apierr.InvalidArgument(ReasonETagHeaderConflict, "If-Match is longer than any etag",
			apierr.FieldViolation{Field: "etag", Description: "If-Match too long"})
	}
	if *etag != "" && *etag != tag {
		return apierr.InvalidArgument(ReasonETagHeaderConflict, "the If-Match header and the etag field name different etags",
			apierr.FieldViolation{Field: "etag", Description: "differs from If-Match"})
	}
	*etag = tag
	return nil
}

// answeredETag is the etag of the record an answer holds ("" for none).
func answeredETag(answer any) string {
	switch a := answer.(type) {
	case *shown:
		s, _ := a.rec[schema.FieldETag].(string)
		return s
	case *datav1.GetRecordResponse:
		return a.GetRecord().GetFields()[schema.FieldETag].GetStringValue()
	case *datav1.CreateRecordResponse:
		return a.GetRecord().GetFields()[schema.FieldETag].GetStringValue()
	case *datav1.UpdateRecordResponse:
		return a.GetRecord().GetFields()[schema.FieldETag].GetStringValue()
	}
	return ""
}
