package app_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	"github.com/envplane/envplane/gen/envplane/access/v1/accessv1connect"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/services/access"
	"github.com/envplane/envplane/services/environment"
)

// TestUnauthenticated sends every kind of bad credential to calls of both
// services: each is UNAUTHENTICATED with the reason of its kind (over REST,
// HTTP 401), echoes nothing of the credential, and changes nothing.
func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		adminAccess := env.AccessClient(p, env.AdminToken())
		acme := createOrg(t, admin, "acme")
		adminID := whoAmI(t, adminAccess).GetTokenId()

		// The expiring token comes first, so its second passes while the
		// other cases run.
		var expireTime time.Time
		var created *connect.Response[accessv1.CreateTokenResponse]
		var err error
		for attempt := 1; ; attempt++ {
			expireTime = time.Now().Add(time.Second)
			created, err = adminAccess.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{
				Name: "short-lived", OrganizationId: acme.GetId(), Role: auth.RoleAdmin, ExpireTime: timestamppb.New(expireTime),
			}))
			// On a machine slow enough that the second passed before the
			// server checked expire_time > now, try again.
			if err == nil || attempt == 3 || time.Now().Before(expireTime) {
				break
			}
		}
		if err != nil {
			t.Fatalf("CreateToken with expire_time: %v", err)
		}
		if got := created.Msg.GetToken().GetExpireTime().AsTime(); !got.Equal(expireTime) {
			t.Errorf("expire_time = %v, want %v", got, expireTime)
		}
		expiring := created.Msg.GetSecret()

		revokedTok, revoked := env.MintToken(t, &accessv1.CreateTokenRequest{Name: "revoked", OrganizationId: acme.GetId(), Role: auth.RoleAdmin})
		if _, err := adminAccess.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: revokedTok.GetId()})); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		unknown, _ := auth.NewSecret()
		tokensBefore := tokenIDs(listTokens(t, adminAccess, ""))

		// Clients without a token: each request carries its own header.
		c, a := env.ClientWithToken(p, ""), env.AccessClient(p, "")
		calls := func(header string) []call {
			return []call{
				{"WhoAmI", func(ctx context.Context) error {
					return errOf(a.WhoAmI(ctx, withAuth(&accessv1.WhoAmIRequest{}, header)))
				}},
				{"ListTokens", func(ctx context.Context) error {
					return errOf(a.ListTokens(ctx, withAuth(&accessv1.ListTokensRequest{}, header)))
				}},
				{"CreateToken", func(ctx context.Context) error {
					return errOf(a.CreateToken(ctx, withAuth(&accessv1.CreateTokenRequest{
						Name: "intruder", OrganizationId: acme.GetId(), Role: auth.RoleAdmin,
					}, header)))
				}},
				{"RevokeToken", func(ctx context.Context) error {
					return errOf(a.RevokeToken(ctx, withAuth(&accessv1.RevokeTokenRequest{Id: adminID}, header)))
				}},
				{"CreateOrganization", func(ctx context.Context) error {
					return errOf(c.CreateOrganization(ctx, withAuth(&environmentv1.CreateOrganizationRequest{Slug: "intruder"}, header)))
				}},
				{"ListOrganizations", func(ctx context.Context) error {
					return errOf(c.ListOrganizations(ctx, withAuth(&environmentv1.ListOrganizationsRequest{}, header)))
				}},
				{"GetOrganization", func(ctx context.Context) error {
					return errOf(c.GetOrganization(ctx, withAuth(&environmentv1.GetOrganizationRequest{Id: acme.GetId()}, header)))
				}},
				// Authentication comes first: an invalid request teaches an
				// anonymous caller nothing about the contract.
				{"CreateOrganization (invalid)", func(ctx context.Context) error {
					return errOf(c.CreateOrganization(ctx, withAuth(&environmentv1.CreateOrganizationRequest{Slug: "Not A Slug!"}, header)))
				}},
				{"CreateEnvironment", func(ctx context.Context) error {
					return errOf(c.CreateEnvironment(ctx, withAuth(&environmentv1.CreateEnvironmentRequest{
						OrganizationId: acme.GetId(), Slug: "intruder", Driver: "memory",
					}, header)))
				}},
			}
		}

		basic := base64.StdEncoding.EncodeToString([]byte("admin:" + env.AdminToken()))
		for _, tc := range []struct {
			name, header, credential, reason string
		}{
			{name: "no header", reason: auth.ReasonTokenMissing},
			{name: "Bearer nope", header: "Bearer nope", credential: "nope", reason: auth.ReasonTokenMalformed},
			{name: "Basic", header: "Basic " + basic, credential: basic, reason: auth.ReasonTokenMalformed},
			{name: "Bearer without a token", header: "Bearer", reason: auth.ReasonTokenMalformed},
			{name: "token without a scheme", header: env.AdminToken(), credential: env.AdminToken(), reason: auth.ReasonTokenMalformed},
			{name: "truncated token", header: "Bearer " + env.AdminToken()[:20], credential: env.AdminToken()[:20], reason: auth.ReasonTokenMalformed},
			{name: "unknown token", header: "Bearer " + unknown, credential: unknown, reason: auth.ReasonTokenUnknown},
			{name: "revoked token", header: "Bearer " + revoked, credential: revoked, reason: auth.ReasonTokenRevoked},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, cl := range calls(tc.header) {
					err := cl.do(ctx)
					if !apptest.WantError(t, err, connect.CodeUnauthenticated, tc.reason) {
						t.Errorf("%s: wrong error", cl.name)
					}
					if tc.credential != "" && strings.Contains(errorText(err), tc.credential) {
						t.Errorf("%s: the error echoes the credential: %s", cl.name, errorText(err))
					}
				}
			})
		}

		if p == apptest.REST {
			t.Run("HTTP 401 with a google.rpc.Status", func(t *testing.T) {
				for _, tc := range []struct{ method, path, body, authorization, reason string }{
					{http.MethodGet, "/api/v1/cloud/whoami", "", "", auth.ReasonTokenMissing},
					{http.MethodGet, "/api/v1/cloud/tokens", "", "Bearer nope", auth.ReasonTokenMalformed},
					{http.MethodPost, "/api/v1/cloud/organizations", `{"slug":"intruder"}`, "Bearer " + unknown, auth.ReasonTokenUnknown},
					{http.MethodDelete, "/api/v1/cloud/tokens/" + adminID, "", "Bearer " + revoked, auth.ReasonTokenRevoked},
				} {
					r := raw(t, env, tc.method, tc.path, "application/json", tc.body, tc.authorization)
					code, reason := restStatus(t, r.body)
					if r.status != http.StatusUnauthorized || code != connect.CodeUnauthenticated || reason != tc.reason {
						t.Errorf("%s %s with %q = HTTP %d, code %s, reason %q; want 401, unauthenticated, %s (body %s)",
							tc.method, tc.path, tc.authorization, r.status, code, reason, tc.reason, r.body)
					}
					if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
						t.Errorf("%s %s: WWW-Authenticate = %q, want a Bearer challenge", tc.method, tc.path, got)
					}
				}
			})
		}

		t.Run("expired token", func(t *testing.T) {
			ea := env.AccessClient(p, expiring)
			deadline := time.Now().Add(3 * time.Second)
			for {
				sent := time.Now()
				_, err := ea.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
				if err != nil {
					apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenExpired)
					break
				}
				if sent.After(expireTime) {
					t.Fatalf("the token still works at %v, after its expire_time %v", sent, expireTime)
				}
				if sent.After(deadline) {
					t.Fatalf("the token still works 3 s later")
				}
				time.Sleep(20 * time.Millisecond)
			}
			_, err := env.ClientWithToken(p, expiring).ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{OrganizationId: acme.GetId()}))
			apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenExpired)
		})

		t.Run("nothing changed", func(t *testing.T) {
			if got := orgIDs(listOrgs(t, admin)); !slices.Equal(got, []string{acme.GetId()}) {
				t.Errorf("organizations = %q, want only acme", got)
			}
			if got := listEnvs(t, admin, acme.GetId()); len(got) != 0 {
				t.Errorf("acme has environments %q, want none", envIDs(got))
			}
			if diff := cmp.Diff(tokensBefore, tokenIDs(listTokens(t, adminAccess, ""))); diff != "" {
				t.Errorf("tokens (-before +after):\n%s", diff)
			}
		})
	})
}

// restStatus decodes a REST error body: its google.rpc code and ErrorInfo reason.
func restStatus(t *testing.T, body string) (connect.Code, string) {
	t.Helper()
	var st status.Status
	if err := protojson.Unmarshal([]byte(body), &st); err != nil {
		t.Errorf("body %q is no google.rpc.Status: %v", body, err)
		return 0, ""
	}
	reason := ""
	for _, d := range st.GetDetails() {
		var info errdetails.ErrorInfo
		if d.UnmarshalTo(&info) == nil {
			reason = info.GetReason()
		}
	}
	return connect.Code(st.GetCode()), reason //nolint:gosec // google.rpc codes fit
}

// TestHealthAndReflectionNeedNoToken calls health and reflection without any
// Authorization header while the services refuse the same caller.
func TestHealthAndReflectionNeedNoToken(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, _ client) {
		ctx := t.Context()
		if p == apptest.REST {
			// Health has no REST route; a curl user calls Connect or /healthz.
			r := raw(t, env, http.MethodPost, "/grpc.health.v1.Health/Check", "application/json", "{}", "")
			if r.status != http.StatusOK || !strings.Contains(r.body, "SERVING") {
				t.Errorf("POST /grpc.health.v1.Health/Check = %d %s, want 200 SERVING", r.status, r.body)
			}
			if r := raw(t, env, http.MethodGet, "/healthz", "", "", ""); r.status != http.StatusOK {
				t.Errorf("GET /healthz = %d %s, want 200", r.status, r.body)
			}
		} else {
			httpClient, opts := env.ConnectOptions(p, "")
			health := grpchealth.NewClient(httpClient, env.URL, opts...)
			for _, service := range []string{"", accessv1connect.AccessServiceName} {
				resp, err := health.Check(ctx, &grpchealth.CheckRequest{Service: service})
				if err != nil {
					t.Fatalf("Check(%q) without a token: %v", service, err)
				}
				if resp.Status != grpchealth.StatusServing {
					t.Errorf("Check(%q) = %v, want serving", service, resp.Status)
				}
			}
			// Reflection is a bidi stream, which needs HTTP/2.
			if p == apptest.GRPC || p == apptest.ConnectProto {
				stream := grpcreflect.NewClient(httpClient, env.URL, opts...).NewStream(ctx)
				names, err := stream.ListServices()
				_, _ = stream.Close()
				if err != nil {
					t.Fatalf("reflection ListServices without a token: %v", err)
				}
				if !slices.Contains(names, accessv1connect.AccessServiceName) {
					t.Errorf("ListServices = %q, want %s among them", names, accessv1connect.AccessServiceName)
				}
			}
		}
		_, err := env.AccessClient(p, "").WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
		apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenMissing)
	})
}

// TestOrganizationIsolation: to an admin of acme, everything of beta looks
// exactly like something that does not exist, and stays untouched.
func TestOrganizationIsolation(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		w := newWorld(t, env, p, admin)
		_, acmeAdmin := w.token(t, w.acme.GetId(), auth.RoleAdmin)
		betaTok, _ := w.token(t, w.beta.GetId(), auth.RoleAdmin)
		c, a := w.as(acmeAdmin)
		missing := uuid.NewString()

		t.Run("beta's environment", func(t *testing.T) {
			missingCalls := envCalls(c, missing)
			for i, cl := range envCalls(c, w.betaDev.GetId()) {
				apptest.WantError(t, missingCalls[i].do(ctx), connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
				if !apptest.WantError(t, cl.do(ctx), connect.CodeNotFound, environment.ReasonEnvironmentNotFound) {
					t.Errorf("%s of beta's environment: wrong error", cl.name)
				}
			}
			for _, h := range []string{w.betaDev.GetHostname(), "nothing-here.localhost"} {
				_, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: h}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonHostnameNotFound)
			}
		})

		t.Run("beta itself", func(t *testing.T) {
			for _, id := range []string{w.beta.GetId(), missing} {
				_, err := c.GetOrganization(ctx, connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: id}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonOrganizationNotFound)
				_, err = c.ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{OrganizationId: id}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonOrganizationNotFound)
				_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: id, Slug: "intruder", Driver: "memory"}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonOrganizationNotFound)
				_, err = a.ListTokens(ctx, connect.NewRequest(&accessv1.ListTokensRequest{OrganizationId: id}))
				apptest.WantError(t, err, connect.CodeNotFound, access.ReasonOrganizationNotFound)
				_, err = a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{Name: "intruder", OrganizationId: id, Role: auth.RoleAdmin}))
				apptest.WantError(t, err, connect.CodeNotFound, access.ReasonOrganizationNotFound)
			}
		})

		t.Run("beta's and the platform's tokens", func(t *testing.T) {
			for _, id := range []string{betaTok.GetId(), w.bootstrapID, missing} {
				_, err := a.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: id}))
				apptest.WantError(t, err, connect.CodeNotFound, access.ReasonTokenNotFound)
			}
			// A token of acme cannot be limited to beta's environment either,
			// and that looks like naming a missing one.
			for _, id := range []string{w.betaDev.GetId(), missing} {
				_, err := a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{
					Name: "intruder", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer, EnvironmentIds: []string{id},
				}))
				apptest.WantError(t, err, connect.CodeInvalidArgument, access.ReasonEnvironmentNotInOrg)
			}
		})

		t.Run("lists show acme only", func(t *testing.T) {
			if got := orgIDs(listOrgs(t, c)); !slices.Equal(got, []string{w.acme.GetId()}) {
				t.Errorf("ListOrganizations = %q, want only acme %s", got, w.acme.GetId())
			}
			if got, want := envIDs(listEnvs(t, c, w.acme.GetId())), []string{w.dev.GetId(), w.staging.GetId()}; !slices.Equal(got, want) {
				t.Errorf("ListEnvironments(acme) = %q, want %q", got, want)
			}
			for _, tok := range listTokens(t, a, "") {
				if tok.GetOrganizationId() != w.acme.GetId() {
					t.Errorf("ListTokens shows %s of organization %q", tok.GetId(), tok.GetOrganizationId())
				}
			}
			getEnv(t, c, w.dev.GetId())
		})

		t.Run("beta is untouched", func(t *testing.T) {
			if diff := diffEnv(w.betaDev, getEnv(t, admin, w.betaDev.GetId())); diff != "" {
				t.Errorf("beta's environment changed (-before +after):\n%s", diff)
			}
			for _, tok := range listTokens(t, w.adminAccess, "") {
				if tok.GetRevokeTime() != nil {
					t.Errorf("token %s (%s) was revoked", tok.GetId(), tok.GetName())
				}
				if tok.GetName() == "intruder" {
					t.Errorf("a token named intruder was created: %v", tok)
				}
			}
			if got := envIDs(listEnvs(t, admin, w.beta.GetId())); !slices.Equal(got, []string{w.betaDev.GetId()}) {
				t.Errorf("beta's environments = %q, want only %s", got, w.betaDev.GetId())
			}
		})
	})
}

// TestRoles: developer, editor and viewer read but do not change; only an
// organization admin manages environments and tokens; only a platform admin
// makes organizations and platform tokens; any token revokes itself.
func TestRoles(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		w := newWorld(t, env, p, admin)
		acmeAdminTok, acmeAdmin := w.token(t, w.acme.GetId(), auth.RoleAdmin)
		platformToken := &accessv1.CreateTokenRequest{Name: "escalation", Role: auth.RoleAdmin}

		for _, role := range []string{auth.RoleViewer, auth.RoleEditor, auth.RoleDeveloper} {
			t.Run(role, func(t *testing.T) {
				tok, secret := w.token(t, w.acme.GetId(), role)
				c, a := w.as(secret)

				// Reading is allowed.
				getEnv(t, c, w.dev.GetId())
				if got, want := envIDs(listEnvs(t, c, w.acme.GetId())), []string{w.dev.GetId(), w.staging.GetId()}; !slices.Equal(got, want) {
					t.Errorf("ListEnvironments = %q, want %q", got, want)
				}
				if _, err := c.GetOrganization(ctx, connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: w.acme.GetId()})); err != nil {
					t.Errorf("GetOrganization: %v", err)
				}
				if got := orgIDs(listOrgs(t, c)); !slices.Equal(got, []string{w.acme.GetId()}) {
					t.Errorf("ListOrganizations = %q, want only acme", got)
				}
				if _, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: w.dev.GetHostname()})); err != nil {
					t.Errorf("ResolveHostname: %v", err)
				}
				if _, err := c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: w.dev.GetId()})); err != nil {
					t.Errorf("ActivateEnvironment: %v", err)
				}
				want := &accessv1.WhoAmIResponse{TokenId: tok.GetId(), OrganizationId: w.acme.GetId(), Role: role, ActiveEnvironmentId: w.dev.GetId()}
				if diff := cmp.Diff(want, whoAmI(t, a), protocmp.Transform()); diff != "" {
					t.Errorf("WhoAmI (-want +got):\n%s", diff)
				}

				// Changing is not.
				_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: w.acme.GetId(), Slug: "mine", Driver: "memory"}))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient)
				for _, cl := range writeCalls(c, w.staging.GetId()) {
					if !apptest.WantError(t, cl.do(ctx), connect.CodePermissionDenied, auth.ReasonRoleInsufficient) {
						t.Errorf("%s: wrong error", cl.name)
					}
				}
				_, err = a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{Name: "mine", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer}))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient)
				_, err = a.ListTokens(ctx, connect.NewRequest(&accessv1.ListTokensRequest{}))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient)
				_, err = a.ListTokens(ctx, connect.NewRequest(&accessv1.ListTokensRequest{OrganizationId: w.acme.GetId()}))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient)
				_, err = a.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: acmeAdminTok.GetId()}))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient)
				_, err = c.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "mine"}))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonPlatformAdminRequired)
				_, err = a.CreateToken(ctx, connect.NewRequest(platformToken))
				apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonPlatformAdminRequired)

				if diff := diffEnv(w.staging, getEnv(t, admin, w.staging.GetId())); diff != "" {
					t.Errorf("staging changed (-before +after):\n%s", diff)
				}
				if got := len(listEnvs(t, admin, w.acme.GetId())); got != 2 {
					t.Errorf("acme has %d environments, want 2", got)
				}
				for _, tok := range listTokens(t, w.adminAccess, w.acme.GetId()) {
					if tok.GetName() == "mine" || (tok.GetId() == acmeAdminTok.GetId() && tok.GetRevokeTime() != nil) {
						t.Errorf("token %v made or revoked by a %s", tok, role)
					}
				}

				// Any token may revoke itself.
				revoked, err := a.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.GetId()}))
				if err != nil {
					t.Fatalf("RevokeToken of itself: %v", err)
				}
				if revoked.Msg.GetToken().GetRevokeTime() == nil {
					t.Errorf("revoked token has no revoke_time: %v", revoked.Msg.GetToken())
				}
				_, err = a.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
				apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenRevoked)
			})
		}

		t.Run("organization admin", func(t *testing.T) {
			c, a := w.as(acmeAdmin)
			_, err := c.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "mine"}))
			apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonPlatformAdminRequired)
			_, err = a.CreateToken(ctx, connect.NewRequest(platformToken))
			apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonPlatformAdminRequired)

			// Tokens of its organization it mints, lists and revokes.
			minted, err := a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{Name: "ci", OrganizationId: w.acme.GetId(), Role: auth.RoleEditor}))
			if err != nil {
				t.Fatalf("CreateToken in its organization: %v", err)
			}
			mintedTok := minted.Msg.GetToken()
			if mintedTok.GetOrganizationId() != w.acme.GetId() || mintedTok.GetRole() != auth.RoleEditor || mintedTok.GetPlatformAdmin() {
				t.Errorf("minted token = %v", mintedTok)
			}
			_, ma := w.as(minted.Msg.GetSecret())
			if got := whoAmI(t, ma); got.GetTokenId() != mintedTok.GetId() || got.GetRole() != auth.RoleEditor {
				t.Errorf("the minted token's WhoAmI = %v", got)
			}
			if !slices.Contains(tokenIDs(listTokens(t, a, "")), mintedTok.GetId()) {
				t.Errorf("ListTokens lacks the minted token %s", mintedTok.GetId())
			}
			if _, err := a.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: mintedTok.GetId()})); err != nil {
				t.Errorf("RevokeToken of a token of its organization: %v", err)
			}

			// Environments of its organization it manages.
			preview := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.acme.GetId(), Slug: "preview", Driver: "memory"})
			updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: preview.GetId(), DisplayName: proto.String("Preview")})
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: preview.GetId()})); err != nil {
				t.Errorf("DeleteEnvironment: %v", err)
			}
		})
	})
}

// TestEnvironmentLimitedToken: a token limited to dev enters dev only, lists
// only dev and cannot act beyond it.
func TestEnvironmentLimitedToken(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		w := newWorld(t, env, p, admin)
		tok, secret := w.token(t, w.acme.GetId(), auth.RoleAdmin, w.dev.GetId())
		c, a := w.as(secret)

		getEnv(t, c, w.dev.GetId())
		if got := envIDs(listEnvs(t, c, w.acme.GetId())); !slices.Equal(got, []string{w.dev.GetId()}) {
			t.Errorf("ListEnvironments = %q, want only dev %s", got, w.dev.GetId())
		}
		if _, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: w.dev.GetHostname()})); err != nil {
			t.Errorf("ResolveHostname(dev): %v", err)
		}

		for _, cl := range envCalls(c, w.staging.GetId()) {
			if !apptest.WantError(t, cl.do(ctx), connect.CodePermissionDenied, auth.ReasonEnvironmentNotAllowed) {
				t.Errorf("%s of staging: wrong error", cl.name)
			}
		}
		_, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: w.staging.GetHostname()}))
		apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonEnvironmentNotAllowed)
		// Another organization's environment stays missing, not forbidden.
		for _, cl := range envCalls(c, w.betaDev.GetId()) {
			if !apptest.WantError(t, cl.do(ctx), connect.CodeNotFound, environment.ReasonEnvironmentNotFound) {
				t.Errorf("%s of beta's environment: wrong error", cl.name)
			}
		}

		_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: w.acme.GetId(), Slug: "mine", Driver: "memory"}))
		apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonTokenLimited)
		_, err = a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{Name: "wider", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer}))
		apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonTokenLimited)
		_, err = a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{
			Name: "elsewhere", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer, EnvironmentIds: []string{w.staging.GetId()},
		}))
		apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonEnvironmentNotAllowed)
		sub, err := a.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{
			Name: "dev viewer", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer, EnvironmentIds: []string{w.dev.GetId()},
		}))
		if err != nil {
			t.Fatalf("CreateToken limited to dev: %v", err)
		}
		_, subAccess := w.as(sub.Msg.GetSecret())
		if got := whoAmI(t, subAccess).GetEnvironmentIds(); !slices.Equal(got, []string{w.dev.GetId()}) {
			t.Errorf("the minted token's environment_ids = %q, want only dev", got)
		}

		if _, err := c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: w.dev.GetId()})); err != nil {
			t.Fatalf("ActivateEnvironment(dev): %v", err)
		}
		want := &accessv1.WhoAmIResponse{
			TokenId: tok.GetId(), OrganizationId: w.acme.GetId(), Role: auth.RoleAdmin,
			EnvironmentIds: []string{w.dev.GetId()}, ActiveEnvironmentId: w.dev.GetId(),
		}
		if diff := cmp.Diff(want, whoAmI(t, a), protocmp.Transform()); diff != "" {
			t.Errorf("WhoAmI (-want +got):\n%s", diff)
		}
		// Within dev, the admin role holds.
		updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: w.dev.GetId(), DisplayName: proto.String("Dev")})

		if diff := diffEnv(w.staging, getEnv(t, admin, w.staging.GetId())); diff != "" {
			t.Errorf("staging changed (-before +after):\n%s", diff)
		}
	})
}

// TestActiveEnvironment: ActivateEnvironment sets the calling token's
// session, which WhoAmI shows, and deleting the environment clears it.
func TestActiveEnvironment(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		w := newWorld(t, env, p, admin)
		_, secret := w.token(t, w.acme.GetId(), auth.RoleDeveloper)
		_, otherSecret := w.token(t, w.acme.GetId(), auth.RoleDeveloper)
		c, a := w.as(secret)
		_, other := w.as(otherSecret)

		active := func(t *testing.T, a accessClient, want string) {
			t.Helper()
			if got := whoAmI(t, a).GetActiveEnvironmentId(); got != want {
				t.Errorf("active_environment_id = %q, want %q", got, want)
			}
		}
		activate := func(t *testing.T, id string) {
			t.Helper()
			resp, err := c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: id}))
			if err != nil {
				t.Fatalf("ActivateEnvironment(%s): %v", id, err)
			}
			if resp.Msg.GetEnvironment().GetId() != id {
				t.Errorf("ActivateEnvironment(%s) answered environment %q", id, resp.Msg.GetEnvironment().GetId())
			}
		}

		active(t, a, "")
		activate(t, w.dev.GetId())
		active(t, a, w.dev.GetId())
		activate(t, w.staging.GetId())
		active(t, a, w.staging.GetId())
		// The session belongs to the token.
		active(t, other, "")
		active(t, w.adminAccess, "")

		_, err := c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: w.betaDev.GetId()}))
		apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
		active(t, a, w.staging.GetId())

		if _, err := admin.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: w.staging.GetId()})); err != nil {
			t.Fatalf("DeleteEnvironment(staging): %v", err)
		}
		active(t, a, "")
	})
}

// TestRevocation: a revoked token fails on the very next call, whoever
// revoked it, with no wait for any cache.
func TestRevocation(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		w := newWorld(t, env, p, admin)

		t.Run("by an admin", func(t *testing.T) {
			tok, secret := w.token(t, w.acme.GetId(), auth.RoleAdmin)
			c, a := w.as(secret)
			for range 3 { // warm every cache
				whoAmI(t, a)
				getEnv(t, c, w.dev.GetId())
			}
			resp, err := w.adminAccess.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.GetId()}))
			if err != nil {
				t.Fatalf("RevokeToken: %v", err)
			}
			revokeTime := resp.Msg.GetToken().GetRevokeTime()
			if revokeTime == nil {
				t.Fatalf("RevokeToken answered no revoke_time: %v", resp.Msg.GetToken())
			}
			_, err = a.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
			apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenRevoked)
			_, err = c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: w.dev.GetId()}))
			apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenRevoked)

			// Revoking again changes nothing.
			again, err := w.adminAccess.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.GetId()}))
			if err != nil {
				t.Fatalf("RevokeToken again: %v", err)
			}
			if !again.Msg.GetToken().GetRevokeTime().AsTime().Equal(revokeTime.AsTime()) {
				t.Errorf("revoke_time moved from %v to %v", revokeTime.AsTime(), again.Msg.GetToken().GetRevokeTime().AsTime())
			}
		})

		t.Run("by itself", func(t *testing.T) {
			tok, secret := w.token(t, w.acme.GetId(), auth.RoleViewer)
			c, a := w.as(secret)
			getEnv(t, c, w.dev.GetId())
			if _, err := a.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.GetId()})); err != nil {
				t.Fatalf("RevokeToken of itself: %v", err)
			}
			_, err := c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: w.dev.GetId()}))
			apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenRevoked)
		})

		t.Run("listed as revoked", func(t *testing.T) {
			for _, tok := range listTokens(t, w.adminAccess, w.acme.GetId()) {
				if tok.GetRevokeTime() == nil {
					t.Errorf("token %s (%s) has no revoke_time", tok.GetId(), tok.GetName())
				}
			}
		})
	})
}

// TestRevocationDuringUse revokes a token while calls with it are in flight,
// some of them reading it afresh because an activation just dropped it from
// the cache: once RevokeToken has answered, the next call must fail. (A
// lookup that began before the revocation must not cache its answer after
// it; the window is narrow, so a run catches a regression only sometimes.)
func TestRevocationDuringUse(t *testing.T) {
	t.Parallel()
	p := apptest.ConnectProto
	env := apptest.Start(t)
	w := newWorld(t, env, p, env.Client(p))
	ctx := t.Context()
	for i := range 40 {
		tok, secret := w.token(t, w.acme.GetId(), auth.RoleAdmin)
		c, a := w.as(secret)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: w.dev.GetId()}))
				}
			}
		})
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						_, _ = a.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
					}
				}
			})
		}
		_, err := w.adminAccess.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.GetId()}))
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		_, err = a.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
		if !apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenRevoked) {
			t.Fatalf("round %d: the revoked token still works", i)
		}
	}
}

// TestTokenSecrets: CreateToken shows a secret once; no listing, answer,
// error or log line ever shows one again.
func TestTokenSecrets(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, admin client) {
		ctx := t.Context()
		w := newWorld(t, env, p, admin)
		secrets := []string{env.AdminToken()}

		req := &accessv1.CreateTokenRequest{Name: "ci", OrganizationId: w.acme.GetId(), Role: auth.RoleDeveloper, RequestId: "ci-token-1"}
		first, err := w.adminAccess.CreateToken(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		secret, tok := first.Msg.GetSecret(), first.Msg.GetToken()
		if !strings.HasPrefix(secret, auth.SecretPrefix) || !strings.HasPrefix(secret, tok.GetSecretPrefix()) ||
			len(tok.GetSecretPrefix()) <= len(auth.SecretPrefix) || len(tok.GetSecretPrefix()) >= len(secret)/2 {
			t.Errorf("secret %.8s… with secret_prefix %q: want an %s secret that starts with a short prefix", secret, tok.GetSecretPrefix(), auth.SecretPrefix)
		}
		secrets = append(secrets, secret)

		// A retry answers the same token without its secret: it is shown once.
		retry, err := w.adminAccess.CreateToken(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("CreateToken retry: %v", err)
		}
		if retry.Msg.GetToken().GetId() != tok.GetId() || retry.Msg.GetSecret() != "" {
			t.Errorf("retried CreateToken = token %s with a secret of %d bytes; want token %s and no secret",
				retry.Msg.GetToken().GetId(), len(retry.Msg.GetSecret()), tok.GetId())
		}

		_, acmeAdmin := w.token(t, w.acme.GetId(), auth.RoleAdmin)
		secrets = append(secrets, acmeAdmin)
		_, acmeAccess := w.as(acmeAdmin)
		for _, r := range []*accessv1.CreateTokenRequest{
			{Name: "viewer", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer},
			{Name: "dev only", OrganizationId: w.acme.GetId(), Role: auth.RoleEditor, EnvironmentIds: []string{w.dev.GetId()}},
			{Name: "expiring", OrganizationId: w.acme.GetId(), Role: auth.RoleViewer, ExpireTime: timestamppb.New(time.Now().Add(time.Hour))},
		} {
			resp, err := acmeAccess.CreateToken(ctx, connect.NewRequest(r))
			if err != nil {
				t.Fatalf("CreateToken(%s): %v", r.GetName(), err)
			}
			secrets = append(secrets, resp.Msg.GetSecret())
		}

		// Use every token once, so nothing is only unused.
		for _, s := range secrets {
			whoAmI(t, env.AccessClient(p, s))
		}
		revokedResp, err := acmeAccess.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.GetId()}))
		if err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}

		// Bad credentials: no answer echoes them.
		unknown, _ := auth.NewSecret()
		bad := []string{unknown, secret /* revoked */, unknown[:30] /* malformed */}
		for _, s := range bad {
			for _, cl := range []call{
				{"WhoAmI", func(ctx context.Context) error {
					return errOf(env.AccessClient(p, s).WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{})))
				}},
				{"GetEnvironment", func(ctx context.Context) error {
					return errOf(env.ClientWithToken(p, s).GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: w.dev.GetId()})))
				}},
			} {
				err := cl.do(ctx)
				apptest.WantError(t, err, connect.CodeUnauthenticated, "")
				if text := errorText(err); strings.Contains(text, s) {
					t.Errorf("%s with a bad token: the error echoes it: %s", cl.name, text)
				}
			}
			// The raw answers too, REST and Connect alike.
			for _, r := range []rawResponse{
				raw(t, env, http.MethodGet, "/api/v1/cloud/whoami", "", "", "Bearer "+s),
				raw(t, env, http.MethodPost, accessv1connect.AccessServiceWhoAmIProcedure, "application/json", "{}", "Bearer "+s),
			} {
				if r.status != http.StatusUnauthorized || strings.Contains(r.body, s) || strings.Contains(headerText(r.header), s) {
					t.Errorf("answer to a bad token: HTTP %d, body %s, headers %v; want 401 without the token", r.status, r.body, r.header)
				}
			}
		}
		secrets = append(secrets, bad...)

		// Every answer that describes tokens, serialized.
		var answers []proto.Message
		for _, lister := range []struct {
			a   accessClient
			org string
		}{{w.adminAccess, ""}, {w.adminAccess, w.acme.GetId()}, {acmeAccess, ""}} {
			resp, err := lister.a.ListTokens(ctx, connect.NewRequest(&accessv1.ListTokensRequest{OrganizationId: lister.org}))
			if err != nil {
				t.Fatalf("ListTokens(%q): %v", lister.org, err)
			}
			if len(resp.Msg.GetTokens()) < 5 {
				t.Errorf("ListTokens(%q) lists %d tokens, want at least 5", lister.org, len(resp.Msg.GetTokens()))
			}
			answers = append(answers, resp.Msg)
		}
		answers = append(answers, retry.Msg, revokedResp.Msg, whoAmI(t, acmeAccess))
		for _, m := range answers {
			text := protojson.Format(m)
			bin, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range secrets {
				if hidden := s[len(tok.GetSecretPrefix()):]; strings.Contains(text, hidden) || strings.Contains(string(bin), hidden) {
					t.Errorf("%s holds a secret:\n%s", m.ProtoReflect().Descriptor().Name(), text)
				}
			}
		}

		logs := env.Logs.String()
		if len(env.Logs.Find(map[string]any{"msg": "token created"})) < 5 {
			t.Errorf("fewer than 5 'token created' lines; is the log captured at all?")
		}
		for _, s := range secrets {
			if strings.Contains(logs, s[len(tok.GetSecretPrefix()):]) {
				t.Errorf("the server log holds a secret (%.8s…)", s)
			}
		}
	})
}

func headerText(h http.Header) string {
	var b strings.Builder
	for k, vs := range h {
		b.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
	}
	return b.String()
}
