package apptest

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	// The sqlite driver reads environment databases beside the server.
	_ "modernc.org/sqlite"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
	"github.com/envplane/envplane/internal/driver/driversqlite"
)

// HeaderEnvironmentID names an environment on a request and carries the
// resolved one on every answer of an environment-scoped service.
const HeaderEnvironmentID = "X-Environment-Id"

// HeaderRequestID is the request id header: a test that sets it finds the
// call's log line with RPCLog.
const HeaderRequestID = "X-Request-Id"

// MetadataOption configures a client of MetadataClient.
type MetadataOption func(*metadataConfig)

type metadataConfig struct {
	host   string
	header http.Header
}

// WithHost sends host as the Host header (the :authority over HTTP/2) of
// every call of the client, instead of the server's address. A single call
// can override it with req.Header().Set("Host", …), which works for every
// protocol.
func WithHost(host string) MetadataOption {
	return func(c *metadataConfig) { c.host = host }
}

// WithHeader sends the header on every call of the client, unless the call
// sets the same header itself.
func WithHeader(key, value string) MetadataOption {
	return func(c *metadataConfig) {
		if c.header == nil {
			c.header = http.Header{}
		}
		c.header.Set(key, value)
	}
}

// MetadataClient returns a MetadataService client speaking p with token (""
// sends no Authorization header). Like Client, REST errors come back as
// *connect.Error values with the response headers as metadata, so one
// assertion holds for every protocol; REST answers also carry the response
// headers (X-Environment-Id) in Response.Header.
//
// A call may carry a Host of its own: req.Header().Set("Host", h) reaches
// the server as the request's Host (HTTP/1.1) or :authority (HTTP/2) over
// every protocol, and WithHost sets one for every call of the client.
func (e *Env) MetadataClient(p Protocol, token string, opts ...MetadataOption) metadatav1connect.MetadataServiceClient {
	var cfg metadataConfig
	for _, o := range opts {
		o(&cfg)
	}
	if p == REST {
		return &RESTMetadataClient{HTTP: withHost(e.HTTP1, cfg.host), URL: e.URL, Token: token, Header: cfg.header}
	}
	httpClient, copts := e.ConnectOptions(p, token)
	if len(cfg.header) > 0 {
		copts = append(copts, connect.WithInterceptors(fixedHeaders(cfg.header)))
	}
	return metadatav1connect.NewMetadataServiceClient(withHost(httpClient, cfg.host), e.URL, copts...)
}

// withHost returns a client sharing c's connections whose requests carry a
// Host of the caller's choosing. Go's HTTP client writes the Host (or
// :authority) from http.Request.Host and ignores a "Host" entry of the
// header map, so hostTransport moves that entry to Request.Host; connect-go
// does the same for its clients, REST requests rely on this.
func withHost(c *http.Client, host string) *http.Client {
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	return &http.Client{Transport: hostTransport{base: base, host: host}, Timeout: c.Timeout}
}

// hostTransport sets Request.Host from the request's "Host" header, or else
// to its fixed host (when not empty).
type hostTransport struct {
	base http.RoundTripper
	host string
}

func (t hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := t.host
	if h := req.Header.Get("Host"); h != "" {
		host = h
	}
	if host == "" {
		return t.base.RoundTrip(req)
	}
	// A RoundTripper must not change the request it was given.
	r := req.Clone(req.Context())
	r.Host = host
	r.Header.Del("Host")
	return t.base.RoundTrip(r)
}

// fixedHeaders is a client interceptor setting headers the call left unset.
type fixedHeaders http.Header

func (f fixedHeaders) set(h http.Header) {
	for k, v := range f {
		if h.Get(k) == "" {
			h[k] = slices.Clone(v)
		}
	}
}

func (f fixedHeaders) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		f.set(req.Header())
		return next(ctx, req)
	}
}

func (f fixedHeaders) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		f.set(conn.RequestHeader())
		return conn
	}
}

func (f fixedHeaders) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// RESTMetadataClient calls MetadataService through its google.api.http
// routes: /api/v1/meta/objects[/{name}], or
// /api/v1/environments/{environment_id}/meta/objects[/{name}] when the
// request names its environment. The flags of PutObject and DeleteObject
// travel as query parameters (allowDestructive, validateOnly, force), the
// definition of PutObject as the body.
type RESTMetadataClient struct {
	HTTP   *http.Client
	URL    string
	Token  string      // sent as "Authorization: Bearer …" unless empty
	Header http.Header // sent with every call unless the call sets the header
}

var _ metadatav1connect.MetadataServiceClient = (*RESTMetadataClient)(nil)

func (c *RESTMetadataClient) do(ctx context.Context, header http.Header, method, path string, query url.Values, body, out proto.Message) (http.Header, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	fixedHeaders(c.Header).set(h)
	return restTransport{HTTP: c.HTTP, URL: c.URL, Token: c.Token}.do(ctx, h, method, path, query, body, out)
}

// objectsPath is the collection path of the environment named by
// environmentID, or of the resolved one when it is empty.
func objectsPath(environmentID string) string {
	if environmentID != "" {
		return "/api/v1/environments/" + seg(environmentID) + "/meta/objects"
	}
	return "/api/v1/meta/objects"
}

// PutObject implements MetadataServiceClient.
func (c *RESTMetadataClient) PutObject(ctx context.Context, req *connect.Request[metadatav1.PutObjectRequest]) (*connect.Response[metadatav1.PutObjectResponse], error) {
	q := url.Values{}
	if req.Msg.GetAllowDestructive() {
		q.Set("allowDestructive", "true")
	}
	if req.Msg.GetValidateOnly() {
		q.Set("validateOnly", "true")
	}
	if r := req.Msg.GetRepair(); r != metadatav1.Repair_REPAIR_UNSPECIFIED {
		q.Set("repair", r.String())
	}
	var body proto.Message
	if obj := req.Msg.GetObject(); obj != nil {
		body = obj
	}
	out := new(metadatav1.PutObjectResponse)
	h, err := c.do(ctx, req.Header(), http.MethodPut, objectsPath(req.Msg.GetEnvironmentId())+"/"+seg(req.Msg.GetName()), q, body, out)
	return respond(out, h, err)
}

// GetObject implements MetadataServiceClient.
func (c *RESTMetadataClient) GetObject(ctx context.Context, req *connect.Request[metadatav1.GetObjectRequest]) (*connect.Response[metadatav1.GetObjectResponse], error) {
	out := new(metadatav1.ObjectDefinition)
	h, err := c.do(ctx, req.Header(), http.MethodGet, objectsPath(req.Msg.GetEnvironmentId())+"/"+seg(req.Msg.GetName()), nil, nil, out)
	return respond(&metadatav1.GetObjectResponse{Object: out}, h, err)
}

// ListObjects implements MetadataServiceClient.
func (c *RESTMetadataClient) ListObjects(ctx context.Context, req *connect.Request[metadatav1.ListObjectsRequest]) (*connect.Response[metadatav1.ListObjectsResponse], error) {
	q := url.Values{}
	page(q, req.Msg.GetPageSize(), req.Msg.GetPageToken())
	out := new(metadatav1.ListObjectsResponse)
	h, err := c.do(ctx, req.Header(), http.MethodGet, objectsPath(req.Msg.GetEnvironmentId()), q, nil, out)
	return respond(out, h, err)
}

// DeleteObject implements MetadataServiceClient.
func (c *RESTMetadataClient) DeleteObject(ctx context.Context, req *connect.Request[metadatav1.DeleteObjectRequest]) (*connect.Response[metadatav1.DeleteObjectResponse], error) {
	q := url.Values{}
	if req.Msg.GetForce() {
		q.Set("force", "true")
	}
	out := new(metadatav1.DeleteObjectResponse)
	h, err := c.do(ctx, req.Header(), http.MethodDelete, objectsPath(req.Msg.GetEnvironmentId())+"/"+seg(req.Msg.GetName()), q, nil, out)
	return respond(out, h, err)
}

// RPCLog returns the closing log line ("rpc") of the call sent with
// X-Request-Id requestID, or nil. Its attributes say how the call was
// resolved: environment_id and resolved_by (request, host, header, session,
// default or only).
func (e *Env) RPCLog(requestID string) map[string]any {
	recs := e.Logs.Find(map[string]any{"msg": "rpc", "request_id": requestID})
	if len(recs) == 0 {
		return nil
	}
	return recs[len(recs)-1]
}

// OpenSQLiteEnv opens the database file of a SQLite environment beside the
// server, with the settings the server uses (WAL, busy timeout), read-only
// unless write; it is closed when the test ends.
func (e *Env) OpenSQLiteEnv(tb testing.TB, environmentID string, write bool) *sql.DB {
	tb.Helper()
	dsn := driversqlite.DSN(e.SQLitePath(environmentID))
	if !write {
		// Read-only: no journal-mode switch, no write lock; WAL lets it
		// read beside the server's writer.
		dsn = "file:" + e.SQLitePath(environmentID) + "?mode=ro&_pragma=busy_timeout(10000)"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		tb.Fatalf("open the database of %s: %v", environmentID, err)
	}
	db.SetMaxOpenConns(1)
	tb.Cleanup(func() { _ = db.Close() })
	if err := db.PingContext(tb.Context()); err != nil {
		tb.Fatalf("open the database of %s: %v", environmentID, err)
	}
	return db
}

// SQLiteTables lists the tables of a SQLite environment's database file, as
// its sqlite_master has them, read without the server.
func (e *Env) SQLiteTables(tb testing.TB, environmentID string) []string {
	tb.Helper()
	db := e.OpenSQLiteEnv(tb, environmentID, false)
	defer db.Close()
	rows, err := db.QueryContext(tb.Context(), `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		tb.Fatalf("list the tables of %s: %v", environmentID, err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			tb.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return names
}

// SQLiteColumns lists the columns of table in a SQLite environment's
// database file, in table order (nil when there is no such table).
func (e *Env) SQLiteColumns(tb testing.TB, environmentID, table string) []string {
	tb.Helper()
	db := e.OpenSQLiteEnv(tb, environmentID, false)
	defer db.Close()
	rows, err := db.QueryContext(tb.Context(), `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		tb.Fatalf("columns of %s in %s: %v", table, environmentID, err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			tb.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return names
}

// SQLiteExec runs one statement on a SQLite environment's database file
// beside the server (records cannot be written through the API yet).
func (e *Env) SQLiteExec(tb testing.TB, environmentID, query string, args ...any) {
	tb.Helper()
	db := e.OpenSQLiteEnv(tb, environmentID, true)
	defer db.Close()
	if _, err := db.ExecContext(tb.Context(), query, args...); err != nil {
		tb.Fatalf("%s on %s: %v", query, environmentID, err)
	}
}

var requestSeq atomic.Uint64

// RequestID returns a request id unique within the test binary, for
// HeaderRequestID.
func RequestID(prefix string) string {
	return prefix + "-" + strconv.FormatUint(requestSeq.Add(1), 10)
}
