// Package apierr builds the errors clients see: a Connect code plus a
// google.rpc.ErrorInfo whose reason clients branch on, and a
// google.rpc.BadRequest when fields are at fault. Stores and drivers return
// sentinel errors; only a service boundary turns them into these.
package apierr

import (
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
)

// Domain is the ErrorInfo domain of every envplane error.
const Domain = "envplane.dev"

// Reasons shared by several services. Service-specific reasons live beside
// the service.
const (
	ReasonInvalidArgument = "INVALID_ARGUMENT"
	ReasonInternal        = "INTERNAL"
	ReasonNotFound        = "NOT_FOUND"
	ReasonUnavailable     = "UNAVAILABLE"
	// ReasonControlPlaneUnavailable: the control plane cannot be reached and
	// nothing cached can answer instead.
	ReasonControlPlaneUnavailable = "CONTROL_PLANE_UNAVAILABLE"
	// ReasonMalformedBody: a REST body is not JSON, or not the JSON of the
	// method's message (a field of the wrong type, say).
	ReasonMalformedBody = "MALFORMED_BODY"
	// ReasonMalformedRequest: a REST request's path or query cannot be read
	// as the method's message (an unknown query parameter, say).
	ReasonMalformedRequest = "MALFORMED_REQUEST"
	// ReasonUnknownPath: no method is served at the request's path (REST
	// 404, code NOT_FOUND).
	ReasonUnknownPath = "UNKNOWN_PATH"
	// ReasonMethodNotAllowed: a method is served at the path, not with the
	// request's HTTP method (REST 405, code UNIMPLEMENTED; the Allow
	// header lists the methods).
	ReasonMethodNotAllowed = "METHOD_NOT_ALLOWED"
)

// New returns a Connect error with code, message and an ErrorInfo carrying
// reason and metadata (key, value pairs).
func New(code connect.Code, reason, message string, metadata ...string) *connect.Error {
	err := connect.NewError(code, errors.New(message))
	info := &errdetails.ErrorInfo{Reason: reason, Domain: Domain}
	if len(metadata) > 0 {
		info.Metadata = make(map[string]string, len(metadata)/2)
		for i := 0; i+1 < len(metadata); i += 2 {
			info.Metadata[metadata[i]] = metadata[i+1]
		}
	}
	addDetail(err, info)
	return err
}

// FieldViolation is one field's problem in a BadRequest.
type FieldViolation struct {
	Field       string
	Description string
}

// InvalidArgument returns INVALID_ARGUMENT with reason and a BadRequest that
// lists every violation.
func InvalidArgument(reason, message string, violations ...FieldViolation) *connect.Error {
	err := New(connect.CodeInvalidArgument, reason, message)
	if len(violations) > 0 {
		br := &errdetails.BadRequest{}
		for _, v := range violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
				Field: v.Field, Description: v.Description,
			})
		}
		addDetail(err, br)
	}
	return err
}

// Internal hides the cause from the client: the caller logs it.
func Internal() *connect.Error {
	return New(connect.CodeInternal, ReasonInternal, "internal error; the server log has the details under this request's id")
}

// Reason returns the ErrorInfo reason carried by err, or "".
func Reason(err error) string {
	if info := Info(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// Info returns the ErrorInfo carried by err, or nil.
func Info(err error) *errdetails.ErrorInfo {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// BadRequest returns the BadRequest carried by err, or nil.
func BadRequest(err error) *errdetails.BadRequest {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			return br
		}
	}
	return nil
}

func addDetail(err *connect.Error, m proto.Message) {
	d, derr := connect.NewErrorDetail(m)
	if derr != nil {
		// Marshalling a well-known message cannot fail; keep the error usable anyway.
		return
	}
	err.AddDetail(d)
}
