package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/handoff"
)

// ledger is a DataService that answers every call with what it was asked,
// so two ways of building the request can be compared by their answers.
type ledger struct {
	datav1connect.UnimplementedDataServiceHandler
}

// echo is the answer to msg: the request as a record, plus the call's Host
// and X-Environment-Id headers.
func echo(req connect.AnyRequest) *structpb.Struct {
	asked, err := structpb.NewStruct(map[string]any{
		"host":   req.Header().Get("Host"),
		"header": req.Header().Get("X-Environment-Id"),
	})
	if err != nil {
		panic(err)
	}
	b, err := protojson.Marshal(req.Any().(proto.Message))
	if err != nil {
		panic(err)
	}
	asked.Fields["request"] = structpb.NewStringValue(string(b))
	return asked
}

// answer fails the call as its request's etag says, else answers rec.
func answer[T any](req connect.AnyRequest, etag string, msg *T) (*connect.Response[T], error) {
	switch etag {
	case "stale":
		err := apierr.New(connect.CodeAborted, "ETAG_MISMATCH", "the record changed", "etag", etag)
		err.Meta().Set("X-Environment-Id", "e-from-error")
		return nil, err
	case "invalid":
		return nil, apierr.InvalidArgument("INVALID_RECORD", "two things are wrong",
			apierr.FieldViolation{Field: "record.name", Description: "is required"},
			apierr.FieldViolation{Field: "record.age", Description: "must be a number"})
	case "panic":
		panic("the handler broke")
	}
	resp := connect.NewResponse(msg)
	resp.Header().Set("X-Environment-Id", "e-answered")
	resp.Header().Add("X-Many", "one")
	resp.Header().Add("X-Many", "two")
	resp.Trailer().Set("X-Trailing", "late")
	return resp, nil
}

func (ledger) CreateRecord(_ context.Context, req *connect.Request[datav1.CreateRecordRequest]) (*connect.Response[datav1.CreateRecordResponse], error) {
	etag := req.Msg.GetRecord().GetFields()["etag"].GetStringValue()
	return answer(req, etag, &datav1.CreateRecordResponse{Record: echo(req)})
}

func (ledger) GetRecord(_ context.Context, req *connect.Request[datav1.GetRecordRequest]) (*connect.Response[datav1.GetRecordResponse], error) {
	return answer(req, req.Msg.GetId(), &datav1.GetRecordResponse{Record: echo(req)})
}

func (ledger) ListRecords(_ context.Context, req *connect.Request[datav1.ListRecordsRequest]) (*connect.Response[datav1.ListRecordsResponse], error) {
	return answer(req, req.Msg.GetPageToken(), &datav1.ListRecordsResponse{
		Records: []*structpb.Struct{echo(req), {}}, NextPageToken: "next", TotalSize: 9007199254740993,
	})
}

func (ledger) UpdateRecord(_ context.Context, req *connect.Request[datav1.UpdateRecordRequest]) (*connect.Response[datav1.UpdateRecordResponse], error) {
	return answer(req, req.Msg.GetEtag(), &datav1.UpdateRecordResponse{Record: echo(req)})
}

func (ledger) DeleteRecord(_ context.Context, req *connect.Request[datav1.DeleteRecordRequest]) (*connect.Response[datav1.DeleteRecordResponse], error) {
	return answer(req, req.Msg.GetEtag(), &datav1.DeleteRecordResponse{})
}

func (ledger) BatchWriteRecords(_ context.Context, req *connect.Request[datav1.BatchWriteRecordsRequest]) (*connect.Response[datav1.BatchWriteRecordsResponse], error) {
	return answer(req, "", &datav1.BatchWriteRecordsResponse{Results: []*datav1.RecordWriteResult{{Record: echo(req)}, {}}})
}

// routeDirect is how calls counts a call a direct route served.
const routeDirect = "direct"

// calls counts the calls an interceptor saw by route: routeDirect for a
// direct route's, the protocol for the others (the transcoder's say rest
// too, in their log lines).
type calls struct {
	mu    sync.Mutex
	count map[string]int
}

func (c *calls) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		procedure, protocol := procedureOf(ctx, req)
		if !strings.HasPrefix(procedure, "/envplane.data.v1.DataService/") {
			return nil, connect.NewError(connect.CodeInternal, nil)
		}
		if _, direct := ctx.Value(callKey{}).(callInfo); direct {
			protocol = routeDirect
		}
		c.mu.Lock()
		c.count[protocol]++
		c.mu.Unlock()
		return next(ctx, req)
	}
}

func (c *calls) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (c *calls) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (c *calls) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.count
	c.count = map[string]int{}
	return n
}

// TestDirectRoutesAnswerAsTheTranscoder sends every request twice, to the
// REST surface with DataService's direct routes and to one without (only the
// transcoder), and wants the same answer: status, headers, body byte for
// byte. Requests a direct route does not take must reach the transcoder.
func TestDirectRoutesAnswerAsTheTranscoder(t *testing.T) {
	t.Parallel()
	seen := &calls{count: map[string]int{}}
	log := slog.New(slog.DiscardHandler)
	interceptors := []connect.Interceptor{logInterceptor{log: log}, recoverInterceptor{log: log}, refuse, seen}
	opts := []connect.HandlerOption{connect.WithInterceptors(interceptors...)}
	serve := func(direct bool) *httptest.Server {
		s := Service{
			Name: datav1connect.DataServiceName,
			Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
				return datav1connect.NewDataServiceHandler(ledger{}, opts...)
			},
		}
		if direct {
			var l ledger
			s.Direct = []Method{
				Unary(datav1connect.DataServiceCreateRecordProcedure, l.CreateRecord),
				Unary(datav1connect.DataServiceGetRecordProcedure, l.GetRecord),
				Unary(datav1connect.DataServiceListRecordsProcedure, l.ListRecords),
				Unary(datav1connect.DataServiceUpdateRecordProcedure, l.UpdateRecord),
				Unary(datav1connect.DataServiceDeleteRecordProcedure, l.DeleteRecord),
				Unary(datav1connect.DataServiceBatchWriteRecordsProcedure, l.BatchWriteRecords),
			}
		}
		rest, err := restHandler([]Service{s}, opts, interceptors, handoff.New())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.MaxBytesHandler(rest, maxBody))
		t.Cleanup(srv.Close)
		return srv
	}
	direct, transcoded := serve(true), serve(false)

	type answer struct {
		status int
		header http.Header
		body   string
	}
	call := func(srv *httptest.Server, method, path, body string, header []string) answer {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body == "" {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		req.Host = "api.acme.test"
		req.Header.Set("Authorization", "Bearer x")
		req.Header.Set("X-Environment-Id", "e-header")
		req.Header.Set("X-Request-Id", "req-1")
		for i := 0; i+1 < len(header); i += 2 {
			if header[i+1] == "" {
				req.Header.Del(header[i])
				continue
			}
			req.Header.Set(header[i], header[i+1])
		}
		if header := req.Header.Get("Content-Encoding"); header == "gzip" {
			var zipped bytes.Buffer
			zw := gzip.NewWriter(&zipped)
			_, _ = zw.Write([]byte(body))
			_ = zw.Close()
			req.Body, req.ContentLength = io.NopCloser(&zipped), int64(zipped.Len())
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Header.Del("Date")
		for k, v := range resp.Trailer {
			resp.Header["Trailer-"+k] = v
		}
		// Vanguard lists the methods of a path in no fixed order.
		if allow := resp.Header.Get("Allow"); allow != "" {
			methods := strings.Split(allow, ",")
			slices.Sort(methods)
			resp.Header.Set("Allow", strings.Join(methods, ","))
		}
		return answer{resp.StatusCode, resp.Header, string(b)}
	}

	record := `{"name":"Bob","n":1.5,"tags":["a",true,null],"nested":{"x":null,"y":{"z":-0.25}},"etag":"%s"}`
	for _, c := range []struct {
		name, method, path, body string
		header                   []string
		direct                   bool // served by a direct route, not handed to the transcoder
	}{
		{"get", "GET", "/api/v1/environments/e1/data/contact/r1", "", nil, true},
		{"get without the environment in the path", "GET", "/api/v1/data/contact/r1", "", nil, true},
		{"get with a read mask", "GET", "/api/v1/data/contact/r1?readMask=name,createdAt", "", nil, true},
		{"get with a read mask by its proto name", "GET", "/api/v1/data/contact/r1?read_mask=name", "", nil, true},
		{"get with an escape in the path", "GET", "/api/v1/data/con%20tact/r%201", "", nil, true},
		{"get with an escaped slash in the path", "GET", "/api/v1/data/contact/r%2F1", "", nil, false},
		{"get, failing with metadata", "GET", "/api/v1/data/contact/stale", "", nil, true},
		{"get, failing with violations", "GET", "/api/v1/data/contact/invalid", "", nil, true},
		{"get, panicking", "GET", "/api/v1/data/contact/panic", "", nil, true},
		{"get, refused by an interceptor", "GET", "/api/v1/data/contact/r1", "", []string{"X-Refuse", "1"}, true},
		{"list", "GET", "/api/v1/environments/e1/data/contact", "", nil, true},
		{"list with every parameter", "GET", "/api/v1/data/contact?filter=name%20%3D%20%22x%22&orderBy=name%20desc&pageSize=5&pageToken=abc&showTotalSize=true&readMask=name", "", nil, true},
		{"list with proto names", "GET", "/api/v1/data/contact?page_size=7&show_total_size=false&order_by=id", "", nil, true},
		{"list with a page size of null", "GET", "/api/v1/data/contact?pageSize=null", "", nil, true},
		{"list, failing", "GET", "/api/v1/data/contact?pageToken=stale", "", nil, true},
		{"list with a page size of the wrong type", "GET", "/api/v1/data/contact?pageSize=many", "", nil, false},
		{"list with a page size beyond int32", "GET", "/api/v1/data/contact?pageSize=4294967296", "", nil, false},
		{"list with a signed page size", "GET", "/api/v1/data/contact?pageSize=%2B5", "", nil, false},
		{"list with a page size given twice", "GET", "/api/v1/data/contact?pageSize=5&pageSize=6", "", nil, false},
		{"list with one field named twice", "GET", "/api/v1/data/contact?pageSize=5&page_size=5", "", nil, false},
		{"list with an unknown parameter", "GET", "/api/v1/data/contact?nope=1", "", nil, false},
		{"list with a path field in the query", "GET", "/api/v1/data/contact?object=other", "", nil, false},
		{"list with a timeout", "GET", "/api/v1/data/contact", "", []string{"X-Server-Timeout", "5"}, false},
		{"create", "POST", "/api/v1/environments/e1/data/contact", strings.Replace(record, "%s", "", 1), nil, true},
		{"create with a charset", "POST", "/api/v1/data/contact", strings.Replace(record, "%s", "", 1), []string{"Content-Type", "application/json; charset=utf-8"}, true},
		{"create with no body", "POST", "/api/v1/data/contact", "", nil, true},
		{"create, failing", "POST", "/api/v1/data/contact", strings.Replace(record, "%s", "invalid", 1), nil, true},
		{"create, refused with a body", "POST", "/api/v1/data/contact", strings.Replace(record, "%s", "", 1), []string{"X-Refuse", "1"}, true},
		{"create with a query", "POST", "/api/v1/data/contact?readMask=x", "{}", nil, false},
		{"create with a body that is not a record", "POST", "/api/v1/data/contact", `{"name":1e999}`, nil, false},
		{"create without credentials, over the size limit", "POST", "/api/v1/data/contact", `{"name":"` + strings.Repeat("x", maxBody) + `"}`, []string{"Authorization", ""}, false},
		{"create with a gzipped body", "POST", "/api/v1/data/contact", `{"name":"Zip"}`, []string{"Content-Encoding", "gzip"}, false},
		{"update", "PATCH", "/api/v1/environments/e1/data/contact/r1?updateMask=name,nested.x&etag=abc", strings.Replace(record, "%s", "", 1), nil, true},
		{"update, stale", "PATCH", "/api/v1/data/contact/r1?etag=stale", `{"name":"Bob"}`, nil, true},
		{"delete", "DELETE", "/api/v1/environments/e1/data/contact/r1?etag=abc", "", nil, true},
		{"delete, stale", "DELETE", "/api/v1/data/contact/r1?etag=stale", "", nil, true},
		{"delete with a body", "DELETE", "/api/v1/data/contact/r1", `{"etag":"x"}`, nil, false},
		{"batch", "POST", "/api/v1/environments/e1/data:batchWrite", `{"writes":[{"create":{"object":"contact","record":{"name":"A"}}},{"delete":{"object":"contact","id":"x"}}]}`, nil, true},
		{"batch naming another environment in the body", "POST", "/api/v1/environments/e1/data:batchWrite", `{"environmentId":"e2","writes":[{"delete":{"object":"contact","id":"x"}}]}`, nil, true},
		{"batch with a query", "POST", "/api/v1/data:batchWrite?environmentId=e2", `{"writes":[]}`, nil, false},
		{"batch of the wrong shape", "POST", "/api/v1/data:batchWrite", `{"writes":5}`, nil, false},
		{"head", "HEAD", "/api/v1/data/contact/r1", "", nil, false},
		{"a method no binding has", "PUT", "/api/v1/data/contact/r1", `{}`, nil, false},
	} {
		want := call(transcoded, c.method, c.path, c.body, c.header)
		seen.take()
		got := call(direct, c.method, c.path, c.body, c.header)
		if got.status != want.status || got.body != want.body {
			t.Errorf("%s: direct answered %d %s\ntranscoder answered %d %s", c.name, got.status, got.body, want.status, want.body)
		}
		for k := range mergeKeys(got.header, want.header) {
			if !slices.Equal(got.header.Values(k), want.header.Values(k)) {
				t.Errorf("%s: header %s: direct %q, transcoder %q", c.name, k, got.header.Values(k), want.header.Values(k))
			}
		}
		counted := seen.take()
		if c.direct && (counted[routeDirect] != 1 || len(counted) != 1) && !slices.Contains(c.header, "X-Refuse") {
			t.Errorf("%s: calls by protocol %v, want one direct", c.name, counted)
		}
		if !c.direct && counted[routeDirect] != 0 {
			t.Errorf("%s: a direct route took a call it should have handed on", c.name)
		}
	}
}

// maxBody is the request size limit of the servers compared.
const maxBody = 4096

func mergeKeys(a, b http.Header) map[string]bool {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	return keys
}

// A direct call's log line names its procedure and protocol rest, with the
// request id it answers with.
func TestDirectCallsAreLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	interceptors := []connect.Interceptor{logInterceptor{log: log}, recoverInterceptor{log: log}}
	var l ledger
	s := Service{
		Name: datav1connect.DataServiceName,
		Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
			return datav1connect.NewDataServiceHandler(l, opts...)
		},
		Direct: []Method{Unary(datav1connect.DataServiceGetRecordProcedure, l.GetRecord)},
	}
	rest, err := restHandler([]Service{s}, []connect.HandlerOption{connect.WithInterceptors(interceptors...)}, interceptors, handoff.New())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r1", "stale"} {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/api/v1/data/contact/"+id, nil)
		req.Header.Set("X-Request-Id", "req-"+id)
		rec := httptest.NewRecorder()
		rest.ServeHTTP(rec, req)
		if got := rec.Header().Get("X-Request-Id"); got != "req-"+id {
			t.Errorf("%s: answered with request id %q", id, got)
		}
	}
	var lines []map[string]any
	dec := json.NewDecoder(&logs)
	for dec.More() {
		var line map[string]any
		if err := dec.Decode(&line); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	want := []map[string]any{
		{"request_id": "req-r1", "code": "ok"},
		{"request_id": "req-stale", "code": "aborted", "reason": "ETAG_MISMATCH"},
	}
	if len(lines) != len(want) {
		t.Fatalf("log lines %v, want %d", lines, len(want))
	}
	for i, line := range lines {
		if line["msg"] != "rpc" || line["procedure"] != datav1connect.DataServiceGetRecordProcedure || line["protocol"] != protocolREST {
			t.Errorf("line %v: want an rpc line of GetRecord over rest", line)
		}
		for k, v := range want[i] {
			if line[k] != v {
				t.Errorf("line %v: %s = %v, want %v", line, k, line[k], v)
			}
		}
	}
}

// body is an answer that writes its own REST body: its text, or fails.
type body struct{ text string }

func (b *body) AppendJSON(out []byte) ([]byte, error) {
	if b.text == "" {
		return append(out, "half"...), errors.New("cannot write it")
	}
	return append(out, b.text...), nil
}

// A method answering a Body has its JSON written as it is, with the
// answer's headers; a Body that fails is INTERNAL, as a message the codec
// cannot write.
func TestDirectBodyAnswers(t *testing.T) {
	t.Parallel()
	get := func(_ context.Context, req *connect.Request[datav1.GetRecordRequest]) (*connect.Response[body], error) {
		resp := connect.NewResponse(&body{text: `{"got":"` + req.Msg.GetId() + `"}`})
		resp.Header().Set("X-Environment-Id", "e-answered")
		return resp, nil
	}
	s := Service{
		Name: datav1connect.DataServiceName,
		Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
			return datav1connect.NewDataServiceHandler(ledger{}, opts...)
		},
		Direct: []Method{Unary(datav1connect.DataServiceGetRecordProcedure, get)},
	}
	rest, err := restHandler([]Service{s}, nil, nil, handoff.New())
	if err != nil {
		t.Fatal(err)
	}
	serve := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		rest.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil))
		return rec
	}
	rec := serve("/api/v1/data/contact/r1")
	if rec.Code != http.StatusOK || rec.Body.String() != `{"got":"r1"}` || rec.Header().Get("Content-Type") != "application/json" ||
		rec.Header().Get("Content-Length") != "12" || rec.Header().Get("X-Environment-Id") != "e-answered" {
		t.Errorf("answer %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	failing := func(_ context.Context, _ *connect.Request[datav1.GetRecordRequest]) (*connect.Response[body], error) {
		return connect.NewResponse(&body{}), nil
	}
	s.Direct = []Method{Unary(datav1connect.DataServiceGetRecordProcedure, failing)}
	if rest, err = restHandler([]Service{s}, nil, nil, handoff.New()); err != nil {
		t.Fatal(err)
	}
	rec = serve("/api/v1/data/contact/r1")
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "half") ||
		!strings.Contains(rec.Body.String(), `"code":13,`) {
		t.Errorf("failing body answered %d %s", rec.Code, rec.Body)
	}
	defer func() {
		if recover() == nil {
			t.Error("Unary took an answer that is neither a message nor a Body")
		}
	}()
	Unary(datav1connect.DataServiceGetRecordProcedure, func(context.Context, *connect.Request[datav1.GetRecordRequest]) (*connect.Response[string], error) {
		return nil, nil
	})
}
