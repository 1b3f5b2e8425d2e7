package apptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/pgtest"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/secrets"
)

// PostgresURLVar names the variable holding the URL of a PostgreSQL
// superuser on the test cluster; CI sets it. Tests that need the cluster
// skip when it is unset, naming it.
const PostgresURLVar = pgtest.URLVar

// pgTimeout bounds each helper's statements against a cluster.
const pgTimeout = 60 * time.Second

// PostgresURL returns the superuser URL of the test cluster, or skips tb when
// PostgresURLVar is not set.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	return pgtest.URL(tb)
}

// PostgresPool returns a small pool on connURL, closed when the test ends.
func PostgresPool(tb testing.TB, connURL string) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		tb.Fatalf("parse the PostgreSQL URL: %v", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("connect to PostgreSQL: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// WithDatabase returns connURL naming database name instead of its own.
func WithDatabase(tb testing.TB, connURL, name string) string {
	tb.Helper()
	u, err := url.Parse(connURL)
	if err != nil {
		tb.Fatalf("parse the PostgreSQL URL: %v", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// RandomName returns prefix followed by 16 random hex digits: a name no other
// test (or run) uses, fit for a database or a role.
func RandomName(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// CreatePostgresDatabase creates a new, empty database on the cluster of
// adminURL and returns its name and URL (adminURL naming it). The database is
// dropped, its sessions ended, when the test ends; register it before
// starting the servers that use it, so they stop first.
func CreatePostgresDatabase(tb testing.TB, adminURL string) (name, dbURL string) {
	tb.Helper()
	name = RandomName("envplane_apptest_")
	ctx, cancel := context.WithTimeout(tb.Context(), pgTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	return name, WithDatabase(tb, adminURL, name)
}

// CreatePostgresLogin creates, on the cluster of adminURL, a login role with
// password and a database it owns, both named name, as a user bringing their
// own database would have them; it returns the database's URL without the
// password. Both are dropped when the test ends.
func CreatePostgresLogin(tb testing.TB, adminURL, name, password string) (dbURL string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), pgTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	tb.Cleanup(func() { DropPostgresObjects(tb, adminURL, name) })
	lit := "'" + strings.ReplaceAll(password, "'", "''") + "'"
	for _, stmt := range []string{
		"CREATE ROLE " + ident + " LOGIN PASSWORD " + lit,
		"CREATE DATABASE " + ident + " OWNER " + ident,
		"REVOKE ALL ON DATABASE " + ident + " FROM PUBLIC",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			tb.Fatalf("create the login %s: %v", name, err)
		}
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		tb.Fatalf("parse the PostgreSQL URL: %v", err)
	}
	u.User = url.User(name)
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// DropPostgresObjects drops the database and the role named name on the
// cluster of adminURL if they exist, ending their sessions: the cleanup of an
// environment a test provisioned (provision.PostgresName) in case the test
// did not get to delete it. Failures are reported, not fatal.
func DropPostgresObjects(tb testing.TB, adminURL, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Errorf("cleanup of %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		tb.Errorf("cleanup of %s: %v", name, err)
		return
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
		tb.Errorf("cleanup of %s: %v", name, err)
		return
	}
	if !exists {
		return
	}
	for _, stmt := range []string{"DROP OWNED BY " + ident, "DROP ROLE IF EXISTS " + ident} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			tb.Errorf("cleanup of %s: %v", name, err)
			return
		}
	}
}

// PostgresEnvironmentCleanup drops, when the test ends, whatever the Postgres
// provisioner may have left on the cluster of adminURL for environmentID.
func PostgresEnvironmentCleanup(tb testing.TB, adminURL, environmentID string) {
	tb.Helper()
	name, err := provision.PostgresName(environmentID)
	if err != nil {
		tb.Fatalf("PostgresName(%q): %v", environmentID, err)
	}
	tb.Cleanup(func() { DropPostgresObjects(tb, adminURL, name) })
}

// ConnectPostgres connects to an environment's database URL with secret as
// the password, exactly as envplane reaches it (provision.PostgresConnConfig),
// and checks the connection answers.
func ConnectPostgres(ctx context.Context, databaseURL, secret string) (*pgx.Conn, error) {
	cfg, err := provision.PostgresConnConfig(databaseURL, secret)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// SQLState returns the SQLSTATE of a PostgreSQL server error in err's chain
// ("" when there is none).
func SQLState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// WriteMasterKeyFile writes a new keyring of one key, in the format
// --master-key-file reads ("id:base64"), to a new 0600 file in dir and returns
// the file's path and the ring.
func WriteMasterKeyFile(tb testing.TB, dir string) (string, *secrets.Keyring) {
	tb.Helper()
	key, err := secrets.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	id := RandomName("test")[:20]
	text := id + ":" + base64.StdEncoding.EncodeToString(key) + "\n"
	kr, err := secrets.ParseKeys(text)
	if err != nil {
		tb.Fatalf("ParseKeys: %v", err)
	}
	path := filepath.Join(dir, id+".key")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path, kr
}

// ControlPlane opens the server's control-plane store beside the server: a
// second connection to the SQLite file of its data dir (WAL lets it read
// while the server runs) or a pool on its PostgreSQL control plane. It is
// closed when the test ends.
func (e *Env) ControlPlane(tb testing.TB) controlplane.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), pgTimeout)
	defer cancel()
	var store controlplane.Store
	var err error
	if e.Config.ControlPlaneIsPostgres() {
		store, err = controlplane.OpenPostgres(ctx, e.Config.ControlPlane)
	} else {
		store, err = controlplane.OpenSQLite(ctx, e.Config.ControlPlanePath())
	}
	if err != nil {
		tb.Fatalf("open the control plane: %v", err)
	}
	tb.Cleanup(func() { _ = store.Close() })
	return store
}

// Keyring loads the keys the server seals credentials with: its inline
// ENVPLANE_MASTER_KEY, or its key file, which must exist.
func (e *Env) Keyring(tb testing.TB) *secrets.Keyring {
	tb.Helper()
	if e.Config.MasterKey != "" {
		kr, err := secrets.ParseKeys(e.Config.MasterKey)
		if err != nil {
			tb.Fatalf("ParseKeys: %v", err)
		}
		return kr
	}
	path := e.Config.MasterKeyPath()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("the server's master key file: %v", err)
	}
	kr, _, err := secrets.LoadOrCreateKeyFile(path)
	if err != nil {
		tb.Fatalf("load the master key file: %v", err)
	}
	return kr
}

// EnvironmentSecret reads environment id's row from store and opens its
// sealed credential with kr, bound to the environment id as the server binds
// it; it returns the stored credential and the secret.
func EnvironmentSecret(tb testing.TB, store controlplane.Store, kr *secrets.Keyring, id string) (controlplane.Credential, string) {
	tb.Helper()
	row, err := store.GetEnvironment(tb.Context(), id)
	if err != nil {
		tb.Fatalf("control plane GetEnvironment(%s): %v", id, err)
	}
	if len(row.Credential.Ciphertext) == 0 {
		tb.Fatalf("environment %s has no stored credential", id)
	}
	plain, err := kr.Open(secrets.Sealed{KeyID: row.Credential.KeyID, Ciphertext: row.Credential.Ciphertext}, []byte(id))
	if err != nil {
		tb.Fatalf("open the credential of environment %s: %v", id, err)
	}
	return row.Credential, string(plain)
}

// FreePort returns a loopback TCP port nothing listened on a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	return port
}

// PostgresBinDir returns the directory of the newest installed PostgreSQL
// server programs (initdb, pg_ctl), from Debian's /usr/lib/postgresql/<n>/bin
// or else the PATH, failing tb when there are none: the postgresql package is
// installed wherever these tests run.
func PostgresBinDir(tb testing.TB) string {
	tb.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	slices.SortFunc(found, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return va - vb
	})
	if len(found) > 0 {
		return filepath.Dir(found[len(found)-1])
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	tb.Fatalf("initdb is not installed (looked in /usr/lib/postgresql/*/bin and the PATH): " +
		"install the postgresql package (apt-get install postgresql) to run the tests that need a cluster with password authentication")
	return ""
}

// StartPasswordCluster initializes and starts a throwaway PostgreSQL cluster
// that authenticates every connection by password (SCRAM-SHA-256), listening
// on a free loopback port, and returns the URL of its superuser postgres with
// the password. It is stopped and removed when the test ends. The test
// cluster of PostgresURLVar trusts 127.0.0.1, so only a cluster like this one
// can show that a password stopped working.
//
// initdb refuses to run as root, so as root the cluster runs as the postgres
// user (runuser) in a directory it owns; otherwise as the current user.
func StartPasswordCluster(tb testing.TB) (adminURL string) {
	tb.Helper()
	bin := PostgresBinDir(tb)
	asRoot := os.Geteuid() == 0
	// The postgres user must reach the directory, and the socket's path must
	// stay short: as root, /tmp rather than whatever TMPDIR says.
	parent := ""
	if asRoot {
		parent = "/tmp"
	}
	base, err := os.MkdirTemp(parent, "envplane-pgcluster-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(base) })
	dataDir := filepath.Join(base, "data")
	sockDir := filepath.Join(base, "sock")
	pwFile := filepath.Join(base, "pwfile")
	logFile := filepath.Join(base, "server.log")
	password := RandomName("pw-")
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}

	if asRoot {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root, initdb must run as the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{base, sockDir, pwFile} {
			if err := os.Chown(p, uid, gid); err != nil {
				tb.Fatal(err)
			}
		}
	}
	run := func(name string, args ...string) error {
		prog := filepath.Join(bin, name)
		var cmd *exec.Cmd
		if asRoot {
			cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
		} else {
			cmd = exec.Command(prog, args...)
		}
		cmd.Dir = base // the postgres user may not read the test's working directory
		cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			logText, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s %s: %w\n%s\nserver log:\n%s", name, strings.Join(args, " "), err, out.String(), logText)
		}
		return nil
	}

	if err := run("initdb", "-D", dataDir, "--auth=scram-sha-256", "--username=postgres", "--pwfile="+pwFile,
		"--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"); err != nil {
		tb.Fatal(err)
	}
	var port int
	for attempt := 1; ; attempt++ {
		port = FreePort(tb)
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60", port, sockDir)
		err := run("pg_ctl", "-D", dataDir, "-o", opts, "-l", logFile, "-w", "-t", "60", "start")
		if err == nil {
			break
		}
		if attempt == 3 { // another process may have taken the port meanwhile
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		if err := run("pg_ctl", "-D", dataDir, "-m", "immediate", "-w", "stop"); err != nil {
			tb.Errorf("stop the password cluster: %v", err)
		}
	})
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// fileContains reports whether any of the files exists and holds needle; it
// is how tests check that a secret is not written in clear anywhere.
func fileContains(tb testing.TB, needle []byte, paths ...string) bool {
	tb.Helper()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			tb.Fatalf("read %s: %v", p, err)
		}
		if bytes.Contains(b, needle) {
			return true
		}
	}
	return false
}

// ControlPlaneFilesContain reports whether the SQLite control plane of the
// server (the database file, its WAL and its shared memory) holds needle
// anywhere, byte for byte.
func (e *Env) ControlPlaneFilesContain(tb testing.TB, needle []byte) bool {
	tb.Helper()
	p := e.Config.ControlPlanePath()
	return fileContains(tb, needle, p, p+"-wal", p+"-shm")
}
