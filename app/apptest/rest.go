package apptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"

	// The REST error body names its details by type URL; these must be
	// registered for protojson to decode them.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
)

// RESTClient calls EnvironmentService through its google.api.http routes with
// plain net/http and protojson, as a curl user would. A non-2xx answer becomes
// a *connect.Error carrying the google.rpc.Status code, message and details,
// with the response headers as its metadata; an HTTP status that disagrees
// with the body's code is reported as an error of its own.
type RESTClient struct {
	HTTP  *http.Client
	URL   string
	Token string // sent as "Authorization: Bearer …" unless empty
}

var _ environmentv1connect.EnvironmentServiceClient = (*RESTClient)(nil)

// CreateOrganization implements EnvironmentServiceClient.
func (c *RESTClient) CreateOrganization(ctx context.Context, req *connect.Request[environmentv1.CreateOrganizationRequest]) (*connect.Response[environmentv1.CreateOrganizationResponse], error) {
	out := new(environmentv1.Organization)
	h, err := c.do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/organizations", nil, req.Msg, out)
	return respond(&environmentv1.CreateOrganizationResponse{Organization: out}, h, err)
}

// GetOrganization implements EnvironmentServiceClient.
func (c *RESTClient) GetOrganization(ctx context.Context, req *connect.Request[environmentv1.GetOrganizationRequest]) (*connect.Response[environmentv1.GetOrganizationResponse], error) {
	out := new(environmentv1.Organization)
	h, err := c.do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/organizations/"+seg(req.Msg.GetId()), nil, nil, out)
	return respond(&environmentv1.GetOrganizationResponse{Organization: out}, h, err)
}

// ListOrganizations implements EnvironmentServiceClient.
func (c *RESTClient) ListOrganizations(ctx context.Context, req *connect.Request[environmentv1.ListOrganizationsRequest]) (*connect.Response[environmentv1.ListOrganizationsResponse], error) {
	q := url.Values{}
	page(q, req.Msg.GetPageSize(), req.Msg.GetPageToken())
	out := new(environmentv1.ListOrganizationsResponse)
	h, err := c.do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/organizations", q, nil, out)
	return respond(out, h, err)
}

// CreateEnvironment implements EnvironmentServiceClient.
func (c *RESTClient) CreateEnvironment(ctx context.Context, req *connect.Request[environmentv1.CreateEnvironmentRequest]) (*connect.Response[environmentv1.CreateEnvironmentResponse], error) {
	out := new(environmentv1.Environment)
	h, err := c.do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/environments", nil, req.Msg, out)
	return respond(&environmentv1.CreateEnvironmentResponse{Environment: out}, h, err)
}

// GetEnvironment implements EnvironmentServiceClient.
func (c *RESTClient) GetEnvironment(ctx context.Context, req *connect.Request[environmentv1.GetEnvironmentRequest]) (*connect.Response[environmentv1.GetEnvironmentResponse], error) {
	out := new(environmentv1.Environment)
	h, err := c.do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/environments/"+seg(req.Msg.GetId()), nil, nil, out)
	return respond(&environmentv1.GetEnvironmentResponse{Environment: out}, h, err)
}

// ListEnvironments implements EnvironmentServiceClient.
func (c *RESTClient) ListEnvironments(ctx context.Context, req *connect.Request[environmentv1.ListEnvironmentsRequest]) (*connect.Response[environmentv1.ListEnvironmentsResponse], error) {
	q := url.Values{}
	if id := req.Msg.GetOrganizationId(); id != "" {
		q.Set("organizationId", id)
	}
	page(q, req.Msg.GetPageSize(), req.Msg.GetPageToken())
	out := new(environmentv1.ListEnvironmentsResponse)
	h, err := c.do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/environments", q, nil, out)
	return respond(out, h, err)
}

// UpdateEnvironment implements EnvironmentServiceClient. The id travels in
// the path, every other present field in the body.
func (c *RESTClient) UpdateEnvironment(ctx context.Context, req *connect.Request[environmentv1.UpdateEnvironmentRequest]) (*connect.Response[environmentv1.UpdateEnvironmentResponse], error) {
	body := proto.CloneOf(req.Msg)
	body.Id = ""
	out := new(environmentv1.Environment)
	h, err := c.do(ctx, req.Header(), http.MethodPatch, "/api/v1/cloud/environments/"+seg(req.Msg.GetId()), nil, body, out)
	return respond(&environmentv1.UpdateEnvironmentResponse{Environment: out}, h, err)
}

// DeleteEnvironment implements EnvironmentServiceClient.
func (c *RESTClient) DeleteEnvironment(ctx context.Context, req *connect.Request[environmentv1.DeleteEnvironmentRequest]) (*connect.Response[environmentv1.DeleteEnvironmentResponse], error) {
	q := url.Values{}
	if req.Msg.GetForce() {
		q.Set("force", "true")
	}
	out := new(environmentv1.DeleteEnvironmentResponse)
	h, err := c.do(ctx, req.Header(), http.MethodDelete, "/api/v1/cloud/environments/"+seg(req.Msg.GetId()), q, nil, out)
	return respond(out, h, err)
}

// ActivateEnvironment implements EnvironmentServiceClient.
func (c *RESTClient) ActivateEnvironment(ctx context.Context, req *connect.Request[environmentv1.ActivateEnvironmentRequest]) (*connect.Response[environmentv1.ActivateEnvironmentResponse], error) {
	out := new(environmentv1.ActivateEnvironmentResponse)
	h, err := c.do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/environments/"+seg(req.Msg.GetId())+"/activate", nil, &environmentv1.ActivateEnvironmentRequest{}, out)
	return respond(out, h, err)
}

// RotateCredential implements EnvironmentServiceClient.
func (c *RESTClient) RotateCredential(ctx context.Context, req *connect.Request[environmentv1.RotateCredentialRequest]) (*connect.Response[environmentv1.RotateCredentialResponse], error) {
	out := new(environmentv1.RotateCredentialResponse)
	h, err := c.do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/environments/"+seg(req.Msg.GetId())+"/rotate-credential", nil, &environmentv1.RotateCredentialRequest{}, out)
	return respond(out, h, err)
}

// RetryProvisioning implements EnvironmentServiceClient.
func (c *RESTClient) RetryProvisioning(ctx context.Context, req *connect.Request[environmentv1.RetryProvisioningRequest]) (*connect.Response[environmentv1.RetryProvisioningResponse], error) {
	out := new(environmentv1.Environment)
	h, err := c.do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/environments/"+seg(req.Msg.GetId())+"/retry", nil, &environmentv1.RetryProvisioningRequest{}, out)
	return respond(&environmentv1.RetryProvisioningResponse{Environment: out}, h, err)
}

// VerifyHostname implements EnvironmentServiceClient.
func (c *RESTClient) VerifyHostname(ctx context.Context, req *connect.Request[environmentv1.VerifyHostnameRequest]) (*connect.Response[environmentv1.VerifyHostnameResponse], error) {
	out := new(environmentv1.Environment)
	h, err := c.do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/environments/"+seg(req.Msg.GetId())+"/verify-hostname", nil,
		&environmentv1.VerifyHostnameRequest{SkipCheck: req.Msg.GetSkipCheck()}, out)
	return respond(&environmentv1.VerifyHostnameResponse{Environment: out}, h, err)
}

// ResolveHostname implements EnvironmentServiceClient.
func (c *RESTClient) ResolveHostname(ctx context.Context, req *connect.Request[environmentv1.ResolveHostnameRequest]) (*connect.Response[environmentv1.ResolveHostnameResponse], error) {
	out := new(environmentv1.ResolveHostnameResponse)
	h, err := c.do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/hostnames/"+seg(req.Msg.GetHostname()), nil, nil, out)
	return respond(out, h, err)
}

// do sends one REST call with the client's token.
func (c *RESTClient) do(ctx context.Context, header http.Header, method, path string, query url.Values, body, out proto.Message) (http.Header, error) {
	return restTransport{HTTP: c.HTTP, URL: c.URL, Token: c.Token}.do(ctx, header, method, path, query, body, out)
}

// restTransport is what every REST client of this package shares: where to
// send calls, with which token, and how answers and errors come back.
type restTransport struct {
	HTTP  *http.Client
	URL   string
	Token string // sent as "Authorization: Bearer …" unless empty
}

// do sends one REST call: body (if any) as protojson, header copied, and
// decodes a 2xx answer into out; any other answer becomes the
// *connect.Error restError rebuilds.
func (c restTransport) do(ctx context.Context, header http.Header, method, path string, query url.Values, body, out proto.Message) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := protojson.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("rest: marshal request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("rest: %w", err)
	}
	for k, v := range header {
		hreq.Header[k] = v
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	hreq.Header.Set("Accept", "application/json")
	if c.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(hreq)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, restError(resp, raw)
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := protojson.Unmarshal(raw, out); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("rest: decode %s %s answer %q: %w", method, path, raw, err))
		}
	}
	return resp.Header, nil
}

// restError rebuilds the Connect error a REST answer carries.
func restError(resp *http.Response, raw []byte) error {
	var st status.Status
	if err := protojson.Unmarshal(raw, &st); err != nil {
		ce := connect.NewWireError(codeFromHTTP(resp.StatusCode),
			fmt.Errorf("rest: HTTP %d with a body that is no google.rpc.Status: %q", resp.StatusCode, raw))
		copyMeta(ce, resp.Header)
		return ce
	}
	code := connect.Code(st.GetCode()) //nolint:gosec // google.rpc codes fit
	if want := HTTPStatus(code); want != resp.StatusCode {
		return connect.NewError(connect.CodeUnknown,
			fmt.Errorf("rest: HTTP status %d does not match google.rpc code %s (want %d); body %q", resp.StatusCode, code, want, raw))
	}
	ce := connect.NewWireError(code, errors.New(st.GetMessage()))
	for _, anyDetail := range st.GetDetails() {
		m, err := anyDetail.UnmarshalNew()
		if err != nil {
			return connect.NewError(connect.CodeUnknown, fmt.Errorf("rest: detail %s: %w", anyDetail.GetTypeUrl(), err))
		}
		d, err := connect.NewErrorDetail(m)
		if err != nil {
			return connect.NewError(connect.CodeUnknown, fmt.Errorf("rest: detail %s: %w", anyDetail.GetTypeUrl(), err))
		}
		ce.AddDetail(d)
	}
	copyMeta(ce, resp.Header)
	return ce
}

func copyMeta(ce *connect.Error, h http.Header) {
	for k, v := range h {
		ce.Meta()[k] = v
	}
}

// HTTPStatus is the HTTP status the REST surface answers code with
// (google.rpc's mapping, which vanguard follows).
func HTTPStatus(code connect.Code) int {
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
	default:
		return http.StatusInternalServerError
	}
}

func codeFromHTTP(status int) connect.Code {
	switch status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound:
		return connect.CodeNotFound
	case http.StatusConflict:
		return connect.CodeAborted
	case http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case http.StatusNotImplemented:
		return connect.CodeUnimplemented
	case http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	case http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	default:
		return connect.CodeUnknown
	}
}

func respond[T any](msg *T, h http.Header, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	resp := connect.NewResponse(msg)
	for k, v := range h {
		resp.Header()[k] = v
	}
	return resp, nil
}

func page(q url.Values, size int32, token string) {
	if size != 0 {
		q.Set("pageSize", strconv.Itoa(int(size)))
	}
	if token != "" {
		q.Set("pageToken", token)
	}
}

// seg escapes one path segment. A colon is escaped too: in a google.api.http
// path an unescaped one starts the custom verb (".../{name}:verb"), so
// "foo.example:8080" would not match the hostnames route.
func seg(s string) string { return strings.ReplaceAll(url.PathEscape(s), ":", "%3A") }
