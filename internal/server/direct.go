package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// The REST bindings of the hottest methods (the data plane's) are served
// without the transcoder: for one record, vanguard and the Connect handler
// behind it cost a quarter of the server's CPU, more than the database.
// A direct route reads the binding from the method's google.api.http
// annotation, builds the request message from the path, query and body,
// runs the same interceptors as every other call and writes the answer the
// way the transcoder does (a test holds the two alike). Whatever it does not
// fully understand (an unknown or malformed query parameter, a body that is
// not the method's, a compressed body, a timeout header) it hands to the
// transcoder untouched, so the refusals stay the transcoder's.

// Method is one unary method of a service, callable without a protocol.
type Method struct {
	procedure  string
	newRequest func() (proto.Message, connect.AnyRequest)
	call       connect.UnaryFunc
}

// A Body is an answer that writes its own REST body: the JSON the
// transcoder writes for the method's answer (for its response_body field,
// when the binding names one). A direct method may answer a Body instead of
// its protobuf message when it can write that JSON without building the
// message first; holding the two alike is the method's tests' job.
type Body interface {
	AppendJSON(b []byte) ([]byte, error)
}

// Unary is fn, the implementation of the unary method procedure (as in the
// generated …Procedure constants), as a Method. Res is the method's answer
// message or a Body.
func Unary[Req, Res any](procedure string, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) Method {
	if _, ok := any(new(Req)).(proto.Message); !ok {
		panic(fmt.Sprintf("server.Unary(%s): %T is not a protobuf message", procedure, new(Req)))
	}
	_, message := any(new(Res)).(proto.Message)
	_, body := any(new(Res)).(Body)
	if !message && !body {
		panic(fmt.Sprintf("server.Unary(%s): %T is neither a protobuf message nor a Body", procedure, new(Res)))
	}
	return Method{
		procedure: procedure,
		newRequest: func() (proto.Message, connect.AnyRequest) {
			msg := new(Req)
			return any(msg).(proto.Message), connect.NewRequest(msg)
		},
		call: func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := fn(ctx, req.(*connect.Request[Req]))
			if err != nil {
				return nil, err
			}
			if resp == nil {
				return nil, errors.New("handler returned neither an answer nor an error")
			}
			return resp, nil
		},
	}
}

// callKey carries the procedure of a direct call to the interceptors, which
// read it from the request's Spec on every other path.
type callKey struct{}

type callInfo struct{ procedure, protocol string }

// procedureOf is the procedure and protocol of req: its Spec's and Peer's,
// or for a direct call the route's.
func procedureOf(ctx context.Context, req connect.AnyRequest) (procedure, protocol string) {
	if c, ok := ctx.Value(callKey{}).(callInfo); ok {
		return c.procedure, c.protocol
	}
	if ctx.Value(restKey{}) != nil {
		// Through the transcoder, which calls the handler in Connect.
		return req.Spec().Procedure, protocolREST
	}
	return req.Spec().Procedure, req.Peer().Protocol
}

// restKey marks the context of a REST call the transcoder serves, so that
// its log line says rest, as a direct call's does.
type restKey struct{}

// markREST marks every request next serves as REST (restKey).
func markREST(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), restKey{}, true)))
	})
}

// procedure is procedureOf's procedure.
func procedure(ctx context.Context, req connect.AnyRequest) string {
	p, _ := procedureOf(ctx, req)
	return p
}

// protocolREST is the protocol a direct call is logged with.
const protocolREST = "rest"

// directRoute is one binding of one method.
type directRoute struct {
	method       Method
	call         connect.UnaryFunc // method.call inside the interceptors
	verb         string
	pattern      string // for http.ServeMux: "GET /api/v1/data/{object}/{id}"
	pathFields   []protoreflect.FieldDescriptor
	pathNames    []string // the wildcard of each path field
	queryFields  map[string]protoreflect.FieldDescriptor
	bodyField    protoreflect.FieldDescriptor // the body's field, if not bodyAll
	bodyAll      bool                         // the body is the whole message
	responseBody protoreflect.FieldDescriptor // nil: the whole answer
	codec        vanguard.Codec
	fallback     http.Handler // the transcoder
}

// directRoutes are the bindings of methods, each calling its method inside
// interceptors (outermost first) and handing what it cannot serve to
// fallback.
func directRoutes(methods []Method, interceptors []connect.Interceptor, codec vanguard.Codec, fallback http.Handler) ([]*directRoute, error) {
	var routes []*directRoute
	for _, m := range methods {
		name := strings.ReplaceAll(strings.TrimPrefix(m.procedure, "/"), "/", ".")
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("direct route for %s: %w", m.procedure, err)
		}
		md, ok := d.(protoreflect.MethodDescriptor)
		if !ok || md.IsStreamingClient() || md.IsStreamingServer() {
			return nil, fmt.Errorf("direct route for %s: not a unary method", m.procedure)
		}
		rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		if rule == nil {
			return nil, fmt.Errorf("direct route for %s: the method has no google.api.http binding", m.procedure)
		}
		call := m.call
		for i := len(interceptors) - 1; i >= 0; i-- {
			call = interceptors[i].WrapUnary(call)
		}
		for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
			r, err := newDirectRoute(md, b)
			if err != nil {
				return nil, fmt.Errorf("direct route for %s: %w", m.procedure, err)
			}
			r.method, r.call, r.codec, r.fallback = m, call, codec, fallback
			routes = append(routes, r)
		}
	}
	return routes, nil
}

func newDirectRoute(md protoreflect.MethodDescriptor, b *annotations.HttpRule) (*directRoute, error) {
	var verb, path string
	switch p := b.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		verb, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		verb, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		verb, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Patch:
		verb, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Delete:
		verb, path = http.MethodDelete, p.Delete
	default:
		return nil, fmt.Errorf("binding %v is not a plain HTTP method", b.GetPattern())
	}
	in, out := md.Input(), md.Output()
	r := &directRoute{verb: verb, pattern: verb + " " + path, queryFields: map[string]protoreflect.FieldDescriptor{}}
	bound := map[protoreflect.Name]bool{}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		if !strings.HasPrefix(seg, "{") {
			if strings.ContainsAny(seg, "{}*") {
				return nil, fmt.Errorf("path %s: only whole-segment {field} variables are supported", path)
			}
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(seg, "{"), "}")
		fd := in.Fields().ByName(protoreflect.Name(name))
		if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() || strings.ContainsAny(name, ".=*{}") {
			return nil, fmt.Errorf("path %s: variable %s is not a string field of %s", path, name, in.FullName())
		}
		r.pathFields, r.pathNames = append(r.pathFields, fd), append(r.pathNames, name)
		bound[fd.Name()] = true
	}
	switch body := b.GetBody(); body {
	case "":
	case "*":
		r.bodyAll = true
	default:
		fd := in.Fields().ByName(protoreflect.Name(body))
		if fd == nil || fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return nil, fmt.Errorf("body %s is not a message field of %s", body, in.FullName())
		}
		r.bodyField = fd
		bound[fd.Name()] = true
	}
	if !r.bodyAll {
		for i := 0; i < in.Fields().Len(); i++ {
			fd := in.Fields().Get(i)
			if bound[fd.Name()] || !queryable(fd) {
				continue
			}
			r.queryFields[string(fd.Name())] = fd
			r.queryFields[fd.JSONName()] = fd
		}
	}
	if rb := b.GetResponseBody(); rb != "" {
		fd := out.Fields().ByName(protoreflect.Name(rb))
		if fd == nil || fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return nil, fmt.Errorf("response_body %s is not a message field of %s", rb, out.FullName())
		}
		r.responseBody = fd
	}
	return r, nil
}

// queryable is a field a direct route takes from the query string: a
// singular string, bool, 32- or 64-bit integer or FieldMask. A parameter
// naming any other field goes to the transcoder.
func queryable(fd protoreflect.FieldDescriptor) bool {
	if fd.IsList() || fd.IsMap() {
		return false
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BoolKind, protoreflect.Int32Kind, protoreflect.Int64Kind:
		return true
	case protoreflect.MessageKind:
		return fd.Message().FullName() == "google.protobuf.FieldMask"
	}
	return false
}

func (d *directRoute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, ok := d.request(r)
	if !ok {
		d.fallback.ServeHTTP(w, r)
		return
	}
	h := req.Header()
	for k, v := range r.Header {
		h[k] = v
	}
	h.Set("Host", r.Host)
	ctx := context.WithValue(r.Context(), callKey{}, callInfo{procedure: d.method.procedure, protocol: protocolREST})
	resp, err := d.call(ctx, req)
	if err != nil {
		d.writeError(w, err)
		return
	}
	buf := answers.Get().(*[]byte)
	defer answers.Put(buf)
	var body []byte
	switch answer := resp.Any().(type) {
	case Body:
		body, err = answer.AppendJSON((*buf)[:0])
	case proto.Message:
		if d.responseBody != nil {
			answer = answer.ProtoReflect().Get(d.responseBody).Message().Interface()
		}
		body, err = d.codec.MarshalAppend((*buf)[:0], answer)
	}
	if cap(body) <= maxPooledAnswer {
		*buf = body
	}
	if err != nil {
		d.writeError(w, connect.NewError(connect.CodeInternal, errors.New("the answer could not be written")))
		return
	}
	// Trailers are dropped, as the transcoder drops them.
	out := w.Header()
	copyHeaders(out, resp.Header())
	out.Set("Content-Type", "application/json")
	out.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// answers are buffers for answers: grown by append from nothing, a page of
// records was an eighth of a list's allocated bytes.
var answers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledAnswer bounds the buffers kept in answers.
const maxPooledAnswer = 64 << 10

// request builds the call's message from r, or reports that the transcoder
// must: r is then as it came (its body restored). Like the transcoder, it
// reads the body first, then the path (which wins over the body), then the
// query.
func (d *directRoute) request(r *http.Request) (connect.AnyRequest, bool) {
	if r.Method != d.verb || r.Header.Get("Content-Encoding") != "" || r.Header.Get("X-Server-Timeout") != "" || r.URL.RawPath != "" {
		return nil, false
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" && ct != "application/json; charset=utf-8" {
		return nil, false
	}
	msg, req := d.method.newRequest()
	m := msg.ProtoReflect()
	var data []byte
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		var err error
		data, err = io.ReadAll(r.Body)
		if err != nil {
			// The transcoder reads what was read, then the same error (a
			// body over the size limit, say).
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), failingReader{err}))
			return nil, false
		}
		r.Body = io.NopCloser(bytes.NewReader(data))
	}
	if !d.body(m, data) {
		return nil, false
	}
	for i, fd := range d.pathFields {
		m.Set(fd, protoreflect.ValueOfString(r.PathValue(d.pathNames[i])))
	}
	if r.URL.RawQuery != "" && !d.query(m, r.URL.RawQuery) {
		return nil, false
	}
	return req, true
}

// failingReader fails every read with err.
type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// body sets data, the request body, on m where the binding puts it, or
// reports a body the binding does not take.
func (d *directRoute) body(m protoreflect.Message, data []byte) bool {
	switch {
	case len(data) == 0 && d.bodyField != nil:
		// An empty body is an empty message, as the transcoder has it.
		m.Set(d.bodyField, m.NewField(d.bodyField))
		return true
	case len(data) == 0:
		return true
	case d.bodyAll:
		return d.codec.Unmarshal(data, m.Interface()) == nil
	case d.bodyField != nil:
		field := m.NewField(d.bodyField)
		if d.codec.Unmarshal(data, field.Message().Interface()) != nil {
			return false
		}
		m.Set(d.bodyField, field)
		return true
	}
	return false
}

// query sets the query's parameters on m, or reports one it does not take:
// an unknown name, a value of the wrong type, a parameter given twice.
func (d *directRoute) query(m protoreflect.Message, raw string) bool {
	values, err := url.ParseQuery(raw)
	if err != nil {
		return false
	}
	seen := make(map[protoreflect.Name]bool, len(values))
	for name, vs := range values {
		fd, ok := d.queryFields[name]
		if !ok || len(vs) != 1 || seen[fd.Name()] {
			return false
		}
		seen[fd.Name()] = true
		v := vs[0]
		switch fd.Kind() {
		case protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(v))
		// Scalars are read as JSON, as the transcoder reads them.
		case protoreflect.BoolKind:
			b, ok := jsonScalar[bool](v)
			if !ok {
				return false
			}
			m.Set(fd, protoreflect.ValueOfBool(b))
		case protoreflect.Int32Kind:
			n, ok := jsonScalar[int32](v)
			if !ok {
				return false
			}
			m.Set(fd, protoreflect.ValueOfInt32(n))
		case protoreflect.Int64Kind:
			n, ok := jsonScalar[int64](v)
			if !ok {
				return false
			}
			m.Set(fd, protoreflect.ValueOfInt64(n))
		case protoreflect.MessageKind: // a FieldMask, as JSON has it
			mask := m.NewField(fd)
			quoted, _ := json.Marshal(v)
			if protojson.Unmarshal(quoted, mask.Message().Interface()) != nil {
				return false
			}
			m.Set(fd, mask)
		default:
			return false
		}
	}
	return true
}

// jsonScalar reads s as a JSON value of type T.
func jsonScalar[T bool | int32 | int64](s string) (T, bool) {
	var v T
	return v, json.Unmarshal([]byte(s), &v) == nil
}

// writeError answers err as the transcoder does: the HTTP status of its
// code, a google.rpc.Status, and its metadata as headers.
func (d *directRoute) writeError(w http.ResponseWriter, err error) {
	ce := new(connect.Error)
	switch {
	case errors.As(err, &ce):
	case errors.Is(err, context.Canceled):
		ce = connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		ce = connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		ce = connect.NewError(connect.CodeUnknown, err)
	}
	stat := &status.Status{Code: int32(ce.Code()), Message: ce.Message()} //nolint:gosec // codes are small
	for _, detail := range ce.Details() {
		stat.Details = append(stat.Details, &anypb.Any{TypeUrl: "type.googleapis.com/" + detail.Type(), Value: detail.Bytes()})
	}
	body, merr := d.codec.MarshalAppend(nil, stat)
	if merr != nil {
		body = []byte(`{"code":13,"message":"failed to marshal end error"}`)
	}
	out := w.Header()
	copyHeaders(out, ce.Meta())
	out.Set("Content-Type", "application/json")
	out.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(restStatus(ce.Code()))
	_, _ = w.Write(body)
}

// restStatus is the HTTP status of code, as google.api.http maps them.
func restStatus(code connect.Code) int {
	switch code {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

func copyHeaders(dst, src http.Header) {
	for k, v := range src {
		dst[k] = append(dst[k], v...)
	}
}
