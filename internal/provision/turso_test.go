package provision

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/driver/driverturso"
	"github.com/envplane/envplane/internal/schema"
	"github.com/envplane/envplane/internal/tursotest"
)

// The fake's organization and API token: distinctive, so the tests can
// tell they appear in no public message.
const (
	tursoTestOrg   = "acme-org-7"
	tursoTestGroup = "eu-group"
	tursoTestToken = "tok-SECRET-4b1d"
)

// tursoFakeConfig is the fake Platform API of the test organization.
var tursoFakeConfig = tursotest.FakeConfig{Org: tursoTestOrg, Group: tursoTestGroup, Token: tursoTestToken}

// tursoFake is the fake Platform API with what the tests ask of it besides.
type tursoFake struct {
	*tursotest.Fake
	taken int // requests take returned
}

// newTursoFake starts a fake whose databases are only records, with
// Turso's hostnames: the provisioner never connects to them.
func newTursoFake(t *testing.T) *tursoFake {
	t.Helper()
	return &tursoFake{Fake: tursotest.NewFake(t, tursoFakeConfig)}
}

// take returns the requests received since the last take.
func (f *tursoFake) take() []tursotest.FakeRequest {
	reqs := f.Requests()
	out := reqs[f.taken:]
	f.taken = len(reqs)
	return out
}

// provisioner returns a Turso provisioner of the fake's organization,
// with cfg's non-zero fields overriding.
func (f *tursoFake) provisioner(t *testing.T, cfg TursoConfig) *Turso {
	t.Helper()
	if cfg.Organization == "" {
		cfg.Organization = tursoTestOrg
	}
	if cfg.Group == "" {
		cfg.Group = tursoTestGroup
	}
	if cfg.APIToken == "" {
		cfg.APIToken = tursoTestToken
	}
	if cfg.APIURL == "" {
		cfg.APIURL = f.URL
	}
	p, err := NewTurso(cfg)
	if err != nil {
		t.Fatalf("NewTurso: %v", err)
	}
	return p
}

func tursoTestEnv(t *testing.T) (controlplane.Environment, string) {
	t.Helper()
	env := controlplane.Environment{ID: uuid.Must(uuid.NewV7()).String(), Driver: DriverTurso}
	name, err := TursoName(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	return env, name
}

// assertTursoPublic checks err is a *Error with the public message want
// that names neither the token, the organization, the API nor a database.
func (f *tursoFake) assertPublic(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	assertPublicClean(t, err, tursoTestToken, tursoTestOrg, f.URL, strings.TrimPrefix(f.URL, "http://"),
		"api.turso.tech", "turso.io", TursoNamePrefix, "jwt", "Bearer")
	if got := PublicMessage(err); got != want {
		t.Errorf("public message %q, want %q (cause: %v)", got, want, err)
	}
	if strings.Contains(err.Error(), tursoTestToken) {
		t.Errorf("error %q contains the API token", err)
	}
}

func tursoPaths(reqs []tursotest.FakeRequest) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.String())
	}
	return out
}

func assertTursoRequests(t *testing.T, got []tursotest.FakeRequest, want ...string) {
	t.Helper()
	paths := tursoPaths(got)
	if strings.Join(paths, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n  %s\nwant:\n  %s", strings.Join(paths, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestTursoName(t *testing.T) {
	name, err := TursoName("0190f5a2-7c3e-7d1a-9b2c-3d4e5f607182")
	if err != nil {
		t.Fatal(err)
	}
	if want := "env-0190f5a27c3e7d1a9b2c3d4e5f607182"; name != want {
		t.Errorf("TursoName = %q, want %q", name, want)
	}
	if len(name) != 36 || !tursotest.ValidName(name) {
		t.Errorf("name %q is not a valid Turso name of 36 characters", name)
	}
	upper, err := TursoName("0190F5A2-7C3E-7D1A-9B2C-3D4E5F607182")
	if err != nil || upper != name {
		t.Errorf("TursoName(upper case) = %q, %v; want %q", upper, err, name)
	}
	for _, bad := range []string{"", "x", "../etc", "0190f5a2-7c3e-7d1a-9b2c"} {
		if _, err := TursoName(bad); err == nil {
			t.Errorf("TursoName(%q) succeeded", bad)
		}
	}
}

func TestNewTursoValidates(t *testing.T) {
	ok := TursoConfig{Organization: "o", Group: "g", APIToken: "t"}
	for _, tc := range []struct {
		name string
		edit func(*TursoConfig)
	}{
		{"no organization", func(c *TursoConfig) { c.Organization = "" }},
		{"blank organization", func(c *TursoConfig) { c.Organization = "  " }},
		{"no group", func(c *TursoConfig) { c.Group = "" }},
		{"no token", func(c *TursoConfig) { c.APIToken = "" }},
		{"bad API URL", func(c *TursoConfig) { c.APIURL = "ftp://x" }},
		{"API URL with user", func(c *TursoConfig) { c.APIURL = "https://u:p@api.turso.tech" }},
		{"bad scheme", func(c *TursoConfig) { c.URLScheme = "postgres" }},
	} {
		cfg := ok
		tc.edit(&cfg)
		if _, err := NewTurso(cfg); err == nil {
			t.Errorf("%s: NewTurso succeeded", tc.name)
		} else if strings.Contains(err.Error(), "u:p") {
			t.Errorf("%s: error %q quotes the URL", tc.name, err)
		}
	}
	p, err := NewTurso(ok)
	if err != nil {
		t.Fatal(err)
	}
	if p.api != TursoDefaultAPIURL || p.scheme != "libsql" || p.client == nil || p.client.Timeout != 30*time.Second {
		t.Errorf("defaults: api %q, scheme %q, client %+v", p.api, p.scheme, p.client)
	}
	p, err = NewTurso(TursoConfig{Organization: "o", Group: "g", APIToken: "t", APIURL: "https://example.test/base/"})
	if err != nil || p.api != "https://example.test/base" {
		t.Errorf("API URL with a trailing slash: %v, %q", err, p.api)
	}
}

func TestTursoProvision(t *testing.T) {
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{})
	env, name := tursoTestEnv(t)

	res, err := p.Provision(t.Context(), env)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if want := "libsql://" + name + "-" + tursoTestOrg + ".turso.io"; res.DatabaseURL != want {
		t.Errorf("DatabaseURL = %q, want %q", res.DatabaseURL, want)
	}
	if res.Secret == "" || !f.Valid(name, res.Secret) {
		t.Errorf("Secret %q is not a valid token of the database", res.Secret)
	}
	if strings.Contains(res.DatabaseURL, res.Secret) {
		t.Error("the URL holds the secret")
	}
	reqs := f.take()
	base := "/v1/organizations/" + tursoTestOrg + "/databases"
	assertTursoRequests(t, reqs,
		"POST "+base,
		"POST "+base+"/"+name+"/auth/tokens?authorization=full-access&expiration=never")
	for _, r := range reqs {
		if !r.Authorized {
			t.Errorf("%s was sent without the API token", r)
		}
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(reqs[0].Body), &body); err != nil {
		t.Fatalf("create body %q: %v", reqs[0].Body, err)
	}
	if len(body) != 2 || body["name"] != name || body["group"] != tursoTestGroup {
		t.Errorf("create body %v, want name %q and group %q", body, name, tursoTestGroup)
	}
	if reqs[0].ContentType != "application/json" {
		t.Errorf("create Content-Type %q", reqs[0].ContentType)
	}
}

func TestTursoProvisionTwiceConverges(t *testing.T) {
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{})
	env, name := tursoTestEnv(t)

	first, err := p.Provision(t.Context(), env)
	if err != nil {
		t.Fatalf("first Provision: %v", err)
	}
	f.take()
	// A retry, as after a crash before the first result was stored.
	second, err := p.Provision(t.Context(), env)
	if err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	base := "/v1/organizations/" + tursoTestOrg + "/databases"
	assertTursoRequests(t, f.take(),
		"POST "+base, // 409
		"GET "+base+"/"+name,
		"POST "+base+"/"+name+"/auth/rotate",
		"POST "+base+"/"+name+"/auth/tokens?authorization=full-access&expiration=never")
	if second.DatabaseURL != first.DatabaseURL {
		t.Errorf("URL changed: %q then %q", first.DatabaseURL, second.DatabaseURL)
	}
	if second.Secret == first.Secret || !f.Valid(name, second.Secret) {
		t.Errorf("second secret %q is not a new valid token", second.Secret)
	}
	if f.Valid(name, first.Secret) {
		t.Error("the token of the earlier attempt still works")
	}
}

func TestTursoProvisionErrors(t *testing.T) {
	createOnly := func(status int, body string) func(r *http.Request) (int, string, bool) {
		return func(r *http.Request) (int, string, bool) {
			return status, body, r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/databases")
		}
	}
	for _, tc := range []struct {
		name string
		fail func(r *http.Request) (int, string, bool)
		want string
	}{
		{"payment required", createOnly(http.StatusPaymentRequired, `{"error":"upgrade your plan"}`), tursoMsgQuota},
		{"database limit", createOnly(http.StatusBadRequest, `{"error":"you have reached the database Limit of your plan"}`), tursoMsgQuota},
		{"forbidden quota", createOnly(http.StatusForbidden, `{"error":"storage quota exceeded"}`), tursoMsgQuota},
		{"forbidden", createOnly(http.StatusForbidden, `{"error":"forbidden"}`), tursoMsgUnauthorized},
		{"bad request", createOnly(http.StatusBadRequest, `{"error":"group not found"}`), tursoMsgCreate},
		{"server error", createOnly(http.StatusInternalServerError, `{"error":"internal error"}`), tursoMsgUnavailable},
		{"bad gateway without JSON", createOnly(http.StatusBadGateway, `<html>bad gateway</html>`), tursoMsgUnavailable},
		{"garbled answer", createOnly(http.StatusOK, `{"database":`), tursoMsgCreate},
		{"no hostname", createOnly(http.StatusOK, `{"database":{"Name":"x","DbId":"y","Hostname":""}}`), tursoMsgCreate},
		{"hostname with a path", createOnly(http.StatusOK, `{"database":{"Name":"x","DbId":"y","Hostname":"evil.test/x"}}`), tursoMsgCreate},
		{"token mint fails", func(r *http.Request) (int, string, bool) {
			return http.StatusServiceUnavailable, `{"error":"try later"}`, strings.HasSuffix(r.URL.Path, "/auth/tokens")
		}, tursoMsgUnavailable},
		{"token answer empty", func(r *http.Request) (int, string, bool) {
			return http.StatusOK, `{}`, strings.HasSuffix(r.URL.Path, "/auth/tokens")
		}, tursoMsgCreate},
		{"echoes the token", createOnly(http.StatusBadRequest, `{"error":"bad token `+tursoTestToken+`"}`), tursoMsgCreate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTursoFake(t)
			f.SetFail(tc.fail)
			env, _ := tursoTestEnv(t)
			_, err := f.provisioner(t, TursoConfig{}).Provision(t.Context(), env)
			f.assertPublic(t, err, tc.want)
		})
	}
}

func TestTursoUnauthorized(t *testing.T) {
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{APIToken: "tok-WRONG-9z"})
	env, _ := tursoTestEnv(t)
	_, err := p.Provision(t.Context(), env)
	f.assertPublic(t, err, tursoMsgUnauthorized)
	if strings.Contains(PublicMessage(err), "tok-WRONG-9z") || strings.Contains(err.Error(), "tok-WRONG-9z") {
		t.Errorf("error %q contains the API token", err)
	}
	f.assertPublic(t, p.Deprovision(t.Context(), env), tursoMsgUnauthorized)
	_, err = p.Rotate(t.Context(), env, "")
	f.assertPublic(t, err, tursoMsgUnauthorized)

	// Another organization than the token's.
	other := f.provisioner(t, TursoConfig{Organization: "someone-else"})
	_, err = other.Provision(t.Context(), env)
	f.assertPublic(t, err, tursoMsgUnauthorized)
	if strings.Contains(PublicMessage(err), "someone-else") {
		t.Errorf("public message %q names the organization", PublicMessage(err))
	}
}

func TestTursoUnavailable(t *testing.T) {
	env, _ := tursoTestEnv(t)

	// Nothing listens.
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{})
	f.Close()
	_, err := p.Provision(t.Context(), env)
	f.assertPublic(t, err, tursoMsgUnavailable)
	f.assertPublic(t, p.Deprovision(t.Context(), env), tursoMsgUnavailable)
	_, err = p.Rotate(t.Context(), env, "")
	f.assertPublic(t, err, tursoMsgUnavailable)

	// An API that never answers: each call has its deadline.
	g := newTursoFake(t)
	release := make(chan struct{})
	g.SetFail(func(r *http.Request) (int, string, bool) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK, `{}`, true
	})
	t.Cleanup(func() { close(release) })
	q := g.provisioner(t, TursoConfig{})
	q.callTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err = q.Provision(t.Context(), env)
	g.assertPublic(t, err, tursoMsgUnavailable)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Provision took %s despite a 200ms call deadline", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cause %v is not a deadline", err)
	}
}

func TestTursoDeprovision(t *testing.T) {
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{})
	env, name := tursoTestEnv(t)
	if _, err := p.Provision(t.Context(), env); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	f.take()
	if err := p.Deprovision(t.Context(), env); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	assertTursoRequests(t, f.take(), "DELETE /v1/organizations/"+tursoTestOrg+"/databases/"+name)
	if f.Exists(name) {
		t.Error("the database still exists")
	}
	// Gone already (404): success.
	if err := p.Deprovision(t.Context(), env); err != nil {
		t.Fatalf("second Deprovision: %v", err)
	}
	// And it can be provisioned again.
	if _, err := p.Provision(t.Context(), env); err != nil {
		t.Fatalf("Provision after Deprovision: %v", err)
	}

	f.SetFail(func(r *http.Request) (int, string, bool) {
		return http.StatusInternalServerError, `{"error":"boom"}`, r.Method == http.MethodDelete
	})
	f.assertPublic(t, p.Deprovision(t.Context(), env), tursoMsgUnavailable)
	f.SetFail(func(r *http.Request) (int, string, bool) {
		return http.StatusBadRequest, `{"error":"database is protected"}`, r.Method == http.MethodDelete
	})
	f.assertPublic(t, p.Deprovision(t.Context(), env), tursoMsgDelete)
	if !f.Exists(name) {
		t.Error("a failed Deprovision removed the database")
	}
}

func TestTursoRotate(t *testing.T) {
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{})
	env, name := tursoTestEnv(t)
	res, err := p.Provision(t.Context(), env)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	f.take()

	next, err := p.Rotate(t.Context(), env, res.Secret)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	base := "/v1/organizations/" + tursoTestOrg + "/databases/" + name
	assertTursoRequests(t, f.take(),
		"POST "+base+"/auth/rotate",
		"POST "+base+"/auth/tokens?authorization=full-access&expiration=never")
	if next == "" || next == res.Secret || !f.Valid(name, next) {
		t.Errorf("Rotate returned %q, not a new valid token", next)
	}
	if f.Valid(name, res.Secret) {
		t.Error("the old token still works after Rotate")
	}

	// A second rotation invalidates the first's token too.
	third, err := p.Rotate(t.Context(), env, next)
	if err != nil {
		t.Fatalf("second Rotate: %v", err)
	}
	if f.Valid(name, next) || !f.Valid(name, third) {
		t.Error("after the second Rotate the tokens are not as expected")
	}

	// Minting fails after the rotation: an error, and no token works
	// (Turso invalidated them all) until a later Rotate.
	f.SetFail(func(r *http.Request) (int, string, bool) {
		return http.StatusBadRequest, `{"error":"nope"}`, strings.HasSuffix(r.URL.Path, "/auth/tokens")
	})
	_, err = p.Rotate(t.Context(), env, third)
	f.assertPublic(t, err, tursoMsgRotate)
	if f.Valid(name, third) {
		t.Error("the token survived the rotation")
	}
	f.SetFail(nil)
	fourth, err := p.Rotate(t.Context(), env, third)
	if err != nil || !f.Valid(name, fourth) {
		t.Fatalf("Rotate after a failed one: %q, %v", fourth, err)
	}

	// A missing database.
	other, _ := tursoTestEnv(t)
	_, err = p.Rotate(t.Context(), other, "")
	f.assertPublic(t, err, tursoMsgRotate)
}

func TestTursoInvalidEnvironmentID(t *testing.T) {
	f := newTursoFake(t)
	p := f.provisioner(t, TursoConfig{})
	env := controlplane.Environment{ID: "not-a-uuid"}
	_, err := p.Provision(t.Context(), env)
	f.assertPublic(t, err, tursoMsgInvalidID)
	f.assertPublic(t, p.Deprovision(t.Context(), env), tursoMsgInvalidID)
	_, err = p.Rotate(t.Context(), env, "")
	f.assertPublic(t, err, tursoMsgInvalidID)
	if reqs := f.take(); len(reqs) != 0 {
		t.Errorf("requests sent for an invalid id: %v", tursoPaths(reqs))
	}
}

// TestTursoEndToEnd provisions through the fake API a database the fake
// serves with a real tursodb, behind a proxy that checks the database's
// tokens, then stores and reads a row through driverturso with the Result.
func TestTursoEndToEnd(t *testing.T) {
	cfg := tursoFakeConfig
	cfg.Serve = true
	f := &tursoFake{Fake: tursotest.NewFake(t, cfg)}
	p := f.provisioner(t, TursoConfig{URLScheme: "http"})
	env, name := tursoTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	res, err := p.Provision(ctx, env)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if !strings.HasPrefix(res.DatabaseURL, "http://127.0.0.1:") || !f.Valid(name, res.Secret) {
		t.Fatalf("Result %q with secret %q", res.DatabaseURL, res.Secret)
	}
	if err := p.Validate(ctx, res.DatabaseURL, res.Secret); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	d, err := driverturso.Open(ctx, res.DatabaseURL, res.Secret)
	if err != nil {
		t.Fatalf("driverturso.Open: %v", err)
	}
	defer d.Close()
	obj := &schema.Object{Name: "notes", Fields: []schema.Field{{Name: "title", Type: schema.TypeText, Required: true}}}
	if v := obj.Validate(); len(v) > 0 {
		t.Fatalf("fixture: %v", v)
	}
	if err := d.Migrate(ctx, drivertest.Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	id := uuid.Must(uuid.NewV7()).String()
	rec := driver.Record{
		schema.FieldID: id, schema.FieldCreatedAt: now, schema.FieldUpdatedAt: now,
		schema.FieldETag: "v1", "title": "hello",
	}
	if err := d.Insert(ctx, obj, rec); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	got, err := d.Get(ctx, obj, id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got["title"] != "hello" {
		t.Errorf("Get = %v", got)
	}
}
