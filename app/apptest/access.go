package apptest

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"connectrpc.com/connect"

	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	"github.com/envplane/envplane/gen/envplane/access/v1/accessv1connect"
)

// AdminToken is the platform-admin token the server minted into
// <data-dir>/admin.token on first start ("" when it minted none).
func (e *Env) AdminToken() string { return e.Token }

// AccessClient returns an AccessService client speaking p with token ("" sends
// no Authorization header). Like Client, REST errors come back as
// *connect.Error values, so one assertion holds for every protocol.
func (e *Env) AccessClient(p Protocol, token string) accessv1connect.AccessServiceClient {
	if p == REST {
		return &RESTAccessClient{HTTP: e.HTTP1, URL: e.URL, Token: token}
	}
	httpClient, opts := e.ConnectOptions(p, token)
	return accessv1connect.NewAccessServiceClient(httpClient, e.URL, opts...)
}

// MintToken creates a token through the API with the admin token (over
// Connect) and returns it with its secret, failing tb if it cannot.
func (e *Env) MintToken(tb testing.TB, req *accessv1.CreateTokenRequest) (*accessv1.Token, string) {
	tb.Helper()
	resp, err := e.AccessClient(ConnectProto, e.Token).CreateToken(tb.Context(), connect.NewRequest(req))
	if err != nil {
		tb.Fatalf("CreateToken(%q): %v", req.GetName(), err)
	}
	if resp.Msg.GetSecret() == "" {
		tb.Fatalf("CreateToken(%q) returned no secret", req.GetName())
	}
	return resp.Msg.GetToken(), resp.Msg.GetSecret()
}

// RESTAccessClient calls AccessService through its google.api.http routes,
// exactly as RESTClient calls EnvironmentService.
type RESTAccessClient struct {
	HTTP  *http.Client
	URL   string
	Token string // sent as "Authorization: Bearer …" unless empty
}

var _ accessv1connect.AccessServiceClient = (*RESTAccessClient)(nil)

func (c *RESTAccessClient) transport() restTransport {
	return restTransport{HTTP: c.HTTP, URL: c.URL, Token: c.Token}
}

// CreateToken implements AccessServiceClient.
func (c *RESTAccessClient) CreateToken(ctx context.Context, req *connect.Request[accessv1.CreateTokenRequest]) (*connect.Response[accessv1.CreateTokenResponse], error) {
	out := new(accessv1.CreateTokenResponse)
	h, err := c.transport().do(ctx, req.Header(), http.MethodPost, "/api/v1/cloud/tokens", nil, req.Msg, out)
	return respond(out, h, err)
}

// ListTokens implements AccessServiceClient.
func (c *RESTAccessClient) ListTokens(ctx context.Context, req *connect.Request[accessv1.ListTokensRequest]) (*connect.Response[accessv1.ListTokensResponse], error) {
	q := url.Values{}
	if id := req.Msg.GetOrganizationId(); id != "" {
		q.Set("organizationId", id)
	}
	page(q, req.Msg.GetPageSize(), req.Msg.GetPageToken())
	out := new(accessv1.ListTokensResponse)
	h, err := c.transport().do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/tokens", q, nil, out)
	return respond(out, h, err)
}

// RevokeToken implements AccessServiceClient.
func (c *RESTAccessClient) RevokeToken(ctx context.Context, req *connect.Request[accessv1.RevokeTokenRequest]) (*connect.Response[accessv1.RevokeTokenResponse], error) {
	out := new(accessv1.RevokeTokenResponse)
	h, err := c.transport().do(ctx, req.Header(), http.MethodDelete, "/api/v1/cloud/tokens/"+seg(req.Msg.GetId()), nil, nil, out)
	return respond(out, h, err)
}

// WhoAmI implements AccessServiceClient.
func (c *RESTAccessClient) WhoAmI(ctx context.Context, req *connect.Request[accessv1.WhoAmIRequest]) (*connect.Response[accessv1.WhoAmIResponse], error) {
	out := new(accessv1.WhoAmIResponse)
	h, err := c.transport().do(ctx, req.Header(), http.MethodGet, "/api/v1/cloud/whoami", nil, nil, out)
	return respond(out, h, err)
}
