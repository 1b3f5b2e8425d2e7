package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	"github.com/envplane/envplane/gen/envplane/access/v1/accessv1connect"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
)

// accessClient is the AccessService client the authorization tests talk through.
type accessClient = accessv1connect.AccessServiceClient

// world is the fixture of the authorization tests: two organizations, acme
// with environments dev (the default) and staging, beta with dev, all created
// by the platform admin over the protocol under test.
type world struct {
	env          *apptest.Env
	p            apptest.Protocol
	admin        client       // EnvironmentService as the platform admin
	adminAccess  accessClient // AccessService as the platform admin
	acme, beta   *environmentv1.Organization
	dev, staging *environmentv1.Environment // of acme
	betaDev      *environmentv1.Environment // of beta
	bootstrapID  string                     // the platform admin token's id
}

func newWorld(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) *world {
	t.Helper()
	w := &world{env: env, p: p, admin: admin, adminAccess: env.AccessClient(p, env.AdminToken())}
	w.acme = createOrg(t, admin, "acme")
	w.beta = createOrg(t, admin, "beta")
	w.dev = createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.acme.GetId(), Slug: "dev", Driver: "memory"})
	w.staging = createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.acme.GetId(), Slug: "staging", Driver: "memory"})
	w.betaDev = createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.beta.GetId(), Slug: "dev", Driver: "memory"})
	w.bootstrapID = whoAmI(t, w.adminAccess).GetTokenId()
	return w
}

// token mints a token of orgID with role, limited to envIDs when given.
func (w *world) token(t *testing.T, orgID, role string, envIDs ...string) (*accessv1.Token, string) {
	t.Helper()
	return w.env.MintToken(t, &accessv1.CreateTokenRequest{
		Name: role + " token", OrganizationId: orgID, Role: role, EnvironmentIds: envIDs,
	})
}

// as returns both service clients speaking the world's protocol with secret.
func (w *world) as(secret string) (client, accessClient) {
	return w.env.ClientWithToken(w.p, secret), w.env.AccessClient(w.p, secret)
}

func whoAmI(t *testing.T, a accessClient) *accessv1.WhoAmIResponse {
	t.Helper()
	resp, err := a.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
	if err != nil {
		t.Fatalf("WhoAmI: %v", err)
	}
	return resp.Msg
}

// listTokens returns every token the caller lists in orgID ("" for the
// caller's default scope).
func listTokens(t *testing.T, a accessClient, orgID string) []*accessv1.Token {
	t.Helper()
	resp, err := a.ListTokens(t.Context(), connect.NewRequest(&accessv1.ListTokensRequest{OrganizationId: orgID, PageSize: 1000}))
	if err != nil {
		t.Fatalf("ListTokens(%q): %v", orgID, err)
	}
	if resp.Msg.GetNextPageToken() != "" {
		t.Fatalf("ListTokens(%q): more than 1000 tokens", orgID)
	}
	return resp.Msg.GetTokens()
}

func tokenIDs(toks []*accessv1.Token) []string {
	ids := make([]string, 0, len(toks))
	for _, tok := range toks {
		ids = append(ids, tok.GetId())
	}
	return ids
}

func envIDs(envs []*environmentv1.Environment) []string {
	ids := make([]string, 0, len(envs))
	for _, e := range envs {
		ids = append(ids, e.GetId())
	}
	return ids
}

func orgIDs(orgs []*environmentv1.Organization) []string {
	ids := make([]string, 0, len(orgs))
	for _, o := range orgs {
		ids = append(ids, o.GetId())
	}
	return ids
}

func listOrgs(t *testing.T, c client) []*environmentv1.Organization {
	t.Helper()
	resp, err := c.ListOrganizations(t.Context(), connect.NewRequest(&environmentv1.ListOrganizationsRequest{PageSize: 1000}))
	if err != nil {
		t.Fatalf("ListOrganizations: %v", err)
	}
	return resp.Msg.GetOrganizations()
}

// call is one RPC made for its error only.
type call struct {
	name string
	do   func(ctx context.Context) error
}

func errOf[T any](_ *connect.Response[T], err error) error { return err }

// envCalls are the EnvironmentService calls that name one environment, each
// of which would change or reveal it.
func envCalls(c client, id string) []call {
	return []call{
		{"GetEnvironment", func(ctx context.Context) error {
			return errOf(c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: id})))
		}},
		{"UpdateEnvironment", func(ctx context.Context) error {
			return errOf(c.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: id, DisplayName: proto.String("taken over")})))
		}},
		{"DeleteEnvironment", func(ctx context.Context) error {
			return errOf(c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: id, Force: true})))
		}},
		{"ActivateEnvironment", func(ctx context.Context) error {
			return errOf(c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: id})))
		}},
		{"RotateCredential", func(ctx context.Context) error {
			return errOf(c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: id})))
		}},
		{"RetryProvisioning", func(ctx context.Context) error {
			return errOf(c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: id})))
		}},
	}
}

// writeCalls are the EnvironmentService calls that change environment id,
// which only an admin may make.
func writeCalls(c client, id string) []call {
	var out []call
	for _, cl := range envCalls(c, id) {
		switch cl.name {
		case "UpdateEnvironment", "DeleteEnvironment", "RotateCredential", "RetryProvisioning":
			out = append(out, cl)
		}
	}
	return out
}

// withAuth returns a request for msg carrying header as its Authorization
// (none when empty); the client must have been made without a token.
func withAuth[T any](msg *T, header string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if header != "" {
		req.Header().Set("Authorization", header)
	}
	return req
}

// errorText is everything an error tells its receiver: message, metadata
// (response headers and trailers) and details.
func errorText(err error) string {
	var b strings.Builder
	fmt.Fprintln(&b, err)
	var ce *connect.Error
	if errors.As(err, &ce) {
		for k, vs := range ce.Meta() {
			fmt.Fprintln(&b, k, vs)
		}
		for _, d := range ce.Details() {
			if m, derr := d.Value(); derr == nil {
				fmt.Fprintln(&b, protojson.Format(m))
			}
			fmt.Fprintln(&b, string(d.Bytes()))
		}
	}
	return b.String()
}

// rawResponse is an HTTP answer read whole.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// raw sends one plain HTTP request over HTTP/1.1 with authorization as its
// Authorization header (none when empty) and header's name, value pairs.
func raw(t *testing.T, env *apptest.Env, method, path, contentType, body, authorization string, header ...string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, env.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := env.HTTP1.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
}
