package tursotest_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/envplane/envplane/internal/tursotest"
)

// wantGone fails t when what still answers as itself: itself reports
// whether the answer at its address is the closed server's own. That the
// port is free is not the test: a port freed here may be taken at once by a
// server a parallel test starts (free ports are found by listening on :0).
func wantGone(t *testing.T, what string, itself func() bool) {
	t.Helper()
	if itself() {
		t.Errorf("%s still answers", what)
	}
}

// holds reports whether the libSQL server at databaseURL answers query with
// want.
func holds(t *testing.T, databaseURL, query string, want ...string) func() bool {
	return func() bool {
		got, err := tursotest.TryQuery(t.Context(), databaseURL, query)
		return err == nil && slices.Equal(got, want)
	}
}

func TestServer(t *testing.T) {
	t.Parallel()
	bin, err := tursotest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	s, err := tursotest.Start(t.Context(), bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Errorf("URL = %q, want http://127.0.0.1:<port>", s.URL)
	}
	tursotest.Query(t, s.URL, "CREATE TABLE notes (title TEXT)")
	tursotest.Query(t, s.URL, "INSERT INTO notes VALUES (?)", "kept")
	if got := tursotest.Query(t, s.URL, "SELECT title FROM notes"); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("titles %q, want [kept]", got)
	}

	before := s.URL
	if err := s.Restart(t.Context()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.URL == before {
		t.Errorf("the restarted server serves on %s again", before)
	}
	wantGone(t, "the server before the restart", holds(t, before, "SELECT title FROM notes", "kept"))
	if got := tursotest.Query(t, s.URL, "SELECT title FROM notes"); !slices.Equal(got, []string{"kept"}) {
		t.Errorf("after the restart titles %q, want [kept]", got)
	}

	s.Close()
	wantGone(t, "the closed server", holds(t, s.URL, "SELECT title FROM notes", "kept"))
	s.Close() // again: nothing to do
}

func TestStartFails(t *testing.T) {
	t.Parallel()
	_, err := tursotest.Start(t.Context(), "/nonexistent/tursodb", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "tursodb") {
		t.Errorf("Start of a missing binary = %v, want an error naming tursodb", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	bin, err := tursotest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tursotest.Start(ctx, bin, t.TempDir()); err == nil {
		t.Error("Start with a done context succeeded")
	}
}

func TestNewServer(t *testing.T) {
	t.Parallel()
	s := tursotest.NewServer(t)
	if got := tursotest.Query(t, s.URL, "SELECT 40 + 2"); !slices.Equal(got, []string{"42"}) {
		t.Errorf("SELECT 40 + 2 = %q", got)
	}
}

// call sends one API call to f with token and decodes the answer's JSON
// into a map (nil for none).
func call(t *testing.T, f *tursotest.Fake, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestFake(t *testing.T) {
	t.Parallel()
	f := tursotest.NewFake(t, tursotest.FakeConfig{Org: "acme", Group: "eu"})
	if f.Token == "" || f.Org != "acme" || f.Group != "eu" {
		t.Fatalf("configuration: token %q, org %q, group %q", f.Token, f.Org, f.Group)
	}
	base := "/v1/organizations/acme/databases"
	for _, tc := range []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"wrong token", "nope", http.MethodPost, base, `{"name":"db-1","group":"eu"}`, http.StatusUnauthorized},
		{"other organization", f.Token, http.MethodPost, "/v1/organizations/other/databases", `{"name":"db-1","group":"eu"}`, http.StatusForbidden},
		{"other group", f.Token, http.MethodPost, base, `{"name":"db-1","group":"us"}`, http.StatusBadRequest},
		{"invalid name", f.Token, http.MethodPost, base, `{"name":"-db","group":"eu"}`, http.StatusBadRequest},
		{"unknown field", f.Token, http.MethodPost, base, `{"name":"db-1","group":"eu","size":1}`, http.StatusBadRequest},
		{"create", f.Token, http.MethodPost, base, `{"name":"db-1","group":"eu"}`, http.StatusOK},
		{"taken", f.Token, http.MethodPost, base, `{"name":"db-1","group":"eu"}`, http.StatusConflict},
		{"get", f.Token, http.MethodGet, base + "/db-1", "", http.StatusOK},
		{"get missing", f.Token, http.MethodGet, base + "/db-2", "", http.StatusNotFound},
		{"bad expiration", f.Token, http.MethodPost, base + "/db-1/auth/tokens?expiration=soon", "", http.StatusBadRequest},
	} {
		if got, body := call(t, f, tc.token, tc.method, tc.path, tc.body); got != tc.want {
			t.Errorf("%s: status %d (%v), want %d", tc.name, got, body, tc.want)
		}
	}
	if got := f.Hostname("db-1"); got != "db-1-acme.turso.io" {
		t.Errorf("Hostname = %q, want Turso's db-1-acme.turso.io", got)
	}
	if got := f.DirectURL("db-1"); got != "" {
		t.Errorf("DirectURL = %q without Serve, want none", got)
	}

	_, minted := call(t, f, f.Token, http.MethodPost, base+"/db-1/auth/tokens?expiration=never&authorization=full-access", "")
	jwt, _ := minted["jwt"].(string)
	if jwt == "" || !f.Valid("db-1", jwt) || f.Valid("db-1", "other") {
		t.Fatalf("minted %v: not the one valid token", minted)
	}
	if status, _ := call(t, f, f.Token, http.MethodPost, base+"/db-1/auth/rotate", ""); status != http.StatusOK || f.Valid("db-1", jwt) || f.Rotations("db-1") != 1 {
		t.Errorf("rotate: status %d, token still valid %v, rotations %d", status, f.Valid("db-1", jwt), f.Rotations("db-1"))
	}

	f.SetFail(func(r *http.Request) (int, string, bool) {
		return http.StatusServiceUnavailable, `{"error":"try later"}`, r.Method == http.MethodDelete
	})
	if status, body := call(t, f, f.Token, http.MethodDelete, base+"/db-1", ""); status != http.StatusServiceUnavailable || body["error"] != "try later" {
		t.Errorf("delete with a failure set: %d %v", status, body)
	}
	f.SetFail(nil)
	if status, _ := call(t, f, f.Token, http.MethodDelete, base+"/db-1", ""); status != http.StatusOK || f.Exists("db-1") || !slices.Equal(f.Deleted(), []string{"db-1"}) {
		t.Errorf("delete: status %d, databases %q, deleted %q", status, f.Databases(), f.Deleted())
	}

	reqs := f.Requests()
	if len(reqs) != 14 {
		t.Fatalf("%d requests recorded, want 14: %v", len(reqs), reqs)
	}
	if r := reqs[0]; r.Authorized || r.Status != http.StatusUnauthorized || r.String() != "POST "+base {
		t.Errorf("first request %+v, want the unauthorized create", r)
	}
	if r := reqs[5]; !r.Authorized || r.Status != http.StatusOK || r.ContentType != "application/json" || r.Body != `{"name":"db-1","group":"eu"}` {
		t.Errorf("create request %+v", r)
	}
	if r := reqs[10]; r.String() != "POST "+base+"/db-1/auth/tokens?expiration=never&authorization=full-access" {
		t.Errorf("mint request %q", r)
	}

	f.Close()
	wantGone(t, "the closed API", func() bool { // it refuses a call without its token so
		resp, err := http.Get(f.URL + base + "/db-1")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusUnauthorized && strings.Contains(string(body), "token is invalid")
	})
}

func TestFakeServe(t *testing.T) {
	t.Parallel()
	f := tursotest.NewFake(t, tursotest.FakeConfig{Serve: true})
	base := "/v1/organizations/" + f.Org + "/databases"
	status, created := call(t, f, f.Token, http.MethodPost, base, `{"name":"db-1","group":"default"}`)
	if status != http.StatusOK {
		t.Fatalf("create: %d %v", status, created)
	}
	database, _ := created["database"].(map[string]any)
	if database["Hostname"] != f.Hostname("db-1") || !strings.HasPrefix(f.Hostname("db-1"), "127.0.0.1:") {
		t.Fatalf("created %v, Hostname %q: want the proxy's 127.0.0.1:<port>", created, f.Hostname("db-1"))
	}
	_, minted := call(t, f, f.Token, http.MethodPost, base+"/db-1/auth/tokens", "")
	jwt, _ := minted["jwt"].(string)

	proxied := "http://" + f.Hostname("db-1")
	if got := tursotest.Query(t, proxied+"?authToken="+jwt, "SELECT 1"); !slices.Equal(got, []string{"1"}) {
		t.Errorf("SELECT 1 through the proxy with the minted token = %q", got)
	}
	forged, err := sql.Open("libsql", proxied+"?authToken=jwt.forged")
	if err != nil {
		t.Fatal(err)
	}
	defer forged.Close()
	if _, err := forged.ExecContext(t.Context(), "SELECT 1"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("SELECT 1 through the proxy with a forged token: %v, want a 401", err)
	}
	direct := f.DirectURL("db-1")
	tursotest.Query(t, direct, "CREATE TABLE t (x)")
	if got := tursotest.Query(t, direct, "SELECT name FROM sqlite_master WHERE name = 't'"); !slices.Equal(got, []string{"t"}) {
		t.Errorf("the database's tursodb lists tables %q, want [t]", got)
	}

	if status, _ := call(t, f, f.Token, http.MethodDelete, base+"/db-1", ""); status != http.StatusOK {
		t.Fatalf("delete: %d", status)
	}
	tableT := "SELECT name FROM sqlite_master WHERE name = 't'"
	wantGone(t, "the deleted database's proxy", holds(t, proxied+"?authToken="+jwt, tableT, "t"))
	wantGone(t, "the deleted database's tursodb", holds(t, direct, tableT, "t"))

	// Created again under the same name, it starts empty, as on Turso.
	if status, _ := call(t, f, f.Token, http.MethodPost, base, `{"name":"db-1","group":"default"}`); status != http.StatusOK {
		t.Fatalf("create again: %d", status)
	}
	if got := tursotest.Query(t, f.DirectURL("db-1"), "SELECT name FROM sqlite_master WHERE name = 't'"); len(got) != 0 {
		t.Errorf("the database created again holds the deleted one's table")
	}
}
