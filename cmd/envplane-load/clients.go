package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
)

// objectName is the object every environment gets for the data plane.
const objectName = "items"

// clients holds the transports and the clients of every protocol.
type clients struct {
	http1, h2c *http.Transport
	env        environmentv1connect.EnvironmentServiceClient
	meta       metadatav1connect.MetadataServiceClient
	setup      datav1connect.DataServiceClient
	data       map[string]dataClient // by protocol
}

// newClients builds one HTTP/1.1 transport whose keep-alive pool holds a
// connection per concurrent client, and one h2c transport (HTTP/2 with prior
// knowledge, multiplexing the clients' streams), as gRPC clients do.
//
// The REST client decodes one answer in decodeEvery (see restData).
func newClients(base, token string, concurrency, decodeEvery int) *clients {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	c := &clients{
		http1: &http.Transport{
			DialContext:         dialer.DialContext,
			Protocols:           h1,
			MaxIdleConns:        2 * concurrency,
			MaxIdleConnsPerHost: concurrency,
			IdleConnTimeout:     90 * time.Second,
		},
		h2c: &http.Transport{
			DialContext:         dialer.DialContext,
			Protocols:           h2,
			MaxIdleConns:        2 * concurrency,
			MaxIdleConnsPerHost: concurrency,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	h1Client := &http.Client{Transport: c.http1}
	h2cClient := &http.Client{Transport: c.h2c}
	auth := connect.WithInterceptors(bearer(token))
	c.env = environmentv1connect.NewEnvironmentServiceClient(h1Client, base, auth)
	c.meta = metadatav1connect.NewMetadataServiceClient(h1Client, base, auth)
	c.setup = datav1connect.NewDataServiceClient(h1Client, base, auth)
	c.data = map[string]dataClient{
		protoREST:        &restData{http: h1Client, base: base, auth: "Bearer " + token, decodeEvery: int64(decodeEvery)},
		protoConnect:     connectData{datav1connect.NewDataServiceClient(h1Client, base, auth)},
		protoConnectJSON: connectData{datav1connect.NewDataServiceClient(h1Client, base, auth, connect.WithProtoJSON())},
		protoConnectH2C:  connectData{datav1connect.NewDataServiceClient(h2cClient, base, auth)},
		protoGRPC:        connectData{datav1connect.NewDataServiceClient(h2cClient, base, auth, connect.WithGRPC())},
	}
	return c
}

func (c *clients) close() {
	c.http1.CloseIdleConnections()
	c.h2c.CloseIdleConnections()
}

// bearer is a client interceptor sending a bearer token.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// dataClient is what a data-plane scenario calls, whatever the protocol.
type dataClient interface {
	create(ctx context.Context, env string, i int64) error
	get(ctx context.Context, env, id string) error
	list(ctx context.Context, env string, pageSize int) error
}

var tags = [...]string{"red", "green", "blue"}

// item is the i-th record a create scenario writes.
func item(i int64) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"name": structpb.NewStringValue("item-" + strconv.FormatInt(i, 10)),
		"n":    structpb.NewNumberValue(float64(i)),
		"tag":  structpb.NewStringValue(tags[i%int64(len(tags))]),
	}}
}

// connectData speaks Connect or gRPC (binary protobuf) through the generated
// client; the environment travels in the environment_id field.
type connectData struct {
	c datav1connect.DataServiceClient
}

func (d connectData) create(ctx context.Context, env string, i int64) error {
	_, err := d.c.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{
		EnvironmentId: env, Object: objectName, Record: item(i),
	}))
	return err
}

func (d connectData) get(ctx context.Context, env, id string) error {
	_, err := d.c.GetRecord(ctx, connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: env, Object: objectName, Id: id}))
	return err
}

func (d connectData) list(ctx context.Context, env string, pageSize int) error {
	resp, err := d.c.ListRecords(ctx, connect.NewRequest(&datav1.ListRecordsRequest{
		EnvironmentId: env, Object: objectName, PageSize: int32(pageSize),
	}))
	if err == nil && len(resp.Msg.GetRecords()) == 0 {
		return errEmptyPage
	}
	return err
}

// restData speaks JSON over net/http to the environment-scoped REST routes,
// /api/v1/environments/{id}/data/items. Every answer must be 200 with a JSON
// content type and is read to its end; one in decodeEvery is also decoded as
// a caller would (a list must hold records). Decoding a page into maps costs
// the load tool more CPU than the server spends answering it, CPU the two
// share on one machine; load generators such as wrk and hey decode nothing.
type restData struct {
	http        *http.Client
	base        string
	auth        string
	decodeEvery int64
	calls       atomic.Int64
}

func (d *restData) create(ctx context.Context, env string, i int64) error {
	body := fmt.Appendf(nil, `{"name":"item-%d","n":%d,"tag":%q}`, i, i, tags[i%int64(len(tags))])
	return d.record(ctx, http.MethodPost, "/api/v1/environments/"+env+"/data/"+objectName, body)
}

func (d *restData) get(ctx context.Context, env, id string) error {
	return d.record(ctx, http.MethodGet, "/api/v1/environments/"+env+"/data/"+objectName+"/"+url.PathEscape(id), nil)
}

// record calls a route answering one record, which must carry an id when
// the answer is decoded.
func (d *restData) record(ctx context.Context, method, path string, body []byte) error {
	var rec map[string]any
	decoded, err := d.do(ctx, method, path, body, &rec)
	if err == nil && decoded && rec["id"] == nil {
		return fmt.Errorf("%s %s: the answer is no record", method, path)
	}
	return err
}

func (d *restData) list(ctx context.Context, env string, pageSize int) error {
	var page struct {
		Records       []map[string]any `json:"records"`
		NextPageToken string           `json:"nextPageToken"`
	}
	decoded, err := d.do(ctx, http.MethodGet, "/api/v1/environments/"+env+"/data/"+objectName+"?pageSize="+strconv.Itoa(pageSize), nil, &page)
	if err == nil && decoded && len(page.Records) == 0 {
		return errEmptyPage
	}
	return err
}

// do makes one call and reports whether it decoded the answer into out.
func (d *restData) do(ctx context.Context, method, path string, body []byte, out any) (decoded bool, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", d.auth)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return false, err
	}
	// Drain what is left so the connection goes back to the pool.
	defer func() {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return false, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return false, fmt.Errorf("%s %s: answered %q, not JSON", method, path, ct)
	}
	if d.calls.Add(1)%d.decodeEvery != 0 {
		return false, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return false, fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return true, nil
}
