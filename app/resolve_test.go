package app_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/services/metadata"
)

// resolveWorld is the fixture of the resolution tests, built over the
// protocol under test by the platform admin:
//
//   - acme: dev (the default), staging, qa, uat, demo, paused (suspended) and
//     moving (hostname old-route.acme.example);
//   - solo: one environment, solo, which is not the default;
//   - unit: one environment, unit, which is the default;
//   - twin: twin-a and twin-b, neither the default;
//   - beta: beta (its default).
//
// Every environment holds one object, its marker obj_<name>, so the answer
// of ListObjects tells which environment a call reached.
type resolveWorld struct {
	env    *apptest.Env
	p      apptest.Protocol
	admin  client
	envs   map[string]*environmentv1.Environment
	tokens map[string]string // name → secret
}

func envMarker(envName string) string { return "obj_" + strings.ReplaceAll(envName, "-", "_") }

func newResolveWorld(t *testing.T, env *apptest.Env, p apptest.Protocol) *resolveWorld {
	t.Helper()
	w := &resolveWorld{env: env, p: p, admin: env.Client(p), envs: map[string]*environmentv1.Environment{}, tokens: map[string]string{}}
	mk := func(org *environmentv1.Organization, name, slug string, isDefault *bool, host *string) {
		w.envs[name] = createEnv(t, w.admin, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: slug, Driver: "memory", IsDefault: isDefault, Hostname: host,
		})
	}
	acme := createOrg(t, w.admin, "acme")
	for _, slug := range []string{"dev", "staging", "qa", "uat", "demo", "paused"} {
		mk(acme, slug, slug, nil, nil)
	}
	mk(acme, "moving", "moving", nil, proto.String("old-route.acme.example"))
	mk(createOrg(t, w.admin, "solo"), "solo", "only", proto.Bool(false), nil)
	mk(createOrg(t, w.admin, "unit"), "unit", "main", nil, nil)
	twin := createOrg(t, w.admin, "twin")
	mk(twin, "twin-a", "a", proto.Bool(false), nil)
	mk(twin, "twin-b", "b", proto.Bool(false), nil)
	beta := createOrg(t, w.admin, "beta")
	mk(beta, "beta", "dev", nil, nil)
	if !w.envs["dev"].GetIsDefault() || w.envs["staging"].GetIsDefault() || w.envs["solo"].GetIsDefault() || !w.envs["unit"].GetIsDefault() {
		t.Fatalf("defaults are not as the fixture needs: dev %v, staging %v, solo %v, unit %v",
			w.envs["dev"].GetIsDefault(), w.envs["staging"].GetIsDefault(), w.envs["solo"].GetIsDefault(), w.envs["unit"].GetIsDefault())
	}

	meta := env.MetadataClient(p, env.AdminToken())
	for name, e := range w.envs {
		metaPut(t, meta, &metadatav1.PutObjectRequest{
			EnvironmentId: e.GetId(), Name: envMarker(name), Object: metaObject(metaText("note")),
		})
	}
	updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.id("paused"), Status: proto.String("suspended")})

	mint := func(name string, org *environmentv1.Organization, role string, envIDs ...string) string {
		_, secret := env.MintToken(t, &accessv1.CreateTokenRequest{Name: name, OrganizationId: org.GetId(), Role: role, EnvironmentIds: envIDs})
		w.tokens[name] = secret
		return secret
	}
	activate := func(secret, envName string) {
		_, err := env.ClientWithToken(p, secret).ActivateEnvironment(t.Context(),
			connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: w.id(envName)}))
		if err != nil {
			t.Fatalf("ActivateEnvironment(%s): %v", envName, err)
		}
	}
	w.tokens["admin"] = env.AdminToken()
	mint("member", acme, auth.RoleDeveloper)
	activate(mint("sess", acme, auth.RoleDeveloper), "demo")
	mint("limited", acme, auth.RoleDeveloper, w.id("staging"))
	mint("solo", w.org("solo"), auth.RoleDeveloper)
	activate(mint("solo-sess", w.org("solo"), auth.RoleDeveloper), "solo")
	mint("unit", w.org("unit"), auth.RoleDeveloper)
	mint("twin", twin, auth.RoleDeveloper)
	mint("beta", beta, auth.RoleDeveloper)
	return w
}

func (w *resolveWorld) id(name string) string {
	e, ok := w.envs[name]
	if !ok {
		panic("no environment " + name)
	}
	return e.GetId()
}

func (w *resolveWorld) host(name string) string { return w.envs[name].GetHostname() }

func (w *resolveWorld) org(envName string) *environmentv1.Organization {
	return &environmentv1.Organization{Id: w.envs[envName].GetOrganizationId()}
}

// route is one call's ways of naming its environment.
type resolveRoute struct {
	token  string // a key of resolveWorld.tokens
	envID  string // environment_id field, or the /api/v1/environments/{id}/… path
	host   string // Host header / :authority ("" = the server's address)
	header string // X-Environment-Id
}

func (r resolveRoute) String() string {
	var parts []string
	parts = append(parts, "token="+r.token)
	if r.envID != "" {
		parts = append(parts, "path="+r.envID)
	}
	if r.host != "" {
		parts = append(parts, "host="+r.host)
	}
	if r.header != "" {
		parts = append(parts, "header="+r.header)
	}
	return strings.Join(parts, " ")
}

// resolveCase is one routing expectation: the environment (by name) and the
// rule that found it, or an error.
type resolveCase struct {
	name   string
	route  resolveRoute
	want   string // environment name
	source string // resolved_by of the call's log line
	code   connect.Code
	reason string
}

// routedRequest builds a request carrying r's hints and a fresh request id.
func routedRequest[T any](r resolveRoute, msg *T) (*connect.Request[T], string) {
	req := connect.NewRequest(msg)
	if r.host != "" {
		req.Header().Set("Host", r.host)
	}
	if r.header != "" {
		req.Header().Set(apptest.HeaderEnvironmentID, r.header)
	}
	id := apptest.RequestID("resolve")
	req.Header().Set(apptest.HeaderRequestID, id)
	return req, id
}

// check probes tc's route with ListObjects and GetObject.
func (w *resolveWorld) check(t *testing.T, tc resolveCase) {
	t.Helper()
	secret, ok := w.tokens[tc.route.token]
	if !ok {
		t.Fatalf("no token %q", tc.route.token)
	}
	c := w.env.MetadataClient(w.p, secret)
	ctx := t.Context()

	listReq, listID := routedRequest(tc.route, &metadatav1.ListObjectsRequest{EnvironmentId: tc.route.envID})
	list, listErr := c.ListObjects(ctx, listReq)
	probe := envMarker(tc.want)
	if tc.want == "" {
		probe = envMarker("dev")
	}
	getReq, getID := routedRequest(tc.route, &metadatav1.GetObjectRequest{EnvironmentId: tc.route.envID, Name: probe})
	get, getErr := c.GetObject(ctx, getReq)

	if tc.want == "" {
		for call, err := range map[string]error{"ListObjects": listErr, "GetObject": getErr} {
			if !apptest.WantError(t, err, tc.code, tc.reason) {
				t.Logf("%s over %s", call, tc.route)
			}
			// A call that resolved nothing echoes no environment.
			if ce := new(connect.Error); errors.As(err, &ce) {
				if h := ce.Meta().Get(apptest.HeaderEnvironmentID); h != "" {
					t.Errorf("%s over %s: error echoes X-Environment-Id %q", call, tc.route, h)
				}
			}
		}
		return
	}
	wantID := w.id(tc.want)
	if listErr != nil {
		t.Fatalf("ListObjects over %s: %v", tc.route, listErr)
	}
	var names []string
	for _, o := range list.Msg.GetObjects() {
		names = append(names, o.GetName())
	}
	if diff := cmp.Diff([]string{probe}, names); diff != "" {
		t.Errorf("ListObjects over %s reached the wrong environment, want %s (-want +got):\n%s", tc.route, tc.want, diff)
	}
	if h := list.Header().Get(apptest.HeaderEnvironmentID); h != wantID {
		t.Errorf("ListObjects over %s: X-Environment-Id = %q, want %q (%s)", tc.route, h, wantID, tc.want)
	}
	if getErr != nil {
		t.Errorf("GetObject(%s) over %s: %v", probe, tc.route, getErr)
	} else {
		if get.Msg.GetObject().GetName() != probe {
			t.Errorf("GetObject(%s) = %v", probe, get.Msg.GetObject())
		}
		if h := get.Header().Get(apptest.HeaderEnvironmentID); h != wantID {
			t.Errorf("GetObject over %s: X-Environment-Id = %q, want %q (%s)", tc.route, h, wantID, tc.want)
		}
	}
	for _, id := range []string{listID, getID} {
		rec := w.env.RPCLog(id)
		if rec == nil {
			t.Errorf("no rpc log line for request %s", id)
			continue
		}
		if rec["resolved_by"] != tc.source || rec["environment_id"] != wantID {
			t.Errorf("call over %s was resolved by %v to %v, want %s to %s", tc.route, rec["resolved_by"], rec["environment_id"], tc.source, tc.want)
		}
	}
}

func TestResolution(t *testing.T) {
	t.Parallel()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			env := apptest.Start(t)
			w := newResolveWorld(t, env, p)
			_, port, err := net.SplitHostPort(env.Addr)
			if err != nil {
				t.Fatal(err)
			}
			unknown := uuid.NewString()
			notFound := func(name string, r resolveRoute) resolveCase {
				return resolveCase{name: name, route: r, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound}
			}
			notResolved := func(name string, r resolveRoute) resolveCase {
				return resolveCase{name: name, route: r, code: connect.CodeFailedPrecondition, reason: resolve.ReasonEnvironmentNotResolved}
			}
			suspended := func(name string, r resolveRoute) resolveCase {
				return resolveCase{name: name, route: r, code: connect.CodeFailedPrecondition, reason: resolve.ReasonEnvironmentSuspended}
			}
			conflict := func(name string, r resolveRoute) resolveCase {
				return resolveCase{name: name, route: r, code: connect.CodeInvalidArgument, reason: resolve.ReasonEnvironmentHintsConflict}
			}
			denied := func(name string, r resolveRoute) resolveCase {
				return resolveCase{name: name, route: r, code: connect.CodePermissionDenied, reason: auth.ReasonEnvironmentNotAllowed}
			}

			cases := []resolveCase{
				// Each source alone. The platform admin has no organization,
				// so nothing but the hint can name an environment for it.
				{name: "path alone", route: resolveRoute{token: "admin", envID: w.id("staging")}, want: "staging", source: "request"},
				{name: "host alone", route: resolveRoute{token: "admin", host: w.host("qa")}, want: "qa", source: "host"},
				{name: "header alone", route: resolveRoute{token: "admin", header: w.id("uat")}, want: "uat", source: "header"},
				{name: "session alone", route: resolveRoute{token: "sess"}, want: "demo", source: "session"},
				{name: "organization default", route: resolveRoute{token: "member"}, want: "dev", source: "default"},
				{name: "organization's only environment", route: resolveRoute{token: "solo"}, want: "solo", source: "only"},
				{name: "another organization's default", route: resolveRoute{token: "beta"}, want: "beta", source: "default"},

				// Explicit hints (path, Host, header) must agree: two naming
				// different environments are an error, never a preference.
				conflict("path and host disagree", resolveRoute{token: "admin", envID: w.id("staging"), host: w.host("qa")}),
				conflict("path and header disagree", resolveRoute{token: "admin", envID: w.id("staging"), header: w.id("uat")}),
				conflict("host and header disagree", resolveRoute{token: "admin", host: w.host("qa"), header: w.id("uat")}),
				conflict("host and path disagree for an organization token", resolveRoute{token: "member", envID: w.id("staging"), host: w.host("qa")}),
				conflict("every explicit source at once", resolveRoute{token: "sess", envID: w.id("staging"), host: w.host("qa"), header: w.id("uat")}),
				{name: "path and host agree", route: resolveRoute{token: "admin", envID: w.id("qa"), host: w.host("qa")}, want: "qa", source: "request"},
				{name: "path and header agree", route: resolveRoute{token: "admin", envID: w.id("uat"), header: w.id("uat")}, want: "uat", source: "request"},
				{name: "host and header agree", route: resolveRoute{token: "admin", host: w.host("qa"), header: w.id("qa")}, want: "qa", source: "host"},
				{name: "path, host and header agree", route: resolveRoute{token: "sess", envID: w.id("qa"), host: w.host("qa"), header: w.id("qa")}, want: "qa", source: "request"},
				// Explicit hints over the implicit ones.
				{name: "path over session", route: resolveRoute{token: "sess", envID: w.id("staging")}, want: "staging", source: "request"},
				{name: "path over default", route: resolveRoute{token: "member", envID: w.id("staging")}, want: "staging", source: "request"},
				{name: "path over only", route: resolveRoute{token: "solo", envID: w.id("solo")}, want: "solo", source: "request"},
				{name: "host over session", route: resolveRoute{token: "sess", host: w.host("qa")}, want: "qa", source: "host"},
				{name: "host over default", route: resolveRoute{token: "member", host: w.host("qa")}, want: "qa", source: "host"},
				{name: "host over only", route: resolveRoute{token: "solo", host: w.host("solo")}, want: "solo", source: "host"},
				{name: "header over session", route: resolveRoute{token: "sess", header: w.id("uat")}, want: "uat", source: "header"},
				{name: "header over default", route: resolveRoute{token: "member", header: w.id("uat")}, want: "uat", source: "header"},
				{name: "header over only", route: resolveRoute{token: "solo", header: w.id("solo")}, want: "solo", source: "header"},
				{name: "session over default", route: resolveRoute{token: "sess"}, want: "demo", source: "session"},
				{name: "session over only", route: resolveRoute{token: "solo-sess"}, want: "solo", source: "session"},
				{name: "default over only", route: resolveRoute{token: "unit"}, want: "unit", source: "default"},

				// An explicit id naming no environment is an error, never a
				// fall-through to the next rule.
				notFound("unknown path id despite a default", resolveRoute{token: "member", envID: unknown}),
				notFound("unknown path id despite host, header and session", resolveRoute{token: "sess", envID: unknown, host: w.host("qa"), header: w.id("uat")}),
				notFound("unknown header id despite a default", resolveRoute{token: "member", header: unknown}),
				notFound("unknown header id despite a session", resolveRoute{token: "sess", header: unknown}),
				notFound("unknown header id for the platform admin", resolveRoute{token: "admin", header: unknown}),
				notFound("header that is no id", resolveRoute{token: "member", header: "not-an-id"}),
				notFound("header far longer than an id", resolveRoute{token: "member", header: strings.Repeat("0123456789abcdef", 256)}),
				notFound("header naming an environment in another spelling", resolveRoute{token: "member", header: "urn:uuid:" + w.id("uat")}),
				// Every explicit hint is read: an unknown header beside a Host fails.
				notFound("host with an unknown header id", resolveRoute{token: "admin", host: w.host("qa"), header: unknown}),
				notFound("path with an unknown header id", resolveRoute{token: "admin", envID: w.id("qa"), header: unknown}),

				// Suspended: refused whichever way it is named.
				suspended("suspended by path", resolveRoute{token: "admin", envID: w.id("paused")}),
				suspended("suspended by host", resolveRoute{token: "member", host: w.host("paused")}),
				suspended("suspended by header", resolveRoute{token: "member", header: w.id("paused")}),

				// The Host in any spelling a client may send.
				{name: "host upper case", route: resolveRoute{token: "admin", host: strings.ToUpper(w.host("qa"))}, want: "qa", source: "host"},
				{name: "host with port", route: resolveRoute{token: "admin", host: w.host("qa") + ":8080"}, want: "qa", source: "host"},
				{name: "host with trailing dot", route: resolveRoute{token: "admin", host: w.host("qa") + "."}, want: "qa", source: "host"},
				{name: "host mixed case, trailing dot and port", route: resolveRoute{token: "admin", host: "Acme-QA.LocalHost.:" + port}, want: "qa", source: "host"},
				{name: "custom hostname upper case with port", route: resolveRoute{token: "admin", host: "OLD-ROUTE.acme.EXAMPLE:443"}, want: "moving", source: "host"},

				// Another organization's environment looks missing, however named.
				notFound("other organization by path", resolveRoute{token: "beta", envID: w.id("staging")}),
				notFound("other organization by header", resolveRoute{token: "beta", header: w.id("staging")}),
				notFound("other organization by host", resolveRoute{token: "beta", host: w.host("qa")}),
				notFound("other organization by host, header of its own", resolveRoute{token: "beta", host: w.host("qa"), header: w.id("beta")}),
				notFound("organization token naming the other way", resolveRoute{token: "member", header: w.id("beta")}),

				// A token limited to staging enters staging only.
				{name: "limited token in its environment", route: resolveRoute{token: "limited", envID: w.id("staging")}, want: "staging", source: "request"},
				{name: "limited token by header in its environment", route: resolveRoute{token: "limited", header: w.id("staging")}, want: "staging", source: "header"},
				denied("limited token naming another by path", resolveRoute{token: "limited", envID: w.id("uat")}),
				denied("limited token naming another by header", resolveRoute{token: "limited", header: w.id("uat")}),
				denied("limited token naming another by host", resolveRoute{token: "limited", host: w.host("qa")}),

				// Nothing to go by.
				notResolved("platform admin without hints", resolveRoute{token: "admin"}),
				notResolved("two environments and no default", resolveRoute{token: "twin"}),
				notResolved("two environments, no default, unrouted host", resolveRoute{token: "twin", host: "localhost"}),
			}
			// A Host that matches no hostname is no hint at all.
			for _, h := range []string{"localhost", "localhost:8080", "LOCALHOST.", "127.0.0.1", env.Addr, "[::1]:" + port, "nobody.example", "acme-qa.localhost.example"} {
				cases = append(cases,
					resolveCase{name: "unrouted host " + h + " falls to the default", route: resolveRoute{token: "member", host: h}, want: "dev", source: "default"},
					resolveCase{name: "unrouted host " + h + " then header", route: resolveRoute{token: "admin", host: h, header: w.id("uat")}, want: "uat", source: "header"},
					notResolved("unrouted host "+h+" alone", resolveRoute{token: "admin", host: h}),
				)
			}
			// A Host under the root domain is the platform's: one that matches
			// no environment names a missing one, whatever else the call says.
			for _, h := range []string{"api.localhost", "acme-gone.localhost", "Nobody.LocalHost.:" + port} {
				cases = append(cases,
					notFound("unknown platform host "+h+" despite a default", resolveRoute{token: "member", host: h}),
					notFound("unknown platform host "+h+" despite a header", resolveRoute{token: "admin", host: h, header: w.id("uat")}),
				)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { w.check(t, tc) })
			}

			t.Run("hostname moved", func(t *testing.T) {
				oldHost, newHost := "old-route.acme.example", "new-route.acme.example"
				w.check(t, resolveCase{name: "before", route: resolveRoute{token: "admin", host: oldHost}, want: "moving", source: "host"})
				// Looked up (and remembered as routing nowhere) before it is taken.
				w.check(t, notResolved("new name before", resolveRoute{token: "admin", host: newHost}))

				moved := updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.id("moving"), Hostname: proto.String(newHost)})
				if moved.GetHostname() != newHost {
					t.Fatalf("hostname after update = %q", moved.GetHostname())
				}
				w.check(t, resolveCase{name: "new name", route: resolveRoute{token: "admin", host: newHost}, want: "moving", source: "host"})
				w.check(t, notResolved("old name", resolveRoute{token: "admin", host: oldHost}))
				w.check(t, resolveCase{name: "old name falls to the default", route: resolveRoute{token: "member", host: oldHost}, want: "dev", source: "default"})

				// The freed name, given to another environment, routes there at once.
				updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.id("uat"), Hostname: proto.String(strings.ToUpper(oldHost) + ".")})
				w.check(t, resolveCase{name: "old name taken by uat", route: resolveRoute{token: "admin", host: oldHost}, want: "uat", source: "host"})
				w.check(t, notFound("uat's generated name, given up", resolveRoute{token: "admin", host: "acme-uat.localhost"}))
				w.check(t, resolveCase{name: "new name still", route: resolveRoute{token: "admin", host: newHost}, want: "moving", source: "host"})
			})

			t.Run("default moved", func(t *testing.T) {
				w.check(t, resolveCase{name: "before", route: resolveRoute{token: "member"}, want: "dev", source: "default"})
				updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.id("qa"), IsDefault: proto.Bool(true)})
				w.check(t, resolveCase{name: "after", route: resolveRoute{token: "member"}, want: "qa", source: "default"})
				updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.id("qa"), IsDefault: proto.Bool(false)})
				w.check(t, resolveCase{name: "no default left: two or more environments resolve nothing",
					route: resolveRoute{token: "member"}, code: connect.CodeFailedPrecondition, reason: resolve.ReasonEnvironmentNotResolved})
			})

			t.Run("only environment no more, then again", func(t *testing.T) {
				w.check(t, resolveCase{name: "before", route: resolveRoute{token: "solo"}, want: "solo", source: "only"})
				second := createEnv(t, w.admin, &environmentv1.CreateEnvironmentRequest{
					OrganizationId: w.envs["solo"].GetOrganizationId(), Slug: "second", Driver: "memory", IsDefault: proto.Bool(false),
				})
				w.check(t, notResolved("two environments", resolveRoute{token: "solo"}))
				if _, err := w.admin.DeleteEnvironment(t.Context(), connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: second.GetId()})); err != nil {
					t.Fatalf("DeleteEnvironment: %v", err)
				}
				w.check(t, resolveCase{name: "after", route: resolveRoute{token: "solo"}, want: "solo", source: "only"})
			})

			t.Run("session moved", func(t *testing.T) {
				_, err := env.ClientWithToken(p, w.tokens["sess"]).ActivateEnvironment(t.Context(),
					connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: w.id("uat")}))
				if err != nil {
					t.Fatalf("ActivateEnvironment: %v", err)
				}
				w.check(t, resolveCase{name: "after", route: resolveRoute{token: "sess"}, want: "uat", source: "session"})
			})
		})
	}
}

// TestResolutionHostReachesServer checks the harness itself: a Host set on
// a call, or fixed for a client with WithHost, is the Host the server
// resolves by, over every protocol.
func TestResolutionHostReachesServer(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "acme")
	dev := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "memory"})
	metaPut(t, env.MetadataClient(apptest.ConnectProto, env.AdminToken()), &metadatav1.PutObjectRequest{
		EnvironmentId: dev.GetId(), Name: "probe", Object: metaObject(metaText("note")),
	})
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			for _, c := range []struct {
				name   string
				client metaClient
				host   string // per call
			}{
				{name: "per call", client: env.MetadataClient(p, env.AdminToken()), host: "ACME-dev.localhost"},
				{name: "per client", client: env.MetadataClient(p, env.AdminToken(), apptest.WithHost("acme-dev.localhost:1234"))},
				{name: "per call overrides per client", client: env.MetadataClient(p, env.AdminToken(), apptest.WithHost("localhost")), host: "acme-dev.localhost."},
			} {
				req := connect.NewRequest(&metadatav1.GetObjectRequest{Name: "probe"})
				if c.host != "" {
					req.Header().Set("Host", c.host)
				}
				id := apptest.RequestID("host")
				req.Header().Set(apptest.HeaderRequestID, id)
				resp, err := c.client.GetObject(t.Context(), req)
				if err != nil {
					t.Errorf("%s: GetObject: %v", c.name, err)
					continue
				}
				if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != dev.GetId() {
					t.Errorf("%s: X-Environment-Id = %q, want %q", c.name, h, dev.GetId())
				}
				if rec := env.RPCLog(id); rec["resolved_by"] != "host" {
					t.Errorf("%s: resolved_by = %v, want host", c.name, rec["resolved_by"])
				}
			}
			// A fixed X-Environment-Id header works the same way.
			c := env.MetadataClient(p, env.AdminToken(), apptest.WithHeader(apptest.HeaderEnvironmentID, dev.GetId()))
			if names := metaNames(t, c, ""); !slices.Equal(names, []string{"probe"}) {
				t.Errorf("ListObjects with a fixed X-Environment-Id = %q", names)
			}
		})
	}
	// The object was never defined elsewhere: an error after resolution
	// still echoes the environment.
	_, err := env.MetadataClient(apptest.REST, env.AdminToken(), apptest.WithHost("acme-dev.localhost")).
		GetObject(t.Context(), connect.NewRequest(&metadatav1.GetObjectRequest{Name: "nothing"}))
	apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)
	if ce := new(connect.Error); errors.As(err, &ce) && ce.Meta().Get(apptest.HeaderEnvironmentID) != dev.GetId() {
		t.Errorf("error X-Environment-Id = %q, want %q", ce.Meta().Get(apptest.HeaderEnvironmentID), dev.GetId())
	}
}

// TestResolutionUnderLoad checks "the very next call" while other calls
// keep the resolver's caches busy: rounds of back-to-back control-plane
// writes (status toggled, hostname moved back and forth) under concurrent
// reads; once the last write returned and the reads stopped, the next call
// must see the last write. A read that started before a write and cached
// its answer after the write's invalidation used to keep the old row for
// the cache's TTL.
func TestResolutionUnderLoad(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "acme")
	names := [2]string{"blue.acme.example", "green.acme.example"}
	e := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "dev", Driver: "memory", Hostname: proto.String(names[0]),
	})
	id := e.GetId()
	c := env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "thing", Object: metaObject(metaText("x"))})
	byPath := func() error {
		_, err := c.ListObjects(context.Background(), connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: id}))
		return err
	}
	byHost := func(h string) (string, error) {
		req := connect.NewRequest(&metadatav1.ListObjectsRequest{})
		req.Header().Set("Host", h)
		resp, err := c.ListObjects(context.Background(), req)
		if err != nil {
			return "", err
		}
		return resp.Header().Get(apptest.HeaderEnvironmentID), nil
	}

	const rounds, writes, readers = 25, 6, 4
	for round := range rounds {
		var stop atomic.Bool
		var wg sync.WaitGroup
		for i := range readers {
			wg.Go(func() {
				for n := 0; !stop.Load(); n++ {
					switch (i + n) % 3 {
					case 0:
						_ = byPath()
					default:
						_, _ = byHost(names[(i+n)%2])
					}
				}
			})
		}
		for w := range writes {
			status := "suspended"
			if w%2 == 1 {
				status = "active"
			}
			updateEnv(t, admin, &environmentv1.UpdateEnvironmentRequest{
				Id: id, Status: proto.String(status), Hostname: proto.String(names[(round+w)%2]),
			})
		}
		stop.Store(true)
		wg.Wait()
		// The last write: active, named names[(round+writes-1)%2].
		current, old := names[(round+writes-1)%2], names[(round+writes)%2]
		if err := byPath(); err != nil {
			t.Fatalf("round %d: after reactivation: %v", round, err)
		}
		if got, err := byHost(current); err != nil || got != id {
			t.Fatalf("round %d: Host %s: %q, %v; want %s", round, current, got, err, id)
		}
		if _, err := byHost(old); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("round %d: Host %s, which routes nowhere now: %v; want ENVIRONMENT_NOT_RESOLVED", round, old, err)
		}
	}
}
