package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	"github.com/envplane/envplane/internal/handoff"
)

// records is a DataService answering from a fixed set of records.
type records struct {
	datav1connect.UnimplementedDataServiceHandler
}

func (records) GetRecord(_ context.Context, req *connect.Request[datav1.GetRecordRequest]) (*connect.Response[datav1.GetRecordResponse], error) {
	if req.Msg.GetId() != "r1" {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	rec, _ := structpb.NewStruct(map[string]any{"id": "r1", "name": "Alice", "env": req.Msg.GetEnvironmentId()})
	return connect.NewResponse(&datav1.GetRecordResponse{Record: rec}), nil
}

func (records) CreateRecord(_ context.Context, req *connect.Request[datav1.CreateRecordRequest]) (*connect.Response[datav1.CreateRecordResponse], error) {
	rec := req.Msg.GetRecord()
	rec.Fields["id"] = structpb.NewStringValue("r2")
	return connect.NewResponse(&datav1.CreateRecordResponse{Record: rec}), nil
}

// refuse fails every call carrying X-Refuse before the handler runs, as
// authentication does.
var refuse = connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Header().Get("X-Refuse") != "" {
			return nil, connect.NewError(connect.CodeUnauthenticated, nil)
		}
		return next(ctx, req)
	}
})

// TestRESTHandsMessagesOver: REST calls reach the handler and come back
// through the handoff mailbox, whatever becomes of them (answered, refused
// by an interceptor, failed by the handler, refused by vanguard), and leave
// nothing in it; the Connect handlers on the mux do not speak handoff, and
// nothing from the network reaches the handlers that do.
func TestRESTHandsMessagesOver(t *testing.T) {
	t.Parallel()
	mailbox := handoff.New()
	services := []Service{{
		Name: datav1connect.DataServiceName,
		Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
			return datav1connect.NewDataServiceHandler(records{}, opts...)
		},
	}}
	opts := []connect.HandlerOption{connect.WithInterceptors(refuse)}
	rest, err := restHandler(services, opts, nil, mailbox)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", rest)
	mux.Handle(services[0].Mount(opts...))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	call := func(method, path, contentType, body string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer x") // restBodies checks bodies of calls with credentials
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	status, body := call(http.MethodGet, "/api/v1/environments/e1/data/contact/r1", "", "")
	var rec map[string]any
	if err := json.Unmarshal([]byte(body), &rec); status != http.StatusOK || err != nil || rec["name"] != "Alice" || rec["env"] != "e1" {
		t.Errorf("GET a record: %d %s", status, body)
	}
	status, body = call(http.MethodPost, "/api/v1/environments/e1/data/contact", "application/json", `{"name":"Bob"}`)
	if err := json.Unmarshal([]byte(body), &rec); status != http.StatusOK || err != nil || rec["name"] != "Bob" || rec["id"] != "r2" {
		t.Errorf("POST a record: %d %s", status, body)
	}
	for _, c := range []struct {
		name, method, path, contentType, body string
		header                                []string
		status                                int
	}{
		{"handler fails", http.MethodGet, "/api/v1/data/contact/missing", "", "", nil, http.StatusNotFound},
		{"interceptor refuses", http.MethodGet, "/api/v1/data/contact/r1", "", "", []string{"X-Refuse", "1"}, http.StatusUnauthorized},
		{"interceptor refuses a body", http.MethodPost, "/api/v1/data/contact", "application/json", `{"name":"Bob"}`, []string{"X-Refuse", "1"}, http.StatusUnauthorized},
		// Vanguard's own refusals are the caller's mistakes, and say so.
		{"a body of the wrong shape", http.MethodPost, "/api/v1/data:batchWrite", "application/json", `{"writes":5}`, nil, http.StatusBadRequest},
		{"an unknown query parameter", http.MethodGet, "/api/v1/data/contact/r1?nope=1", "", "", nil, http.StatusBadRequest},
		{"a query value of the wrong type", http.MethodGet, "/api/v1/data/contact?pageSize=many", "", "", nil, http.StatusBadRequest},
		{"no such route", http.MethodGet, "/api/v1/nothing", "", "", nil, http.StatusNotFound},
		// Nothing speaks handoff to the outside: neither the handlers on
		// the mux nor, under /api/, vanguard's procedure paths.
		{"handoff to the mux", http.MethodPost, "/envplane.data.v1.DataService/GetRecord", "application/" + handoff.Name,
			"0123456789abcdef", []string{"Connect-Protocol-Version", "1"}, http.StatusUnsupportedMediaType},
		{"handoff over gRPC to the mux", http.MethodPost, "/envplane.data.v1.DataService/GetRecord", "application/grpc+" + handoff.Name,
			"\x00\x00\x00\x00\x100123456789abcdef", nil, http.StatusUnsupportedMediaType},
		{"handoff under /api/", http.MethodPost, "/api/envplane.data.v1.DataService/GetRecord", "application/" + handoff.Name,
			"0123456789abcdef", []string{"Connect-Protocol-Version", "1"}, http.StatusUnsupportedMediaType},
	} {
		status, body := call(c.method, c.path, c.contentType, c.body, c.header...)
		if status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.status)
		}
		if strings.HasPrefix(c.path, "/api/") && status >= http.StatusBadRequest && status != http.StatusNotFound && status != http.StatusUnauthorized &&
			!strings.Contains(body, `"reason":"MALFORMED_`) {
			t.Errorf("%s: %s carries no reason", c.name, body)
		}
	}
	// An answer goes out whole, with its length, not as a chunked body.
	resp, err := srv.Client().Get(srv.URL + "/api/v1/environments/e1/data/contact/r1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) > 0 {
		t.Errorf("Content-Length %d, Transfer-Encoding %v for %d bytes", resp.ContentLength, resp.TransferEncoding, len(b))
	}
	if n := mailbox.Pending(); n != 0 {
		t.Errorf("%d messages left in the mailbox", n)
	}
}
