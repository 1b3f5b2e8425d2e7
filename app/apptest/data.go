package apptest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/provision"
)

// DataClient returns a DataService client speaking p with token ("" sends
// no Authorization header). It takes the options of MetadataClient: WithHost
// fixes the Host of every call, WithHeader a header (X-Environment-Id); a
// single call can set its own Host with req.Header().Set("Host", …).
//
// Over REST the record is the body of CreateRecord and UpdateRecord and the
// whole answer of CreateRecord, GetRecord and UpdateRecord; errors come back
// as *connect.Error values with the response headers as metadata, so one
// assertion holds for every protocol.
func (e *Env) DataClient(p Protocol, token string, opts ...MetadataOption) datav1connect.DataServiceClient {
	var cfg metadataConfig
	for _, o := range opts {
		o(&cfg)
	}
	if p == REST {
		return &RESTDataClient{HTTP: withHost(e.HTTP1, cfg.host), URL: e.URL, Token: token, Header: cfg.header}
	}
	httpClient, copts := e.ConnectOptions(p, token)
	if len(cfg.header) > 0 {
		copts = append(copts, connect.WithInterceptors(fixedHeaders(cfg.header)))
	}
	return datav1connect.NewDataServiceClient(withHost(httpClient, cfg.host), e.URL, copts...)
}

// RESTDataClient calls DataService through its google.api.http routes:
// /api/v1/data/{object}[/{id}] and /api/v1/data:batchWrite, or the same
// under /api/v1/environments/{environment_id}/ when the request names its
// environment (the environment_id then travels in the path only).
//
// ListRecords sends filter, orderBy, pageSize, pageToken, showTotalSize and
// readMask as query parameters; GetRecord readMask; UpdateRecord updateMask
// and etag; DeleteRecord etag.
type RESTDataClient struct {
	HTTP   *http.Client
	URL    string
	Token  string      // sent as "Authorization: Bearer …" unless empty
	Header http.Header // sent with every call unless the call sets the header
}

var _ datav1connect.DataServiceClient = (*RESTDataClient)(nil)

func (c *RESTDataClient) do(ctx context.Context, header http.Header, method, path string, query url.Values, body, out proto.Message) (http.Header, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	fixedHeaders(c.Header).set(h)
	return restTransport{HTTP: c.HTTP, URL: c.URL, Token: c.Token}.do(ctx, h, method, path, query, body, out)
}

// DataPath is the REST path of DataService for the environment named by
// environmentID, or for the resolved one when it is empty, followed by
// the escaped segments.
func DataPath(environmentID string, segments ...string) string {
	var b strings.Builder
	if environmentID != "" {
		b.WriteString("/api/v1/environments/" + seg(environmentID) + "/data")
	} else {
		b.WriteString("/api/v1/data")
	}
	for _, s := range segments {
		b.WriteString("/" + seg(s))
	}
	return b.String()
}

// restMask renders a field mask as a query parameter: its JSON form, paths
// in lowerCamelCase separated by commas.
func restMask(q url.Values, name string, m *fieldmaskpb.FieldMask) error {
	if len(m.GetPaths()) == 0 {
		return nil
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("rest: %s: %w", name, err))
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("rest: %s: %w", name, err))
	}
	q.Set(name, s)
	return nil
}

// recordBody is the body of a create or update: the record itself (none
// when the request has no record, so that the server sees it missing).
func recordBody(s *structpb.Struct) proto.Message {
	if s == nil {
		return nil
	}
	return s
}

// CreateRecord implements DataServiceClient.
func (c *RESTDataClient) CreateRecord(ctx context.Context, req *connect.Request[datav1.CreateRecordRequest]) (*connect.Response[datav1.CreateRecordResponse], error) {
	m := req.Msg
	out := new(structpb.Struct)
	h, err := c.do(ctx, req.Header(), http.MethodPost, DataPath(m.GetEnvironmentId(), m.GetObject()), nil, recordBody(m.GetRecord()), out)
	return respond(&datav1.CreateRecordResponse{Record: out}, h, err)
}

// GetRecord implements DataServiceClient.
func (c *RESTDataClient) GetRecord(ctx context.Context, req *connect.Request[datav1.GetRecordRequest]) (*connect.Response[datav1.GetRecordResponse], error) {
	m := req.Msg
	q := url.Values{}
	if err := restMask(q, "readMask", m.GetReadMask()); err != nil {
		return nil, err
	}
	out := new(structpb.Struct)
	h, err := c.do(ctx, req.Header(), http.MethodGet, DataPath(m.GetEnvironmentId(), m.GetObject(), m.GetId()), q, nil, out)
	return respond(&datav1.GetRecordResponse{Record: out}, h, err)
}

// ListRecords implements DataServiceClient.
func (c *RESTDataClient) ListRecords(ctx context.Context, req *connect.Request[datav1.ListRecordsRequest]) (*connect.Response[datav1.ListRecordsResponse], error) {
	m := req.Msg
	q := url.Values{}
	if m.GetFilter() != "" {
		q.Set("filter", m.GetFilter())
	}
	if m.GetOrderBy() != "" {
		q.Set("orderBy", m.GetOrderBy())
	}
	page(q, m.GetPageSize(), m.GetPageToken())
	if m.GetShowTotalSize() {
		q.Set("showTotalSize", "true")
	}
	if err := restMask(q, "readMask", m.GetReadMask()); err != nil {
		return nil, err
	}
	out := new(datav1.ListRecordsResponse)
	h, err := c.do(ctx, req.Header(), http.MethodGet, DataPath(m.GetEnvironmentId(), m.GetObject()), q, nil, out)
	return respond(out, h, err)
}

// UpdateRecord implements DataServiceClient.
func (c *RESTDataClient) UpdateRecord(ctx context.Context, req *connect.Request[datav1.UpdateRecordRequest]) (*connect.Response[datav1.UpdateRecordResponse], error) {
	m := req.Msg
	q := url.Values{}
	if err := restMask(q, "updateMask", m.GetUpdateMask()); err != nil {
		return nil, err
	}
	if m.GetEtag() != "" {
		q.Set("etag", m.GetEtag())
	}
	out := new(structpb.Struct)
	h, err := c.do(ctx, req.Header(), http.MethodPatch, DataPath(m.GetEnvironmentId(), m.GetObject(), m.GetId()), q, recordBody(m.GetRecord()), out)
	return respond(&datav1.UpdateRecordResponse{Record: out}, h, err)
}

// DeleteRecord implements DataServiceClient.
func (c *RESTDataClient) DeleteRecord(ctx context.Context, req *connect.Request[datav1.DeleteRecordRequest]) (*connect.Response[datav1.DeleteRecordResponse], error) {
	m := req.Msg
	q := url.Values{}
	if m.GetEtag() != "" {
		q.Set("etag", m.GetEtag())
	}
	out := new(datav1.DeleteRecordResponse)
	h, err := c.do(ctx, req.Header(), http.MethodDelete, DataPath(m.GetEnvironmentId(), m.GetObject(), m.GetId()), q, nil, out)
	return respond(out, h, err)
}

// BatchWriteRecords implements DataServiceClient. The request is the body
// (without its environment_id, which the path carries when set).
func (c *RESTDataClient) BatchWriteRecords(ctx context.Context, req *connect.Request[datav1.BatchWriteRecordsRequest]) (*connect.Response[datav1.BatchWriteRecordsResponse], error) {
	body := proto.CloneOf(req.Msg)
	body.EnvironmentId = ""
	path := "/api/v1/data:batchWrite"
	if id := req.Msg.GetEnvironmentId(); id != "" {
		path = "/api/v1/environments/" + seg(id) + "/data:batchWrite"
	}
	out := new(datav1.BatchWriteRecordsResponse)
	h, err := c.do(ctx, req.Header(), http.MethodPost, path, nil, body, out)
	return respond(out, h, err)
}

// StoredRecords opens the database of environment e beside the server
// and returns a function reading the ids of an object's records straight
// from it, sorted by id: the SQLite file of a sqlite environment, or the
// database of a postgres one (with the environment's own credential). It
// returns nil for engines with no database to look at (memory). The
// database is closed when the test ends.
func (e *Env) StoredRecords(tb testing.TB, env *environmentv1.Environment) func(tb testing.TB, object string) []string {
	tb.Helper()
	switch env.GetDriver() {
	case provision.DriverSQLite:
		db := e.OpenSQLiteEnv(tb, env.GetId(), false)
		return func(tb testing.TB, object string) []string {
			tb.Helper()
			rows, err := db.QueryContext(tb.Context(), `SELECT id FROM "`+object+`" ORDER BY id`)
			if err != nil {
				tb.Fatalf("read the ids of %s in %s: %v", object, env.GetId(), err)
			}
			defer rows.Close()
			var ids []string
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					tb.Fatal(err)
				}
				ids = append(ids, id)
			}
			if err := rows.Err(); err != nil {
				tb.Fatal(err)
			}
			return ids
		}
	case provision.DriverPostgres:
		_, secret := EnvironmentSecret(tb, e.ControlPlane(tb), e.Keyring(tb), env.GetId())
		conn, err := ConnectPostgres(tb.Context(), env.GetDatabaseUrl(), secret)
		if err != nil {
			tb.Fatalf("connect to the database of %s: %v", env.GetId(), err)
		}
		tb.Cleanup(func() { _ = conn.Close(context.Background()) })
		var mu sync.Mutex // a pgx.Conn serves one query at a time
		return func(tb testing.TB, object string) []string {
			tb.Helper()
			mu.Lock()
			defer mu.Unlock()
			rows, err := conn.Query(tb.Context(), `SELECT id::text FROM "`+object+`" ORDER BY id COLLATE "C"`)
			if err != nil {
				tb.Fatalf("read the ids of %s in %s: %v", object, env.GetId(), err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				tb.Fatalf("read the ids of %s in %s: %v", object, env.GetId(), err)
			}
			return ids
		}
	}
	return nil
}
