package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/services/environment"
)

// pgInfoLogs returns the server's log records at level INFO and above, one JSON
// object a line. Debug records may carry causes that name hosts (never
// secrets); what an operator sees by default must not.
func pgInfoLogs(t *testing.T, env *apptest.Env) string {
	t.Helper()
	var b strings.Builder
	for _, rec := range env.Logs.Records() {
		if lvl, _ := rec["level"].(string); strings.HasPrefix(lvl, "DEBUG") {
			continue
		}
		line, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// pgLimitedAdmin creates a login role of the cluster at
// ENVPLANE_TEST_POSTGRES_URL that may create roles but not databases (su is
// a pool of that cluster's superuser), dropped when t ends, and returns its
// name and an admin URL logging in as it: provisioning through it makes the
// environment's role and fails at its database.
func pgLimitedAdmin(t *testing.T, su *pgxpool.Pool) (role, adminURL string) {
	t.Helper()
	superURL := apptest.PostgresURL(t)
	role = apptest.RandomName("envplane_apptest_admin_")
	t.Cleanup(func() { apptest.DropPostgresObjects(t, superURL, role) })
	if _, err := su.Exec(t.Context(), "CREATE ROLE "+role+" LOGIN CREATEROLE NOCREATEDB"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(superURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return role, u.String()
}

// pgWantSameEnvs fails t unless the organization lists exactly before.
func pgWantSameEnvs(t *testing.T, c client, orgID string, before []*environmentv1.Environment) {
	t.Helper()
	if diff := cmp.Diff(before, listEnvs(t, c, orgID), protocmp.Transform()); diff != "" {
		t.Errorf("a failed create changed the environments (-before +after):\n%s", diff)
	}
}

func TestPostgresDriverNotConfigured(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")
		createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "memory"})
		before := listEnvs(t, c, org.GetId())

		for _, req := range []*environmentv1.CreateEnvironmentRequest{
			{OrganizationId: org.GetId(), Slug: "pg", Driver: "postgres"},
			{OrganizationId: org.GetId(), Slug: "pg", Driver: "postgres", Type: "production", RequestId: "pg-1"},
		} {
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(req))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDriverNotConfigured)
		}
		pgWantSameEnvs(t, c, org.GetId(), before)
		if _, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "acme-pg.localhost"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("ResolveHostname(acme-pg.localhost) = %v, want NOT_FOUND: the refused environment must not hold its hostname", err)
		}
	})
}

func TestPostgresBringYourOwnDatabase(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	admin := apptest.PostgresPool(t, adminURL)
	login := apptest.RandomName("envplane_apptest_byo_")
	secret := apptest.RandomName("byo-secret-")
	dbURL := apptest.CreatePostgresLogin(t, adminURL, login, secret)
	// A marker the user keeps in their database, which envplane must leave alone.
	{
		conn, err := apptest.ConnectPostgres(t.Context(), dbURL, secret)
		if err != nil {
			t.Fatalf("connect to the database brought: %v", err)
		}
		_, err = conn.Exec(t.Context(), "CREATE TABLE keep_me (id integer); INSERT INTO keep_me VALUES (42)")
		conn.Close(context.WithoutCancel(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	wrongPort := *u
	wrongPort.Host = "127.0.0.1:" + strconv.Itoa(apptest.FreePort(t))
	unknownDB := *u
	unknownDB.Path = "/" + login + "_missing"
	withPassword := *u
	withPassword.User = url.UserPassword(login, secret)

	// Everything the client sent about the database; none of it may come back in an error.
	forbidden := map[string]string{
		"the secret": secret, "the database URL": dbURL, "the host and port": u.Host, "the role or database name": login,
		"the wrong port": wrongPort.Host, "the URL with a password": withPassword.String(),
	}

	// The server provisions no postgres environments: users bring them.
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")

		resp, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: "own", Driver: "postgres", DatabaseUrl: dbURL, DatabaseSecret: secret,
		}))
		if err != nil {
			t.Fatalf("CreateEnvironment(bring your own): %v", err)
		}
		own := resp.Msg.GetEnvironment()
		if own.GetStatus() != "active" || own.GetDatabaseUrl() != dbURL || own.GetDriver() != "postgres" || own.GetProvisionTime() == nil {
			t.Errorf("created = %v, want active with the URL brought", own)
		}
		got := getEnv(t, c, own.GetId())
		if diff := diffEnv(own, got); diff != "" {
			t.Errorf("GetEnvironment differs from the create's answer (-create +get):\n%s", diff)
		}
		pgWantNone(t, "the create and get responses", pgLeakText(resp.Msg, nil)+pgLeakText(got, nil), map[string]string{"the secret": secret})

		store := env.ControlPlane(t)
		kr := env.Keyring(t)
		cred, stored := apptest.EnvironmentSecret(t, store, kr, own.GetId())
		if stored != secret || cred.KeyID != kr.Primary() || bytes.Contains(cred.Ciphertext, []byte(secret)) {
			t.Errorf("the secret brought is not stored sealed under the primary key %q (key id %q)", kr.Primary(), cred.KeyID)
		}
		before := listEnvs(t, c, org.GetId())

		t.Run("rotation is refused", func(t *testing.T) {
			_, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: own.GetId()}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonCredentialNotRotatable)
			pgWantNone(t, "the rotate error", pgLeakText(nil, err), forbidden)
			if _, now := apptest.EnvironmentSecret(t, store, kr, own.GetId()); now != secret {
				t.Errorf("a refused rotation changed the stored secret")
			}
		})

		t.Run("a database that does not answer is refused", func(t *testing.T) {
			for name, bad := range map[string]string{
				"wrong port":       wrongPort.String(),
				"unknown database": unknownDB.String(),
				"password in URL":  withPassword.String(),
			} {
				t.Run(name, func(t *testing.T) {
					_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
						OrganizationId: org.GetId(), Slug: "bad", Driver: "postgres", DatabaseUrl: bad, DatabaseSecret: secret,
					}))
					apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDatabaseUnreachable)
					pgWantNone(t, "the error", pgLeakText(nil, err), forbidden)
					pgWantSameEnvs(t, c, org.GetId(), before)
				})
			}
		})

		t.Run("database_url with the sqlite driver", func(t *testing.T) {
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: "lite", Driver: "sqlite", DatabaseUrl: dbURL, DatabaseSecret: secret,
			}))
			apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonDatabaseURLNotAllowed)
			apptest.WantFieldViolation(t, err, "database_url")
			pgWantNone(t, "the error", pgLeakText(nil, err), forbidden)
			pgWantSameEnvs(t, c, org.GetId(), before)
			if files := env.EnvFiles(t); len(files) != 0 {
				t.Errorf("a refused create left files in the envs dir: %q", files)
			}
		})

		t.Run("delete leaves the database in place", func(t *testing.T) {
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: own.GetId(), Force: true})); err != nil {
				t.Fatalf("DeleteEnvironment(force): %v", err)
			}
			_, err := c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: own.GetId()}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
			if owner := pgDatabaseOwner(t, admin, login); owner != login {
				t.Fatalf("the database brought is gone or changed owner (%q)", owner)
			}
			if !pgLookupRole(t, admin, login).exists {
				t.Fatalf("the role brought is gone")
			}
			conn, err := apptest.ConnectPostgres(ctx, dbURL, secret)
			if err != nil {
				t.Fatalf("connect to the database brought after the delete: %v", err)
			}
			defer conn.Close(context.WithoutCancel(ctx))
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM keep_me WHERE id = 42").Scan(&n); err != nil || n != 1 {
				t.Errorf("the data in the database brought: %d rows, %v; want it untouched", n, err)
			}
		})
		pgWantNone(t, "the server log (INFO and above)", pgInfoLogs(t, env), forbidden)
		pgWantNone(t, "the server log", env.Logs.String(), map[string]string{"the secret": secret})
	})
}

func TestPostgresProvisioningFailure(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	admin := apptest.PostgresPool(t, adminURL)
	port := strconv.Itoa(apptest.FreePort(t))
	badAdminURL := "postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable"
	forbidden := map[string]string{
		"the admin URL": badAdminURL, "the host": "127.0.0.1", "the port": port, "a URL": "postgres://", "the admin user": "postgres@",
	}
	pgForEachProtocol(t, []string{"--postgres-admin-url=" + badAdminURL}, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")
		resp, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres",
		}))
		if err != nil {
			t.Fatalf("CreateEnvironment: %v, want success with status failed", err)
		}
		failed := resp.Msg.GetEnvironment()
		apptest.PostgresEnvironmentCleanup(t, adminURL, failed.GetId())
		if failed.GetStatus() != "failed" || failed.GetDatabaseUrl() != "" || failed.GetProvisionTime() != nil {
			t.Errorf("created = %v, want failed without database_url or provision_time", failed)
		}
		msg := failed.GetStatusMessage()
		if msg == "" {
			t.Errorf("status_message is empty, want an explanation")
		}
		pgWantNone(t, "status_message "+strconv.Quote(msg), msg, forbidden)
		if diff := diffEnv(failed, getEnv(t, c, failed.GetId())); diff != "" {
			t.Errorf("GetEnvironment differs from the create's answer (-create +get):\n%s", diff)
		}

		// Nothing was made on any cluster: not on the one the server was
		// told about (unreachable), nor on the test cluster.
		name := pgName(t, failed.GetId())
		if owner := pgDatabaseOwner(t, admin, name); owner != "" {
			t.Errorf("a database %s exists", name)
		}
		if pgLookupRole(t, admin, name).exists {
			t.Errorf("a role %s exists", name)
		}
		store := env.ControlPlane(t)
		if row, err := store.GetEnvironment(ctx, failed.GetId()); err != nil || len(row.Credential.Ciphertext) != 0 {
			t.Errorf("the failed environment has a stored credential (%v)", err)
		}

		t.Run("retry fails the same way", func(t *testing.T) {
			resp, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
			if err != nil {
				t.Fatalf("RetryProvisioning: %v", err)
			}
			if got := resp.Msg.GetEnvironment(); got.GetStatus() != "failed" || got.GetStatusMessage() != msg {
				t.Errorf("retried = %v, want failed with the same message", got)
			}
		})
		t.Run("rotation is refused", func(t *testing.T) {
			_, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: failed.GetId()}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotReady)
		})
		// The server logs its own loopback address, so the log is checked for
		// the cluster's port and URL rather than its host.
		pgWantNone(t, "the server log (INFO and above)", pgInfoLogs(t, env), map[string]string{
			"the admin URL": badAdminURL, "the cluster's address": "127.0.0.1:" + port, "a URL": "postgres://", "the admin user": "postgres@",
		})
	})
}

// TestPostgresProvisioningRetry provisions through an admin role that is not
// a superuser and at first lacks CREATEDB: provisioning gets as far as the
// role and fails at the database, the environment is failed (never active),
// and once the admin may create databases a retry finishes the job.
func TestPostgresProvisioningRetry(t *testing.T) {
	t.Parallel()
	superURL := apptest.PostgresURL(t)
	su := apptest.PostgresPool(t, superURL)
	adminRole, adminURL := pgLimitedAdmin(t, su)
	env := apptest.Start(t, "--postgres-admin-url="+adminURL)
	c := env.Client(apptest.ConnectJSON)
	ctx := t.Context()
	org := createOrg(t, c, "acme")

	failed := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres"})
	apptest.PostgresEnvironmentCleanup(t, superURL, failed.GetId())
	name := pgName(t, failed.GetId())
	if failed.GetStatus() != "failed" || failed.GetDatabaseUrl() != "" {
		t.Fatalf("created = %v, want failed: the admin cannot create databases", failed)
	}
	pgWantNone(t, "status_message", failed.GetStatusMessage(), map[string]string{"the role name": name, "the admin role": adminRole, "SQL": "CREATE"})
	if owner := pgDatabaseOwner(t, su, name); owner != "" {
		t.Errorf("a database exists for the failed environment")
	}
	_, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: failed.GetId()}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotReady)

	if _, err := su.Exec(ctx, "ALTER ROLE "+adminRole+" CREATEDB"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
	if err != nil {
		t.Fatalf("RetryProvisioning: %v", err)
	}
	dev := resp.Msg.GetEnvironment()
	if dev.GetStatus() != "active" || dev.GetStatusMessage() != "" || dev.GetProvisionTime() == nil {
		t.Fatalf("retried = %v, want active", dev)
	}
	if owner := pgDatabaseOwner(t, su, name); owner != name {
		t.Errorf("database owner = %q, want %s", owner, name)
	}
	store, kr := env.ControlPlane(t), env.Keyring(t)
	pgWantConnects(t, dev.GetDatabaseUrl(), pgSecret(t, store, kr, dev.GetId()))
	if _, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()})); err != nil {
		t.Fatalf("RotateCredential through a non-superuser admin: %v", err)
	}
	pgWantConnects(t, dev.GetDatabaseUrl(), pgSecret(t, store, kr, dev.GetId()))
	if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId(), Force: true})); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	pgWantGone(t, su, dev.GetId())
}
