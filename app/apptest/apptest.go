// Package apptest starts the real envplane application graph on a loopback
// port for end-to-end tests and hands out clients for every protocol the
// server speaks, so one table of cases runs over Connect, gRPC, gRPC-Web and
// REST alike.
package apptest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/app"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/logfmt"
	"github.com/envplane/envplane/internal/server"
)

// stopTimeout bounds the shutdown of a test server; tests never leave calls
// in flight, so draining is immediate unless something hangs.
const stopTimeout = 10 * time.Second

// Env is one running server with its own data directory.
type Env struct {
	// Addr is the host:port the server listens on.
	Addr string
	// URL is the base URL of every protocol: http://Addr.
	URL string
	// DataDir is the server's --data-dir.
	DataDir string
	// Config is what the server was started with.
	Config config.Config
	// Logs holds every line the server logged, as JSON, at debug level.
	Logs *Logs
	// HTTP1 speaks HTTP/1.1 only.
	HTTP1 *http.Client
	// H2C speaks HTTP/2 without TLS (prior knowledge), as gRPC needs.
	H2C *http.Client
	// Token is the platform-admin token the server minted into
	// <data-dir>/admin.token on first start ("" when it minted none); the
	// clients of Client send it.
	Token string

	stop func() error
}

// Args builds the serve flags of a test server: a loopback port chosen by the
// kernel, dataDir, and extra flags, which come last and so win.
func Args(dataDir string, extra ...string) []string {
	return append([]string{"--listen=127.0.0.1:0", "--data-dir=" + dataDir}, extra...)
}

// Config parses the serve flags of Args with no ENVPLANE_* variables set.
func Config(tb testing.TB, dataDir string, extra ...string) config.Config {
	tb.Helper()
	cfg, err := config.Parse(Args(dataDir, extra...), func(string) string { return "" }, io.Discard)
	if err != nil {
		tb.Fatalf("config.Parse: %v", err)
	}
	return cfg
}

// Start runs the application graph (app.Options) with a fresh data directory
// and extra serve flags, and stops it when the test ends.
func Start(tb testing.TB, extra ...string) *Env {
	tb.Helper()
	return StartDir(tb, tb.TempDir(), extra...)
}

// StartDir is Start on a data directory of the caller's, which may hold what
// an earlier server left there: a test restarts a server by calling Stop and
// then StartDir again with the same directory. The server stops when the test
// ends unless Stop stopped it before.
func StartDir(tb testing.TB, dataDir string, extra ...string) *Env {
	tb.Helper()
	cfg := Config(tb, dataDir, extra...)
	logs := new(Logs)
	// The handler the binary logs with (logfmt), so every test that reads
	// the log reads its lines.
	log := slog.New(logfmt.New(logs, true, slog.LevelDebug))

	var srv *server.Server
	fxApp := fx.New(app.Options(cfg, log), fx.Populate(&srv))
	if err := fxApp.Err(); err != nil {
		tb.Fatalf("fx.New: %v", err)
	}
	if err := fxApp.Start(tb.Context()); err != nil {
		tb.Fatalf("start: %v\nlogs:\n%s", err, logs)
	}

	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	env := &Env{
		Addr:    srv.Addr(),
		URL:     "http://" + srv.Addr(),
		DataDir: dataDir,
		Config:  cfg,
		Logs:    logs,
		HTTP1:   &http.Client{Transport: &http.Transport{Protocols: h1, MaxIdleConnsPerHost: 32}},
		H2C:     &http.Client{Transport: &http.Transport{Protocols: h2}},
	}
	env.stop = sync.OnceValue(func() error {
		// Connections close before the server stops, so it need not wait for them.
		env.HTTP1.CloseIdleConnections()
		env.H2C.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		return fxApp.Stop(ctx)
	})
	tb.Cleanup(func() {
		if err := env.stop(); err != nil {
			tb.Errorf("stop: %v", err)
		}
	})
	if b, err := os.ReadFile(filepath.Join(dataDir, auth.AdminTokenFile)); err == nil {
		env.Token = strings.TrimSpace(string(b))
	} else if !errors.Is(err, fs.ErrNotExist) {
		tb.Fatalf("read the admin token: %v", err)
	}
	return env
}

// Stop stops the server now (it is stopped at most once), leaving its data
// directory to a later StartDir.
func (e *Env) Stop(tb testing.TB) {
	tb.Helper()
	if err := e.stop(); err != nil {
		tb.Fatalf("stop: %v", err)
	}
}

// Protocol names one way of calling the server.
type Protocol string

// The protocols every EnvironmentService case runs over.
const (
	ConnectJSON  Protocol = "connect+json"  // Connect unary, protojson, HTTP/1.1
	ConnectProto Protocol = "connect+proto" // Connect unary, binary, HTTP/2 (h2c)
	GRPC         Protocol = "grpc"          // gRPC, HTTP/2 (h2c)
	GRPCWeb      Protocol = "grpc-web"      // gRPC-Web, HTTP/1.1
	REST         Protocol = "rest"          // the google.api.http routes under /api/, HTTP/1.1
)

// Protocols lists every Protocol, for table tests to loop over.
var Protocols = []Protocol{ConnectJSON, ConnectProto, GRPC, GRPCWeb, REST}

// Client returns an EnvironmentService client speaking p with the admin
// token. REST calls return *connect.Error values built from the
// google.rpc.Status body, so the same code and reason assertions hold for
// every protocol.
func (e *Env) Client(p Protocol) environmentv1connect.EnvironmentServiceClient {
	return e.ClientWithToken(p, e.Token)
}

// ClientWithToken is Client sending token as "Authorization: Bearer …", or
// no Authorization header when token is empty.
func (e *Env) ClientWithToken(p Protocol, token string) environmentv1connect.EnvironmentServiceClient {
	if p == REST {
		return &RESTClient{HTTP: e.HTTP1, URL: e.URL, Token: token}
	}
	httpClient, opts := e.ConnectOptions(p, token)
	return environmentv1connect.NewEnvironmentServiceClient(httpClient, e.URL, opts...)
}

// ConnectOptions returns the HTTP client and the client options that make a
// generated Connect client of any service speak p (not REST) with token.
func (e *Env) ConnectOptions(p Protocol, token string) (*http.Client, []connect.ClientOption) {
	var opts []connect.ClientOption
	if token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(token)))
	}
	switch p {
	case ConnectJSON:
		return e.HTTP1, append(opts, connect.WithProtoJSON())
	case ConnectProto:
		return e.H2C, opts
	case GRPC:
		return e.H2C, append(opts, connect.WithGRPC())
	case GRPCWeb:
		return e.HTTP1, append(opts, connect.WithGRPCWeb())
	}
	panic("apptest: no Connect client for protocol " + string(p))
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

// EnvsDir is where the server keeps SQLite environment databases.
func (e *Env) EnvsDir() string { return filepath.Join(e.DataDir, "envs") }

// SQLitePath is the database file of a SQLite environment.
func (e *Env) SQLitePath(environmentID string) string {
	return filepath.Join(e.EnvsDir(), environmentID+".db")
}

// EnvFiles lists the names in the envs directory (nil when it does not exist).
func (e *Env) EnvFiles(tb testing.TB) []string {
	tb.Helper()
	entries, err := os.ReadDir(e.EnvsDir())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		tb.Fatalf("read envs dir: %v", err)
	}
	names := make([]string, 0, len(entries))
	for _, de := range entries {
		names = append(names, de.Name())
	}
	return names
}

// Logs is a concurrency-safe sink for the server's JSON log lines.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer; slog writes one whole line per call.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Records returns every line logged so far, decoded.
func (l *Logs) Records() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader([]byte(l.String())))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// Find returns the records whose attributes include every key and value of
// match (values compared as their JSON decoding: strings, float64, bool).
func (l *Logs) Find(match map[string]any) []map[string]any {
	var out []map[string]any
	for _, rec := range l.Records() {
		ok := true
		for k, v := range match {
			if rec[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, rec)
		}
	}
	return out
}
