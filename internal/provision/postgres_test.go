package provision

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/pgtest"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestPostgres returns a provisioner on the test cluster, closed at cleanup.
func newTestPostgres(t *testing.T, adminURL string) *Postgres {
	t.Helper()
	p, err := NewPostgres(adminURL)
	if err != nil {
		t.Fatalf("NewPostgres: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// superuser returns a pool on the test cluster for inspecting pg_authid and
// friends.
func superuser(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// provisionEnv provisions a new environment and deprovisions it at cleanup.
func provisionEnv(t *testing.T, p *Postgres) (controlplane.Environment, Result) {
	t.Helper()
	env := controlplane.Environment{ID: uuid.NewString(), Driver: DriverPostgres}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Deprovision(ctx, env); err != nil && !strings.Contains(err.Error(), "closed") {
			t.Errorf("cleanup Deprovision: %v", err)
		}
	})
	res, err := p.Provision(testContext(t), env)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return env, res
}

// connectEnv connects to an environment's database as its role.
func connectEnv(ctx context.Context, databaseURL, secret string) (*pgx.Conn, error) {
	cfg, err := PostgresConnConfig(databaseURL, secret)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg.ConnConfig)
}

func mustName(t *testing.T, env controlplane.Environment) string {
	t.Helper()
	name, err := PostgresName(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func rolPassword(t *testing.T, su *pgxpool.Pool, role string) string {
	t.Helper()
	var pw *string
	if err := su.QueryRow(t.Context(), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&pw); err != nil {
		t.Fatalf("read rolpassword of %s: %v", role, err)
	}
	if pw == nil {
		t.Fatalf("role %s has no password", role)
	}
	return *pw
}

// assertVerifierOf checks that the stored verifier is the SCRAM-SHA-256
// verifier of secret, recomputing it with the stored salt: proof that the
// server holds this password, which trust authentication cannot give.
func assertVerifierOf(t *testing.T, stored, secret string) {
	t.Helper()
	// SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
	rest, ok := strings.CutPrefix(stored, "SCRAM-SHA-256$")
	if !ok {
		t.Fatalf("stored password is not a SCRAM-SHA-256 verifier")
	}
	iterSalt, _, _ := strings.Cut(rest, "$")
	iter, saltB64, _ := strings.Cut(iterSalt, ":")
	if iter != "4096" {
		t.Errorf("iterations %s, want 4096", iter)
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil || len(salt) != scramSaltSize {
		t.Fatalf("salt %q: %v", saltB64, err)
	}
	want, err := scramSHA256Verifier(secret, salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if stored != want {
		t.Fatal("the stored verifier is not the verifier of the returned secret")
	}
}

// assertPublicClean checks that err is a *Error whose public message holds
// no name, host, port, URL, statement or path, nor any of extra.
func assertPublicClean(t *testing.T, err error, extra ...string) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *provision.Error", err, err)
	}
	if pe.Public == "" {
		t.Fatal("empty public message")
	}
	for _, bad := range append([]string{
		PostgresNamePrefix, "127.0.0.1", "localhost", "5432", "postgres://", "SELECT", "CREATE ", "ALTER ", "DROP ", "/",
	}, extra...) {
		if bad != "" && strings.Contains(pe.Public, bad) {
			t.Errorf("public message %q contains %q", pe.Public, bad)
		}
	}
}

func TestPostgresProvisionCreatesIsolatedDatabase(t *testing.T) {
	t.Parallel()
	admin := pgtest.URL(t)
	p := newTestPostgres(t, admin)
	su := superuser(t)
	ctx := testContext(t)
	env, res := provisionEnv(t, p)
	name := mustName(t, env)

	u, err := url.Parse(res.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, has := u.User.Password(); has || strings.Contains(res.DatabaseURL, res.Secret) {
		t.Fatalf("DatabaseURL holds the password")
	}
	if u.Scheme != "postgres" || u.User.Username() != name || u.Path != "/"+name || u.Query().Get("sslmode") != "disable" {
		t.Errorf("DatabaseURL = %s", res.DatabaseURL)
	}
	if len(res.Secret) != 43 {
		t.Errorf("secret is %d characters, want 43", len(res.Secret))
	}
	if len(name) > 63 {
		t.Errorf("name %s is longer than 63 bytes", name)
	}

	var super, createDB, createRole, inherit, login, replication, bypassRLS bool
	if err := su.QueryRow(ctx, `SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolcanlogin, rolreplication, rolbypassrls
		FROM pg_roles WHERE rolname = $1`, name).Scan(&super, &createDB, &createRole, &inherit, &login, &replication, &bypassRLS); err != nil {
		t.Fatalf("role: %v", err)
	}
	if super || createDB || createRole || inherit || !login || replication || bypassRLS {
		t.Errorf("role attributes super=%v createdb=%v createrole=%v inherit=%v login=%v replication=%v bypassrls=%v",
			super, createDB, createRole, inherit, login, replication, bypassRLS)
	}
	var owner string
	var publicConnect bool
	if err := su.QueryRow(ctx, `SELECT pg_get_userbyid(datdba),
		EXISTS (SELECT 1 FROM aclexplode(datacl) a WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
		FROM pg_database WHERE datname = $1`, name).Scan(&owner, &publicConnect); err != nil {
		t.Fatalf("database: %v", err)
	}
	if owner != name || publicConnect {
		t.Errorf("database owner %s, CONNECT granted to PUBLIC %v", owner, publicConnect)
	}
	assertVerifierOf(t, rolPassword(t, su, name), res.Secret)

	conn, err := connectEnv(ctx, res.DatabaseURL, res.Secret)
	if err != nil {
		t.Fatalf("connect as the environment's role: %v", err)
	}
	defer conn.Close(context.Background())
	var who, db, schemaOwner string
	if err := conn.QueryRow(ctx, `SELECT current_user, current_database(),
		(SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public')`).Scan(&who, &db, &schemaOwner); err != nil {
		t.Fatal(err)
	}
	if who != name || db != name || schemaOwner != name {
		t.Errorf("user %s, database %s, public schema owner %s; want %s", who, db, schemaOwner, name)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE widgets (id bigint PRIMARY KEY, name text NOT NULL)"); err != nil {
		t.Fatalf("create table as the environment's role: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO widgets VALUES (1, 'a')"); err != nil {
		t.Fatal(err)
	}
	var publicCreate bool
	if err := conn.QueryRow(ctx, "SELECT has_schema_privilege('public', 'public', 'CREATE')").Scan(&publicCreate); err != nil {
		t.Fatal(err)
	}
	if publicCreate {
		t.Error("PUBLIC may create in schema public")
	}
}

func TestPostgresProvisionTwiceConverges(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	su := superuser(t)
	ctx := testContext(t)
	env, first := provisionEnv(t, p)
	name := mustName(t, env)

	conn, err := connectEnv(ctx, first.DatabaseURL, first.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (id int)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	// A role tampered with, or left half-made, is brought back in line.
	if _, err := su.Exec(ctx, "ALTER ROLE "+pgx.Identifier{name}.Sanitize()+" CREATEDB INHERIT NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	second, err := p.Provision(ctx, env)
	if err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	if second.DatabaseURL != first.DatabaseURL {
		t.Errorf("DatabaseURL changed: %s then %s", first.DatabaseURL, second.DatabaseURL)
	}
	if second.Secret == first.Secret {
		t.Error("second Provision kept the password")
	}
	assertVerifierOf(t, rolPassword(t, su, name), second.Secret)
	var createDB, inherit, login bool
	if err := su.QueryRow(ctx, "SELECT rolcreatedb, rolinherit, rolcanlogin FROM pg_roles WHERE rolname = $1", name).Scan(&createDB, &inherit, &login); err != nil {
		t.Fatal(err)
	}
	if createDB || inherit || !login {
		t.Errorf("role not reset: createdb=%v inherit=%v login=%v", createDB, inherit, login)
	}
	conn, err = connectEnv(ctx, second.DatabaseURL, second.Secret)
	if err != nil {
		t.Fatalf("connect after second Provision: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatalf("the data of the first Provision is gone: %v", err)
	}

	// A crash between CREATE ROLE and CREATE DATABASE: the retry finishes.
	if _, err := su.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	third, err := p.Provision(ctx, env)
	if err != nil {
		t.Fatalf("Provision after losing the database: %v", err)
	}
	c3, err := connectEnv(ctx, third.DatabaseURL, third.Secret)
	if err != nil {
		t.Fatalf("connect after re-creating the database: %v", err)
	}
	c3.Close(ctx)
}

func TestPostgresProvisionConcurrentSameEnvironment(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	su := superuser(t)
	ctx := testContext(t)
	env := controlplane.Environment{ID: uuid.NewString()}
	t.Cleanup(func() { _ = p.Deprovision(context.Background(), env) })
	var wg sync.WaitGroup
	results := make([]Result, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = p.Provision(ctx, env) })
	}
	wg.Wait()
	stored := rolPassword(t, su, mustName(t, env))
	matched := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Provision %d: %v", i, err)
		}
		want, _ := scramSHA256Verifier(results[i].Secret, verifierSalt(t, stored), 4096)
		if want == stored {
			matched++
		}
	}
	if matched != 1 {
		t.Errorf("%d of the concurrent secrets match the stored verifier, want 1", matched)
	}
}

func verifierSalt(t *testing.T, stored string) []byte {
	t.Helper()
	_, rest, _ := strings.Cut(stored, ":")
	saltB64, _, _ := strings.Cut(rest, "$")
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		t.Fatal(err)
	}
	return salt
}

func TestPostgresEnvironmentsCannotReachEachOther(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	su := superuser(t)
	ctx := testContext(t)
	envA, resA := provisionEnv(t, p)
	envB, resB := provisionEnv(t, p)
	nameA, nameB := mustName(t, envA), mustName(t, envB)

	var canConnect bool
	if err := su.QueryRow(ctx, "SELECT has_database_privilege($1, $2, 'CONNECT')", nameB, nameA).Scan(&canConnect); err != nil {
		t.Fatal(err)
	}
	if canConnect {
		t.Fatal("environment B's role has CONNECT on environment A's database")
	}

	// B's role and B's password, A's database.
	u, err := url.Parse(resA.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(nameB)
	conn, err := connectEnv(ctx, u.String(), resB.Secret)
	if err == nil {
		conn.Close(ctx)
		t.Fatal("environment B's role connected to environment A's database")
	}
	if !strings.Contains(err.Error(), "permission denied for database") {
		t.Fatalf("connect B to A: %v, want permission denied for database", err)
	}
	// And A's own role still gets in.
	conn, err = connectEnv(ctx, resA.DatabaseURL, resA.Secret)
	if err != nil {
		t.Fatalf("A to A: %v", err)
	}
	conn.Close(ctx)
}

func TestPostgresRotate(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	su := superuser(t)
	ctx := testContext(t)
	env, res := provisionEnv(t, p)
	name := mustName(t, env)

	// An open session survives the rotation.
	old, err := connectEnv(ctx, res.DatabaseURL, res.Secret)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(context.Background())

	before := rolPassword(t, su, name)
	secret, err := p.Rotate(ctx, env, res.Secret)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if secret == "" || secret == res.Secret {
		t.Fatal("Rotate returned the old or an empty secret")
	}
	after := rolPassword(t, su, name)
	if after == before {
		t.Fatal("rolpassword did not change")
	}
	assertVerifierOf(t, after, secret)

	conn, err := connectEnv(ctx, res.DatabaseURL, secret)
	if err != nil {
		t.Fatalf("connect with the new secret: %v", err)
	}
	conn.Close(ctx)
	if err := old.Ping(ctx); err != nil {
		t.Errorf("the session opened before the rotation was cut: %v", err)
	}

	missing := controlplane.Environment{ID: uuid.NewString()}
	_, err = p.Rotate(ctx, missing, "")
	assertPublicClean(t, err, mustName(t, missing))
	var pe *Error
	if errors.As(err, &pe) && pe.Public != pgMsgRoleMissing {
		t.Errorf("Rotate of a missing role: %q", pe.Public)
	}
}

func TestPostgresDeprovision(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	su := superuser(t)
	ctx := testContext(t)
	env, res := provisionEnv(t, p)
	name := mustName(t, env)

	// A session open on the database does not block the drop.
	conn, err := connectEnv(ctx, res.DatabaseURL, res.Secret)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	if err := p.Deprovision(ctx, env); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	var dbs, roles int
	if err := su.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_roles WHERE rolname = $1)`, name).Scan(&dbs, &roles); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 || roles != 0 {
		t.Fatalf("after Deprovision: %d databases, %d roles named %s", dbs, roles, name)
	}
	if err := p.Deprovision(ctx, env); err != nil {
		t.Fatalf("second Deprovision: %v", err)
	}
	if err := p.Deprovision(ctx, controlplane.Environment{ID: uuid.NewString()}); err != nil {
		t.Fatalf("Deprovision of an environment never provisioned: %v", err)
	}

	// Half-gone (the role only) is also fine.
	env2, _ := provisionEnv(t, p)
	if _, err := su.Exec(ctx, "DROP DATABASE "+pgx.Identifier{mustName(t, env2)}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Deprovision(ctx, env2); err != nil {
		t.Fatalf("Deprovision without a database: %v", err)
	}
}

// TestPostgresNonSuperuserAdmin runs the whole life cycle with an admin that
// has only CREATEDB and CREATEROLE, as a managed cluster would give.
func TestPostgresNonSuperuserAdmin(t *testing.T) {
	t.Parallel()
	admin := pgtest.URL(t)
	su := superuser(t)
	ctx := testContext(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	adminRole := "envplane_test_admin_" + hex.EncodeToString(b)
	ident := pgx.Identifier{adminRole}.Sanitize()
	if _, err := su.Exec(ctx, "CREATE ROLE "+ident+" LOGIN CREATEDB CREATEROLE"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := context.Background()
		_, _ = su.Exec(c, "DROP OWNED BY "+ident)
		if _, err := su.Exec(c, "DROP ROLE IF EXISTS "+ident); err != nil {
			t.Errorf("drop admin role: %v", err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(adminRole)
	p := newTestPostgres(t, u.String())

	env, res := provisionEnv(t, p)
	conn, err := connectEnv(ctx, res.DatabaseURL, res.Secret)
	if err != nil {
		t.Fatalf("connect as the environment's role: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if _, err := p.Provision(ctx, env); err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	if _, err := p.Rotate(ctx, env, res.Secret); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if err := p.Deprovision(ctx, env); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", mustName(t, env)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("role left behind: %d, %v", n, err)
	}
}

func TestPostgresValidate(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	ctx := testContext(t)
	env, res := provisionEnv(t, p)
	name := mustName(t, env)

	// A database this provisioner manages is never one a user may bring
	// (the app's bring-your-own tests validate a database of a user's own).
	if err := p.Validate(ctx, res.DatabaseURL, res.Secret); !errors.Is(err, ErrManagedDatabase) {
		t.Fatalf("Validate of a managed database = %v; want ErrManagedDatabase", err)
	}
	u, _ := url.Parse(res.DatabaseURL)
	badDB := *u
	badDB.Path = "/" + name + "_missing"
	badPort := *u
	badPort.Host = "127.0.0.1:1"
	withPassword := *u
	withPassword.User = url.UserPassword(name, res.Secret)
	socket := "postgres://" + name + "@/" + name + "?host=/var/run/postgresql"
	fileKey := res.DatabaseURL + "&sslrootcert=/etc/passwd"
	service := res.DatabaseURL + "&servicefile=/etc/passwd&service=x"
	for _, tt := range []struct {
		name, url, public string
	}{
		{"missing database", badDB.String(), pgMsgValidateFailed},
		{"closed port", badPort.String(), pgMsgValidateFailed},
		{"password in URL", withPassword.String(), pgMsgURLPassword},
		{"password in query", res.DatabaseURL + "&password=x", pgMsgURLPassword},
		{"unix socket", socket, pgMsgURLHost},
		{"file-reading key", fileKey, pgMsgBadURL},
		{"service file", service, pgMsgBadURL},
		{"keyword/value form", "host=127.0.0.1 dbname=" + name, pgMsgBadURL},
		{"garbage", "postgres://%zz", pgMsgBadURL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := p.Validate(ctx, tt.url, res.Secret)
			if err == nil {
				t.Fatal("Validate succeeded")
			}
			assertPublicClean(t, err, name, res.Secret, tt.url)
			var pe *Error
			if errors.As(err, &pe) && pe.Public != tt.public {
				t.Errorf("public %q, want %q (cause %v)", pe.Public, tt.public, pe.Err)
			}
			if strings.Contains(err.Error(), res.Secret) {
				t.Error("the error text holds the secret")
			}
			if d := time.Since(start); d > 6*time.Second {
				t.Errorf("Validate took %v", d)
			}
		})
	}
}

func TestPostgresUnreachableCluster(t *testing.T) {
	t.Parallel()
	p, err := NewPostgres("postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatalf("NewPostgres must not connect: %v", err)
	}
	defer p.Close()
	ctx := testContext(t)
	env := controlplane.Environment{ID: uuid.NewString()}
	_, err = p.Provision(ctx, env)
	assertPublicClean(t, err, mustName(t, env))
	var pe *Error
	if errors.As(err, &pe) && pe.Public != pgMsgConnect {
		t.Errorf("public %q, want %q", pe.Public, pgMsgConnect)
	}
	assertPublicClean(t, p.Deprovision(ctx, env), mustName(t, env))
	_, err = p.Rotate(ctx, env, "")
	assertPublicClean(t, err, mustName(t, env))

	p.Close()
	_, err = p.Provision(ctx, env)
	assertPublicClean(t, err)
}

func TestPostgresInvalidEnvironmentID(t *testing.T) {
	p, err := NewPostgres("postgres://postgres@127.0.0.1:1/postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, id := range []string{"", "not-a-uuid", `x"; DROP ROLE postgres; --`} {
		env := controlplane.Environment{ID: id}
		_, err := p.Provision(t.Context(), env)
		assertPublicClean(t, err, id)
		assertPublicClean(t, p.Deprovision(t.Context(), env), id)
		_, err = p.Rotate(t.Context(), env, "")
		assertPublicClean(t, err, id)
	}
}

func TestNewPostgresRejectsBadURL(t *testing.T) {
	_, err := NewPostgres("postgres://admin:hunter2@[::1")
	if err == nil {
		t.Fatal("NewPostgres accepted a malformed URL")
	}
	assertPublicClean(t, err, "hunter2")
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("the error holds the admin password")
	}
}

func TestPostgresName(t *testing.T) {
	name, err := PostgresName("0190F3E2-7A4B-7C3D-8E9F-0123456789AB")
	if err != nil {
		t.Fatal(err)
	}
	if name != "envplane_env_0190f3e27a4b7c3d8e9f0123456789ab" || len(name) > 63 {
		t.Errorf("PostgresName = %q", name)
	}
	if _, err := PostgresName("envplane"); err == nil {
		t.Error("PostgresName accepted a non-UUID")
	}
}

func TestPostgresDatabaseURL(t *testing.T) {
	id := "0190f3e2-7a4b-7c3d-8e9f-0123456789ab"
	name, _ := PostgresName(id)
	for _, tt := range []struct{ admin, want string }{
		{"postgres://a@db.example:6543/postgres?sslmode=verify-full",
			"postgres://" + name + "@db.example:6543/" + name + "?sslmode=verify-full"},
		{"postgres://a@[::1]/postgres?sslmode=disable",
			"postgres://" + name + "@[::1]:5432/" + name + "?sslmode=disable"},
		{"postgresql://a@db.example/postgres?ssl=true",
			"postgres://" + name + "@db.example:5432/" + name + "?sslmode=require"},
		{"host=db.example port=7000 user=a sslmode=require",
			"postgres://" + name + "@db.example:7000/" + name + "?sslmode=require"},
		{"postgres://a@/postgres?host=/run/postgresql&sslmode=disable",
			"postgres://" + name + "@/" + name + "?host=%2Frun%2Fpostgresql&port=5432&sslmode=disable"},
	} {
		p, err := NewPostgres(tt.admin)
		if err != nil {
			t.Fatalf("NewPostgres(%s): %v", tt.admin, err)
		}
		got, err := p.DatabaseURL(id)
		if err != nil || got != tt.want {
			t.Errorf("DatabaseURL for %s = %s, %v; want %s", tt.admin, got, err, tt.want)
		}
		p.Close()
	}
	t.Setenv("PGSSLMODE", "")
	p, _ := NewPostgres("postgres://a@db.example/postgres")
	defer p.Close()
	if got, _ := p.DatabaseURL(id); !strings.HasSuffix(got, "?sslmode=prefer") {
		t.Errorf("no sslmode in the admin URL: %s, want prefer like the admin connection", got)
	}
}

func TestPostgresConnConfig(t *testing.T) {
	cfg, err := PostgresConnConfig("postgres://role@db.example:6543/db?sslmode=disable&application_name=x", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConnConfig.Password != "s3cret" || cfg.ConnConfig.User != "role" || cfg.ConnConfig.Database != "db" ||
		cfg.ConnConfig.Port != 6543 || cfg.MaxConns != PostgresDefaultMaxConns {
		t.Errorf("config user %s db %s port %d maxconns %d", cfg.ConnConfig.User, cfg.ConnConfig.Database, cfg.ConnConfig.Port, cfg.MaxConns)
	}
	t.Setenv("PGPASSWORD", "from-the-environment")
	cfg, err = PostgresConnConfig("postgres://role@db.example/db", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConnConfig.Password != "" {
		t.Error("PGPASSWORD leaked into an environment's connection")
	}
	for _, bad := range []string{
		"postgres://role:pw@db.example/db",
		"postgres://role@db.example/db?pool_max_conns=1000",
		"postgres://role@db.example/db?passfile=/etc/shadow",
		"postgres://role@db.example/db?sslkey=/etc/ssl/private/key.pem",
		"mysql://role@db.example/db",
		"",
	} {
		_, err := PostgresConnConfig(bad, "pw")
		assertPublicClean(t, err, "db.example", "/etc")
	}
}

func TestQuoteLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"":                  `''`,
		"abc":               `'abc'`,
		"it's":              `'it''s'`,
		`back\slash`:        `E'back\\slash'`,
		`'\`:                `E'''\\'`,
		"nul\x00byte":       `'nulbyte'`,
		"SCRAM-SHA-256$4:a": `'SCRAM-SHA-256$4:a'`,
	} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestSCRAMVerifierMatchesServer has the server hash a password itself and
// checks that scramSHA256Verifier, given the same salt, computes the same
// verifier: the format the provisioner sends is the one PostgreSQL checks
// logins against.
func TestSCRAMVerifierMatchesServer(t *testing.T) {
	t.Parallel()
	su := superuser(t)
	ctx := testContext(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "envplane_test_scram_" + hex.EncodeToString(b)
	ident := pgx.Identifier{role}.Sanitize()
	conn, err := su.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	t.Cleanup(func() { _, _ = su.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident) })
	const password = "correct horse battery staple 'quoted' \\ $:,="
	if _, err := conn.Exec(ctx, "SET password_encryption = 'scram-sha-256'"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE ROLE "+ident+" PASSWORD "+quoteLiteral(password)); err != nil {
		t.Fatal(err)
	}
	stored := rolPassword(t, su, role)
	got, err := scramSHA256Verifier(password, verifierSalt(t, stored), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got != stored {
		t.Fatalf("verifier mismatch:\n got %s\nwant %s", got, stored)
	}
}
