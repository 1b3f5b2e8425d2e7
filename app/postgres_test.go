package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/secrets"
	"github.com/envplane/envplane/services/environment"
)

// SQLSTATEs the tests expect from PostgreSQL.
const (
	pgInsufficientPrivilege = "42501" // permission denied for database
	pgInvalidPassword       = "28P01" // password authentication failed
)

// pgForEachProtocol is forEachProtocol with extra serve flags.
func pgForEachProtocol(t *testing.T, flags []string, fn func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client)) {
	t.Helper()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			env := apptest.Start(t, flags...)
			fn(t, env, p, env.Client(p))
		})
	}
}

// pgName is the name of the database and the role of a postgres environment.
func pgName(t *testing.T, environmentID string) string {
	t.Helper()
	name, err := provision.PostgresName(environmentID)
	if err != nil {
		t.Fatalf("PostgresName(%q): %v", environmentID, err)
	}
	return name
}

// pgDatabaseOwner returns the owner of database name ("" when there is no
// such database).
func pgDatabaseOwner(t *testing.T, admin *pgxpool.Pool, name string) string {
	t.Helper()
	var owner string
	err := admin.QueryRow(t.Context(), "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = $1", name).Scan(&owner)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("look up database %s: %v", name, err)
	}
	return owner
}

// pgRole describes a role as pg_authid has it.
type pgRole struct {
	exists, login, super, createDB, createRole bool
	password                                   string
}

func pgLookupRole(t *testing.T, admin *pgxpool.Pool, name string) pgRole {
	t.Helper()
	var r pgRole
	var pw *string
	err := admin.QueryRow(t.Context(), `SELECT true, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolpassword
		FROM pg_catalog.pg_authid WHERE rolname = $1`, name).Scan(&r.exists, &r.login, &r.super, &r.createDB, &r.createRole, &pw)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("look up role %s: %v", name, err)
	}
	if pw != nil {
		r.password = *pw
	}
	return r
}

// pgWantGone fails t unless the environment's database and role are gone.
func pgWantGone(t *testing.T, admin *pgxpool.Pool, environmentID string) {
	t.Helper()
	name := pgName(t, environmentID)
	if owner := pgDatabaseOwner(t, admin, name); owner != "" {
		t.Errorf("database %s still exists", name)
	}
	if pgLookupRole(t, admin, name).exists {
		t.Errorf("role %s still exists", name)
	}
}

// pgWantNoPassword fails t unless rawURL is a postgres:// URL with no
// password in its user info or query, and returns it parsed.
func pgWantNoPassword(t *testing.T, rawURL string) *url.URL {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("database_url %q is not a postgres:// URL (%v)", rawURL, err)
	}
	if _, has := u.User.Password(); has || u.Query().Has("password") {
		t.Errorf("database_url carries a password")
	}
	return u
}

// pgWantConnects connects with secret to databaseURL, runs a statement that
// needs the database's own rights and returns the user it connected as.
func pgWantConnects(t *testing.T, databaseURL, secret string) string {
	t.Helper()
	ctx := t.Context()
	conn, err := apptest.ConnectPostgres(ctx, databaseURL, secret)
	if err != nil {
		t.Fatalf("connect with the environment's secret: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var user, db string
	if err := conn.QueryRow(ctx, "SELECT current_user::text, current_database()::text").Scan(&user, &db); err != nil {
		t.Fatalf("query as the environment's role: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS apptest_probe (id integer)"); err != nil {
		t.Errorf("the environment's role cannot create a table in its database: %v", err)
	}
	return user
}

// pgWantRefused fails t unless connecting to databaseURL with secret
// fails with SQLSTATE code.
func pgWantRefused(t *testing.T, databaseURL, secret, code string) {
	t.Helper()
	conn, err := apptest.ConnectPostgres(t.Context(), databaseURL, secret)
	if err == nil {
		conn.Close(context.WithoutCancel(t.Context()))
		t.Errorf("connected; want the connection refused with SQLSTATE %s", code)
		return
	}
	if got := apptest.SQLState(err); got != code {
		t.Errorf("connect: SQLSTATE %q (%v), want %s", got, err, code)
	}
}

// pgAsRole returns databaseURL with role as its user.
func pgAsRole(t *testing.T, databaseURL, role string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

// pgLeakText is everything a client sees of a response or an error: the
// message as protojson, the error's text, metadata and details.
func pgLeakText(msg proto.Message, err error) string {
	var b strings.Builder
	if msg != nil {
		b.WriteString(protojson.Format(msg))
	}
	if err != nil {
		fmt.Fprintln(&b, err)
		var ce *connect.Error
		if errors.As(err, &ce) {
			for k, vs := range ce.Meta() {
				fmt.Fprintln(&b, k, vs)
			}
			for _, d := range ce.Details() {
				if m, derr := d.Value(); derr == nil {
					b.WriteString(protojson.Format(m))
				}
				b.Write(d.Bytes())
			}
		}
	}
	return b.String()
}

// pgWantNone fails t when text holds any of the forbidden strings, naming
// only which one (never the text, which might then put a secret in the test log).
func pgWantNone(t *testing.T, what, text string, forbidden map[string]string) {
	t.Helper()
	for name, s := range forbidden {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains %s", what, name)
		}
	}
}

func TestPostgresEnvironmentLifecycle(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	admin := apptest.PostgresPool(t, adminURL)
	au, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("%s is not a URL: %v", apptest.PostgresURLVar, err)
	}
	clusterHost, clusterPort, clusterSSLMode := au.Hostname(), au.Port(), au.Query().Get("sslmode")
	if clusterPort == "" {
		clusterPort = "5432"
	}
	pgForEachProtocol(t, []string{"--postgres-admin-url=" + adminURL}, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")

		resp, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres",
		}))
		if err != nil {
			t.Fatalf("CreateEnvironment(postgres): %v", err)
		}
		dev := resp.Msg.GetEnvironment()
		apptest.PostgresEnvironmentCleanup(t, adminURL, dev.GetId())
		name := pgName(t, dev.GetId())
		if dev.GetStatus() != "active" || dev.GetStatusMessage() != "" || dev.GetDriver() != "postgres" || dev.GetProvisionTime() == nil || !dev.GetIsDefault() {
			t.Errorf("created = %v, want an active postgres environment, provisioned and default", dev)
		}
		u := pgWantNoPassword(t, dev.GetDatabaseUrl())
		if u.User.Username() != name || u.Path != "/"+name || u.Hostname() != clusterHost || u.Port() != clusterPort ||
			(clusterSSLMode != "" && u.Query().Get("sslmode") != clusterSSLMode) {
			t.Errorf("database_url = %q, want user and database %s on %s:%s with the admin URL's sslmode", dev.GetDatabaseUrl(), name, clusterHost, clusterPort)
		}
		if diff := diffEnv(dev, getEnv(t, c, dev.GetId())); diff != "" {
			t.Errorf("GetEnvironment differs from the create's answer (-create +get):\n%s", diff)
		}

		// The cluster has the database, owned by a login role of the same name
		// with no power beyond it.
		if owner := pgDatabaseOwner(t, admin, name); owner != name {
			t.Errorf("database %s owner = %q, want the role %s", name, owner, name)
		}
		role := pgLookupRole(t, admin, name)
		if !role.exists || !role.login || role.super || role.createDB || role.createRole {
			t.Errorf("role %s = %+v, want a login role without superuser, createdb or createrole", name, role)
		}
		if !strings.HasPrefix(role.password, "SCRAM-SHA-256$") {
			t.Errorf("role %s password is not stored as a SCRAM-SHA-256 verifier", name)
		}

		// The secret: sealed in the control plane under the server's key,
		// bound to the environment.
		store := env.ControlPlane(t)
		kr := env.Keyring(t)
		cred, secret := apptest.EnvironmentSecret(t, store, kr, dev.GetId())
		if cred.KeyID != kr.Primary() {
			t.Errorf("credential key id = %q, want the primary key %q", cred.KeyID, kr.Primary())
		}
		if secret == "" || bytes.Contains(cred.Ciphertext, []byte(secret)) {
			t.Errorf("the stored ciphertext holds the plaintext secret")
		}
		if env.ControlPlaneFilesContain(t, []byte(secret)) {
			t.Errorf("the control-plane files hold the plaintext secret")
		}
		if user := pgWantConnects(t, dev.GetDatabaseUrl(), secret); user != name {
			t.Errorf("connected as %q, want %s", user, name)
		}
		pgWantNone(t, "the create response", pgLeakText(resp.Msg, nil), map[string]string{"the secret": secret})

		// A second environment's role cannot enter the first's database.
		staging := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "staging", Driver: "postgres"})
		apptest.PostgresEnvironmentCleanup(t, adminURL, staging.GetId())
		if staging.GetStatus() != "active" || staging.GetIsDefault() {
			t.Errorf("staging = %v, want active and not default", staging)
		}
		_, stagingSecret := apptest.EnvironmentSecret(t, store, kr, staging.GetId())
		if stagingSecret == secret {
			t.Errorf("two environments share one secret")
		}
		pgWantRefused(t, pgAsRole(t, dev.GetDatabaseUrl(), pgName(t, staging.GetId())), stagingSecret, pgInsufficientPrivilege)
		pgWantRefused(t, pgAsRole(t, staging.GetDatabaseUrl(), name), secret, pgInsufficientPrivilege)
		pgWantConnects(t, staging.GetDatabaseUrl(), stagingSecret)

		t.Run("rotate the credential", func(t *testing.T) {
			stagingPassword := pgLookupRole(t, admin, pgName(t, staging.GetId())).password
			resp, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()}))
			if err != nil {
				t.Fatalf("RotateCredential: %v", err)
			}
			rotated := resp.Msg.GetEnvironment()
			if rotated.GetId() != dev.GetId() || rotated.GetStatus() != "active" || rotated.GetDatabaseUrl() != dev.GetDatabaseUrl() {
				t.Errorf("rotated = %v, want the same active environment and database_url", rotated)
			}
			if resp.Msg.GetRotateTime() == nil {
				t.Errorf("rotate_time is missing")
			}
			newCred, newSecret := apptest.EnvironmentSecret(t, store, kr, dev.GetId())
			if newSecret == secret || bytes.Equal(newCred.Ciphertext, cred.Ciphertext) {
				t.Fatalf("the stored credential did not change")
			}
			if newCred.KeyID != kr.Primary() || !newCred.RotateTime.After(cred.RotateTime) {
				t.Errorf("rotated credential key id %q, rotate time %v (was %v); want the primary key and a later time", newCred.KeyID, newCred.RotateTime, cred.RotateTime)
			}
			if got := pgLookupRole(t, admin, name).password; got == role.password || !strings.HasPrefix(got, "SCRAM-SHA-256$") {
				t.Errorf("rolpassword did not change to a new SCRAM verifier")
			}
			pgWantConnects(t, dev.GetDatabaseUrl(), newSecret)
			pgWantNone(t, "the rotate response", pgLeakText(resp.Msg, nil), map[string]string{"the old secret": secret, "the new secret": newSecret})
			if pgLookupRole(t, admin, pgName(t, staging.GetId())).password != stagingPassword {
				t.Errorf("rotating one environment changed another's password")
			}
			pgWantConnects(t, staging.GetDatabaseUrl(), stagingSecret)
		})

		t.Run("delete drops the database and the role", func(t *testing.T) {
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: staging.GetId()})); err != nil {
				t.Fatalf("DeleteEnvironment(staging): %v", err)
			}
			pgWantGone(t, admin, staging.GetId())

			_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId()}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentProtected)
			if owner := pgDatabaseOwner(t, admin, name); owner != name {
				t.Fatalf("a refused delete touched the database (owner %q)", owner)
			}
			// An open session does not keep the database alive.
			conn, err := apptest.ConnectPostgres(ctx, dev.GetDatabaseUrl(), pgSecret(t, store, kr, dev.GetId()))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId(), Force: true})); err != nil {
				t.Fatalf("DeleteEnvironment(dev, force): %v", err)
			}
			pgWantGone(t, admin, dev.GetId())
			_, err = c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: dev.GetId()}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
			if envs := listEnvs(t, c, org.GetId()); len(envs) != 0 {
				t.Errorf("environments after deleting both: %v", envs)
			}
		})
	})
}

// pgSecret is the environment's secret as the control plane holds it now.
func pgSecret(t *testing.T, store controlplane.Store, kr *secrets.Keyring, id string) string {
	t.Helper()
	_, secret := apptest.EnvironmentSecret(t, store, kr, id)
	return secret
}
