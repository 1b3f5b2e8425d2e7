package tursotest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// FakeConfig sets up a Fake; its zero fields take defaults.
type FakeConfig struct {
	// Org is the organization (default: a random org-<hex>), Token the API
	// token (default: a random tok-<hex>), Group the only group databases
	// are created in (default: Turso's "default").
	Org, Token, Group string
	// Serve makes each database created a real tursodb behind a proxy that
	// checks the database's tokens. Without it a database is only a record,
	// with Turso's hostname <name>-<org>.turso.io that nothing serves, and
	// the fake needs no tursodb.
	Serve bool
}

// Fake is a Turso Platform API of one organization, following the
// published shapes of the v1 endpoints envplane uses:
//
//	POST   /v1/organizations/{org}/databases                    {"name","group"} → {"database":{"Name","DbId","Hostname"}}
//	GET    /v1/organizations/{org}/databases/{name}             → {"database":{…}}
//	DELETE /v1/organizations/{org}/databases/{name}             → {"database":"name"}
//	POST   /v1/organizations/{org}/databases/{name}/auth/tokens?expiration=…&authorization=… → {"jwt"}
//	POST   /v1/organizations/{org}/databases/{name}/auth/rotate → 200
//
// A wrong API token is 401, another organization 403, a missing database
// 404, a taken name 409; errors are {"error": "…"}. It keeps, per database,
// the set of valid tokens: rotating a database's keys empties it, as Turso
// does.
//
// With FakeConfig.Serve each database is a real tursodb serving a file of
// its own. tursodb checks no token, so the fake puts a proxy in front of it
// that does: the database's Hostname is the proxy's 127.0.0.1:<port>, which
// answers 401 to a token the fake did not mint for that database or
// invalidated since.
type Fake struct {
	// URL is the API's base URL; Org, Token and Group are its FakeConfig's,
	// defaults filled in.
	URL, Org, Token, Group string

	tb        testing.TB
	bin       string // the tursodb serving each database; "" without Serve
	dir       string
	srv       *httptest.Server
	closeOnce sync.Once

	mu       sync.Mutex
	dbs      map[string]*fakeDB
	deleted  []string
	requests []FakeRequest
	minted   int
	fail     func(r *http.Request) (status int, body string, ok bool)
}

// FakeRequest is one API call a Fake received.
type FakeRequest struct {
	Method, Path, Query string
	ContentType, Body   string
	// Authorized reports whether it carried the API token.
	Authorized bool
	// Status is the fake's answer.
	Status int
}

// String is "METHOD /path[?query]".
func (r FakeRequest) String() string {
	s := r.Method + " " + r.Path
	if r.Query != "" {
		s += "?" + r.Query
	}
	return s
}

type fakeDB struct {
	name, id, group, hostname string
	tokens                    map[string]bool
	rotations                 int
	server                    *Server          // with Serve only
	proxy                     *httptest.Server // in front of server
}

// NewFake starts a fake Platform API, closed (with every database's
// tursodb) when tb ends. With cfg.Serve it fails tb when tursodb is not
// installed. Start it before a server that uses it, so that server stops
// first.
func NewFake(tb testing.TB, cfg FakeConfig) *Fake {
	tb.Helper()
	f := &Fake{
		Org:   cmp.Or(cfg.Org, "org-"+randomHex(4)),
		Token: cmp.Or(cfg.Token, "tok-"+randomHex(12)),
		Group: cmp.Or(cfg.Group, "default"),
		tb:    tb,
		dbs:   map[string]*fakeDB{},
	}
	if cfg.Serve {
		bin, err := Binary()
		if err != nil {
			tb.Fatal(err)
		}
		f.bin, f.dir = bin, tb.TempDir()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/organizations/{org}/databases", f.create)
	mux.HandleFunc("GET /v1/organizations/{org}/databases/{name}", f.get)
	mux.HandleFunc("DELETE /v1/organizations/{org}/databases/{name}", f.delete)
	mux.HandleFunc("POST /v1/organizations/{org}/databases/{name}/auth/tokens", f.mint)
	mux.HandleFunc("POST /v1/organizations/{org}/databases/{name}/auth/rotate", f.rotate)
	f.srv = httptest.NewServer(f.record(f.authenticate(mux)))
	f.URL = f.srv.URL
	tb.Cleanup(f.Close)
	return f
}

// Close stops the API and every database's tursodb; a call to the API then
// finds nothing listening.
func (f *Fake) Close() {
	f.closeOnce.Do(func() {
		f.srv.Close() // waits for the calls in flight, so no database is created after
		f.mu.Lock()
		dbs := make([]*fakeDB, 0, len(f.dbs))
		for _, db := range f.dbs {
			dbs = append(dbs, db)
		}
		f.mu.Unlock()
		for _, db := range dbs {
			db.close()
		}
	})
}

// record keeps every call, with the answer next gives it.
func (f *Fake) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		f.mu.Lock()
		f.requests = append(f.requests, FakeRequest{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			ContentType: r.Header.Get("Content-Type"), Body: string(body),
			Authorized: f.authorized(r), Status: rec.status,
		})
		f.mu.Unlock()
	})
}

// authenticate answers 401 to a call without the API token, and lets the
// failure SetFail installed answer the others it takes.
func (f *Fake) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(r) {
			answer(w, http.StatusUnauthorized, map[string]any{"error": "token is invalid"})
			return
		}
		f.mu.Lock()
		fail := f.fail
		f.mu.Unlock()
		if fail != nil {
			if status, body, ok := fail(r); ok {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, body)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (f *Fake) authorized(r *http.Request) bool {
	return r.Header.Get("Authorization") == "Bearer "+f.Token
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var databaseName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$`)

// ValidName reports whether Turso accepts name for a database: 2 to 64
// lower-case letters, digits and dashes, neither first nor last a dash.
func ValidName(name string) bool {
	return databaseName.MatchString(name)
}

// org checks the path's organization, answering 403 for another.
func (f *Fake) org(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("org") != f.Org {
		answer(w, http.StatusForbidden, map[string]any{"error": "you do not have access to this organization"})
		return false
	}
	return true
}

func (f *Fake) create(w http.ResponseWriter, r *http.Request) {
	if !f.org(w, r) {
		return
	}
	var in struct {
		Name  string `json:"name"`
		Group string `json:"group"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || r.Header.Get("Content-Type") != "application/json" {
		answer(w, http.StatusBadRequest, map[string]any{"error": "invalid request body"})
		return
	}
	if !ValidName(in.Name) {
		answer(w, http.StatusBadRequest, map[string]any{"error": "invalid database name"})
		return
	}
	if in.Group != f.Group {
		answer(w, http.StatusBadRequest, map[string]any{"error": "group not found"})
		return
	}
	if f.Exists(in.Name) {
		answerTaken(w, in.Name)
		return
	}
	db := &fakeDB{name: in.Name, id: uuid.NewString(), group: in.Group, hostname: in.Name + "-" + f.Org + ".turso.io", tokens: map[string]bool{}}
	if f.bin != "" {
		if err := f.serve(r.Context(), db); err != nil {
			f.tb.Errorf("fake turso: start the database: %v", err)
			answer(w, http.StatusInternalServerError, map[string]any{"error": "internal error"})
			return
		}
	}
	f.mu.Lock()
	_, taken := f.dbs[in.Name] // by a create running alongside
	if !taken {
		f.dbs[in.Name] = db
	}
	f.mu.Unlock()
	if taken {
		db.close()
		answerTaken(w, in.Name)
		return
	}
	answer(w, http.StatusOK, map[string]any{"database": map[string]any{"DbId": db.id, "Hostname": db.hostname, "Name": db.name}})
}

func answerTaken(w http.ResponseWriter, name string) {
	answer(w, http.StatusConflict, map[string]any{"error": "database with name " + name + " already exists"})
}

// serve starts db's tursodb and the proxy in front of it, db's hostname. The
// tursodb has a directory of its own: a database created again under a
// deleted one's name starts empty, as on Turso. Turso goes on creating a
// database its caller gave up on, so the start does too.
func (f *Fake) serve(ctx context.Context, db *fakeDB) error {
	s, err := Start(context.WithoutCancel(ctx), f.bin, filepath.Join(f.dir, db.id))
	if err != nil {
		return err
	}
	target, err := url.Parse(s.URL)
	if err != nil {
		s.Close()
		return err
	}
	db.server = s
	db.proxy = httptest.NewServer(f.authProxy(db, target))
	db.hostname = strings.TrimPrefix(db.proxy.URL, "http://")
	return nil
}

// authProxy forwards to target, db's tursodb, the requests bearing a valid
// token of db, and answers the others 401, as Turso does.
func (f *Fake) authProxy(db *fakeDB, target *url.URL) http.Handler {
	proxy := httputil.NewSingleHostReverseProxy(target)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		valid := ok && db.tokens[token]
		f.mu.Unlock()
		if !valid {
			http.Error(w, `{"error":"Unauthorized: the token is invalid"}`, http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

// close stops db's proxy and tursodb, if it has them.
func (db *fakeDB) close() {
	if db.server == nil {
		return
	}
	db.proxy.Close()
	db.server.Close()
}

// lookup finds the path's database, answering 404 when missing.
func (f *Fake) lookup(w http.ResponseWriter, r *http.Request) *fakeDB {
	if !f.org(w, r) {
		return nil
	}
	f.mu.Lock()
	db := f.dbs[r.PathValue("name")]
	f.mu.Unlock()
	if db == nil {
		answer(w, http.StatusNotFound, map[string]any{"error": "could not find database with name " + r.PathValue("name")})
	}
	return db
}

func (f *Fake) get(w http.ResponseWriter, r *http.Request) {
	if db := f.lookup(w, r); db != nil {
		answer(w, http.StatusOK, map[string]any{"database": map[string]any{
			"Name": db.name, "DbId": db.id, "Hostname": db.hostname, "group": db.group, "primaryRegion": "fra",
		}})
	}
}

func (f *Fake) delete(w http.ResponseWriter, r *http.Request) {
	db := f.lookup(w, r)
	if db == nil {
		return
	}
	f.mu.Lock()
	delete(f.dbs, db.name)
	f.deleted = append(f.deleted, db.name)
	f.mu.Unlock()
	db.close()
	answer(w, http.StatusOK, map[string]any{"database": db.name})
}

func (f *Fake) mint(w http.ResponseWriter, r *http.Request) {
	db := f.lookup(w, r)
	if db == nil {
		return
	}
	q := r.URL.Query()
	if exp := q.Get("expiration"); exp != "" && exp != "never" {
		if _, err := time.ParseDuration(exp); err != nil {
			answer(w, http.StatusBadRequest, map[string]any{"error": "invalid expiration"})
			return
		}
	}
	if a := q.Get("authorization"); a != "" && a != "full-access" && a != "read-only" {
		answer(w, http.StatusBadRequest, map[string]any{"error": "invalid authorization"})
		return
	}
	f.mu.Lock()
	f.minted++
	jwt := fmt.Sprintf("jwt.%s.%d.%s", db.name, f.minted, randomHex(8))
	db.tokens[jwt] = true
	f.mu.Unlock()
	answer(w, http.StatusOK, map[string]any{"jwt": jwt})
}

func (f *Fake) rotate(w http.ResponseWriter, r *http.Request) {
	if db := f.lookup(w, r); db != nil {
		f.mu.Lock()
		clear(db.tokens)
		db.rotations++
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}
}

// SetFail makes fail answer, after authentication, the requests it takes
// (ok) instead of the fake; nil restores the fake.
func (f *Fake) SetFail(fail func(r *http.Request) (status int, body string, ok bool)) {
	f.mu.Lock()
	f.fail = fail
	f.mu.Unlock()
}

// Requests returns the API calls received so far, in order.
func (f *Fake) Requests() []FakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// Databases lists the databases that exist, sorted.
func (f *Fake) Databases() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.dbs))
	for name := range f.dbs {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Deleted lists the databases deleted through the API, in order.
func (f *Fake) Deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.deleted)
}

// Exists reports whether database name exists.
func (f *Fake) Exists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dbs[name] != nil
}

// Valid reports whether database name accepts token.
func (f *Fake) Valid(name, token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	db := f.dbs[name]
	return db != nil && db.tokens[token]
}

// Rotations counts the key rotations of database name.
func (f *Fake) Rotations(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if db := f.dbs[name]; db != nil {
		return db.rotations
	}
	return 0
}

// Hostname is database name's Hostname ("" when it does not exist).
func (f *Fake) Hostname(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if db := f.dbs[name]; db != nil {
		return db.hostname
	}
	return ""
}

// DirectURL is the http:// URL of database name's tursodb itself, past the
// proxy that checks tokens ("" when it does not exist or, without Serve,
// nothing serves it).
func (f *Fake) DirectURL(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if db := f.dbs[name]; db != nil && db.server != nil {
		return db.server.URL
	}
	return ""
}
