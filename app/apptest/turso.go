package apptest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/tursodatabase/libsql-client-go/libsql" // the "libsql" database/sql driver of TursodbQuery
)

// TursodbPackage is the npm package `make tools` installs tursodb from, into
// the module root's node_modules.
const TursodbPackage = "@tursodatabase/cli-linux-x64-gnu"

// FakeTursoGroup is the only group the fake accepts: the server's default
// --turso-group.
const FakeTursoGroup = "default"

// TursodbBinary returns the path of tursodb, failing tb (never skipping it)
// when it is not installed.
func TursodbBinary(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("tursodb: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("tursodb: no directory above the working directory holds go.work")
		}
		dir = parent
	}
	bin := filepath.Join(dir, "node_modules", filepath.FromSlash(TursodbPackage), "tursodb")
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("tursodb is not installed at %s: run `make tools` (npm ci installs %s)", bin, TursodbPackage)
	}
	return bin
}

// tursodbProcess is one running tursodb --sync-server.
type tursodbProcess struct {
	addr string // host:port it serves Hrana over HTTP on
	stop func()
}

// startTursodbProcess serves the database file dir/db.sqlite with tursodb
// on a free loopback port and returns once it answers SELECT 1.
func startTursodbProcess(bin, dir string) (*tursodbProcess, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "tursodb.log")
	var lastErr error
	for range 5 { // a port taken between the probe and tursodb's bind: try another
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := l.Addr().String()
		_ = l.Close()
		logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "--sync-server", addr, filepath.Join(dir, "db.sqlite"))
		cmd.Stdout, cmd.Stderr = logFile, logFile
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			return nil, err
		}
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			_ = logFile.Close()
			close(done)
		}()
		stop := sync.OnceFunc(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		if lastErr = tursodbReady("http://"+addr, done, 10*time.Second); lastErr == nil {
			return &tursodbProcess{addr: addr, stop: stop}, nil
		}
		stop()
	}
	out, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("tursodb did not start: %w\n%s", lastErr, out)
}

// dieWithParent asks the kernel, where it can (Linux's Pdeathsig), to kill
// tursodb when the test binary dies without running its cleanups.
func dieWithParent(cmd *exec.Cmd) {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL).Convert(f.Type()))
		cmd.SysProcAttr = attr
	}
}

// tursodbReady polls the server with SELECT 1 until it answers or exits.
func tursodbReady(base string, done <-chan struct{}, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	body := `{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}`
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-done:
			return errors.New("tursodb exited")
		default:
		}
		resp, err := client.Post(base+"/v2/pipeline", "application/json", strings.NewReader(body))
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			_ = resp.Body.Close()
			if ok {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer after %s: %w", limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartTursodb serves a new, empty database with a real tursodb on a free
// loopback port until tb ends and returns its http:// URL: a libSQL
// database to bring to a turso environment. tursodb checks no token.
func StartTursodb(tb testing.TB) string {
	tb.Helper()
	p, err := startTursodbProcess(TursodbBinary(tb), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.stop)
	return "http://" + p.addr
}

// TursodbQuery runs query on the libSQL database at databaseURL (through
// libsql-client-go, as the server does) and returns every row's first
// column as text.
func TursodbQuery(tb testing.TB, databaseURL, query string, args ...any) []string {
	tb.Helper()
	db, err := sql.Open("libsql", databaseURL)
	if err != nil {
		tb.Fatalf("open %s: %v", databaseURL, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		tb.Fatalf("query %q: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v sql.NullString
		if err := rows.Scan(&v); err != nil {
			tb.Fatalf("query %q: %v", query, err)
		}
		out = append(out, v.String)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("query %q: %v", query, err)
	}
	return out
}

// FakeTurso is a Turso Platform API of one organization, following the
// published shapes of the v1 endpoints envplane uses:
//
//	POST   /v1/organizations/{org}/databases                    {"name","group"} → {"database":{"Name","DbId","Hostname"}}
//	GET    /v1/organizations/{org}/databases/{name}             → {"database":{…}}
//	DELETE /v1/organizations/{org}/databases/{name}             → {"database":"name"}
//	POST   /v1/organizations/{org}/databases/{name}/auth/tokens?expiration=…&authorization=… → {"jwt"}
//	POST   /v1/organizations/{org}/databases/{name}/auth/rotate → 200
//
// A wrong API token is 401, another organization 403, a missing database
// 404, a taken name 409; errors are {"error": "…"}.
//
// Each database created is a real tursodb serving a file of its own. tursodb
// checks no token, so the fake puts a proxy in front of it that does: the
// database's Hostname is the proxy's 127.0.0.1:<port>, which answers 401 to
// a token the fake did not mint for that database or invalidated since
// (rotating the database's keys invalidates all of them, as Turso does).
type FakeTurso struct {
	// URL is the API's base URL; Token its API token; Org the organization.
	URL, Token, Org string

	tb  testing.TB
	bin string
	dir string
	srv *httptest.Server

	mu       sync.Mutex
	dbs      map[string]*fakeTursoDB
	deleted  []string
	requests []FakeTursoRequest
	minted   int
	fail     func(r *http.Request) (status int, body string, ok bool)
}

// FakeTursoRequest is one API call the fake received.
type FakeTursoRequest struct {
	Method, Path, Query string
	// Authorized reports whether it carried the API token.
	Authorized bool
	// Status is the fake's answer.
	Status int
}

// String is "METHOD /path[?query]".
func (r FakeTursoRequest) String() string {
	s := r.Method + " " + r.Path
	if r.Query != "" {
		s += "?" + r.Query
	}
	return s
}

type fakeTursoDB struct {
	name, id, hostname, dir string
	tokens                  map[string]bool
	rotations               int
	proc                    *tursodbProcess
	proxy                   *httptest.Server
}

// StartFakeTurso starts a fake Platform API of a new organization with a
// random API token, stopped (with every database's tursodb) when tb ends.
// Start it before the envplane server that uses it, so the server stops
// first.
func StartFakeTurso(tb testing.TB) (apiURL, apiToken, org string, fake *FakeTurso) {
	tb.Helper()
	f := &FakeTurso{
		Token: "tok-" + randomHex(12),
		Org:   "org-" + randomHex(4),
		tb:    tb,
		bin:   TursodbBinary(tb),
		dir:   tb.TempDir(),
		dbs:   map[string]*fakeTursoDB{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/organizations/{org}/databases", f.create)
	mux.HandleFunc("GET /v1/organizations/{org}/databases/{name}", f.get)
	mux.HandleFunc("DELETE /v1/organizations/{org}/databases/{name}", f.delete)
	mux.HandleFunc("POST /v1/organizations/{org}/databases/{name}/auth/tokens", f.mint)
	mux.HandleFunc("POST /v1/organizations/{org}/databases/{name}/auth/rotate", f.rotate)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		authorized := r.Header.Get("Authorization") == "Bearer "+f.Token
		f.mu.Lock()
		fail := f.fail
		f.mu.Unlock()
		switch {
		case !authorized:
			fakeTursoAnswer(rec, http.StatusUnauthorized, map[string]any{"error": "token is invalid"})
		case fail != nil:
			if status, body, ok := fail(r); ok {
				rec.Header().Set("Content-Type", "application/json")
				rec.WriteHeader(status)
				_, _ = io.WriteString(rec, body)
				break
			}
			mux.ServeHTTP(rec, r)
		default:
			mux.ServeHTTP(rec, r)
		}
		f.mu.Lock()
		f.requests = append(f.requests, FakeTursoRequest{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Authorized: authorized, Status: rec.status,
		})
		f.mu.Unlock()
	}))
	f.URL = f.srv.URL
	tb.Cleanup(func() {
		f.srv.Close()
		f.mu.Lock()
		dbs := make([]*fakeTursoDB, 0, len(f.dbs))
		for _, db := range f.dbs {
			dbs = append(dbs, db)
		}
		f.mu.Unlock()
		for _, db := range dbs {
			db.close()
		}
	})
	return f.URL, f.Token, f.Org, f
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

func fakeTursoAnswer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (db *fakeTursoDB) close() {
	db.proxy.Close()
	db.proc.stop()
}

var fakeTursoName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$`)

func (f *FakeTurso) org(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("org") != f.Org {
		fakeTursoAnswer(w, http.StatusForbidden, map[string]any{"error": "you do not have access to this organization"})
		return false
	}
	return true
}

func (f *FakeTurso) create(w http.ResponseWriter, r *http.Request) {
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
		fakeTursoAnswer(w, http.StatusBadRequest, map[string]any{"error": "invalid request body"})
		return
	}
	if !fakeTursoName.MatchString(in.Name) {
		fakeTursoAnswer(w, http.StatusBadRequest, map[string]any{"error": "invalid database name"})
		return
	}
	if in.Group != FakeTursoGroup {
		fakeTursoAnswer(w, http.StatusBadRequest, map[string]any{"error": "group not found"})
		return
	}
	f.mu.Lock()
	_, taken := f.dbs[in.Name]
	f.mu.Unlock()
	if taken {
		fakeTursoAnswer(w, http.StatusConflict, map[string]any{"error": "database with name " + in.Name + " already exists"})
		return
	}
	db := &fakeTursoDB{name: in.Name, id: uuid.NewString(), dir: filepath.Join(f.dir, in.Name), tokens: map[string]bool{}}
	proc, err := startTursodbProcess(f.bin, db.dir)
	if err != nil {
		f.tb.Errorf("fake turso: start the database: %v", err)
		fakeTursoAnswer(w, http.StatusInternalServerError, map[string]any{"error": "internal error"})
		return
	}
	db.proc = proc
	db.proxy = httptest.NewServer(f.authProxy(db))
	db.hostname = strings.TrimPrefix(db.proxy.URL, "http://")
	f.mu.Lock()
	f.dbs[in.Name] = db
	f.mu.Unlock()
	fakeTursoAnswer(w, http.StatusOK, map[string]any{"database": map[string]any{"DbId": db.id, "Hostname": db.hostname, "Name": db.name}})
}

// authProxy forwards to db's tursodb the requests bearing a valid token of
// db, and answers the others 401, as Turso does.
func (f *FakeTurso) authProxy(db *fakeTursoDB) http.Handler {
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: db.proc.addr})
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

func (f *FakeTurso) lookup(w http.ResponseWriter, r *http.Request) *fakeTursoDB {
	if !f.org(w, r) {
		return nil
	}
	f.mu.Lock()
	db := f.dbs[r.PathValue("name")]
	f.mu.Unlock()
	if db == nil {
		fakeTursoAnswer(w, http.StatusNotFound, map[string]any{"error": "could not find database with name " + r.PathValue("name")})
	}
	return db
}

func (f *FakeTurso) get(w http.ResponseWriter, r *http.Request) {
	if db := f.lookup(w, r); db != nil {
		fakeTursoAnswer(w, http.StatusOK, map[string]any{"database": map[string]any{
			"Name": db.name, "DbId": db.id, "Hostname": db.hostname, "group": FakeTursoGroup, "primaryRegion": "fra",
		}})
	}
}

func (f *FakeTurso) delete(w http.ResponseWriter, r *http.Request) {
	db := f.lookup(w, r)
	if db == nil {
		return
	}
	f.mu.Lock()
	delete(f.dbs, db.name)
	f.deleted = append(f.deleted, db.name)
	f.mu.Unlock()
	db.close()
	fakeTursoAnswer(w, http.StatusOK, map[string]any{"database": db.name})
}

func (f *FakeTurso) mint(w http.ResponseWriter, r *http.Request) {
	db := f.lookup(w, r)
	if db == nil {
		return
	}
	q := r.URL.Query()
	if exp := q.Get("expiration"); exp != "" && exp != "never" {
		if _, err := time.ParseDuration(exp); err != nil {
			fakeTursoAnswer(w, http.StatusBadRequest, map[string]any{"error": "invalid expiration"})
			return
		}
	}
	if a := q.Get("authorization"); a != "" && a != "full-access" && a != "read-only" {
		fakeTursoAnswer(w, http.StatusBadRequest, map[string]any{"error": "invalid authorization"})
		return
	}
	f.mu.Lock()
	f.minted++
	jwt := fmt.Sprintf("jwt.%s.%d.%s", db.name, f.minted, randomHex(8))
	db.tokens[jwt] = true
	f.mu.Unlock()
	fakeTursoAnswer(w, http.StatusOK, map[string]any{"jwt": jwt})
}

func (f *FakeTurso) rotate(w http.ResponseWriter, r *http.Request) {
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
func (f *FakeTurso) SetFail(fail func(r *http.Request) (status int, body string, ok bool)) {
	f.mu.Lock()
	f.fail = fail
	f.mu.Unlock()
}

// Requests returns the API calls received so far, in order.
func (f *FakeTurso) Requests() []FakeTursoRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// Databases lists the databases that exist, sorted.
func (f *FakeTurso) Databases() []string {
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
func (f *FakeTurso) Deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.deleted)
}

// Exists reports whether database name exists.
func (f *FakeTurso) Exists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dbs[name] != nil
}

// Valid reports whether database name accepts token.
func (f *FakeTurso) Valid(name, token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	db := f.dbs[name]
	return db != nil && db.tokens[token]
}

// Rotations counts the key rotations of database name.
func (f *FakeTurso) Rotations(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if db := f.dbs[name]; db != nil {
		return db.rotations
	}
	return 0
}

// Hostname is database name's Hostname ("" when it does not exist).
func (f *FakeTurso) Hostname(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if db := f.dbs[name]; db != nil {
		return db.hostname
	}
	return ""
}

// DirectURL is the http:// URL of database name's tursodb itself, past the
// proxy that checks tokens ("" when it does not exist).
func (f *FakeTurso) DirectURL(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if db := f.dbs[name]; db != nil {
		return "http://" + db.proc.addr
	}
	return ""
}
