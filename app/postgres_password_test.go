package app_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/services/environment"
)

// These tests run their own PostgreSQL cluster with password authentication
// (apptest.StartPasswordCluster): the test cluster trusts 127.0.0.1, where
// any password, old or new, connects.

func TestPostgresRotationRevokesOldPassword(t *testing.T) {
	t.Parallel()
	clusterURL := apptest.StartPasswordCluster(t)
	admin := apptest.PostgresPool(t, clusterURL)
	env := apptest.Start(t, "--postgres-admin-url="+clusterURL)
	c := env.Client(apptest.ConnectProto)
	ctx := t.Context()

	org := createOrg(t, c, "acme")
	dev := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres"})
	if dev.GetStatus() != "active" {
		t.Fatalf("created = %v, want active", dev)
	}
	pgWantNoPassword(t, dev.GetDatabaseUrl())
	store := env.ControlPlane(t)
	kr := env.Keyring(t)
	_, oldSecret := apptest.EnvironmentSecret(t, store, kr, dev.GetId())

	pgWantConnects(t, dev.GetDatabaseUrl(), oldSecret)
	// The cluster does check passwords.
	pgWantRefused(t, dev.GetDatabaseUrl(), oldSecret+"x", pgInvalidPassword)
	pgWantRefused(t, dev.GetDatabaseUrl(), "", pgInvalidPassword)

	// A session opened with the old password is not cut by the rotation.
	open, err := apptest.ConnectPostgres(ctx, dev.GetDatabaseUrl(), oldSecret)
	if err != nil {
		t.Fatalf("connect with the secret: %v", err)
	}
	defer open.Close(context.WithoutCancel(ctx))

	if _, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()})); err != nil {
		t.Fatalf("RotateCredential: %v", err)
	}
	_, newSecret := apptest.EnvironmentSecret(t, store, kr, dev.GetId())
	if newSecret == oldSecret {
		t.Fatalf("the secret did not change")
	}
	pgWantRefused(t, dev.GetDatabaseUrl(), oldSecret, pgInvalidPassword)
	pgWantConnects(t, dev.GetDatabaseUrl(), newSecret)
	if err := open.Ping(ctx); err != nil {
		t.Errorf("the session opened before the rotation was cut: %v", err)
	}

	// Twice: the second rotation revokes the first's secret too.
	if _, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()})); err != nil {
		t.Fatalf("RotateCredential again: %v", err)
	}
	_, third := apptest.EnvironmentSecret(t, store, kr, dev.GetId())
	pgWantRefused(t, dev.GetDatabaseUrl(), newSecret, pgInvalidPassword)
	pgWantRefused(t, dev.GetDatabaseUrl(), oldSecret, pgInvalidPassword)
	pgWantConnects(t, dev.GetDatabaseUrl(), third)

	// Rotations racing on one environment leave stored the password the
	// role has: each one's store write happens in the order of its ALTER ROLE.
	for round := range 3 {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()})); err != nil {
					t.Errorf("round %d: RotateCredential: %v", round, err)
				}
			})
		}
		wg.Wait()
		if conn, err := apptest.ConnectPostgres(ctx, dev.GetDatabaseUrl(), pgSecret(t, store, kr, dev.GetId())); err != nil {
			t.Errorf("round %d of racing rotations: the stored secret does not connect (SQLSTATE %s)", round, apptest.SQLState(err))
		} else {
			conn.Close(context.WithoutCancel(ctx))
		}
	}

	open.Close(context.WithoutCancel(ctx))
	if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId(), Force: true})); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	pgWantGone(t, admin, dev.GetId())
}

// pgRecorder keeps every response and error a client got.
type pgRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *pgRecorder) intercept(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		var msg proto.Message
		if resp != nil {
			msg, _ = resp.Any().(proto.Message)
		}
		r.mu.Lock()
		r.seen = append(r.seen, req.Spec().Procedure+"\n"+pgLeakText(msg, err))
		r.mu.Unlock()
		return resp, err
	}
}

func (r *pgRecorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.seen, "\n")
}

// TestPostgresSecretsNeverLeak runs every credential path on one server and
// then looks for each secret involved in everything the server said: every
// response and error (as protojson) and its whole log, debug included.
func TestPostgresSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	clusterURL := apptest.StartPasswordCluster(t)
	env := apptest.Start(t, "--postgres-admin-url="+clusterURL)
	rec := new(pgRecorder)
	httpClient, opts := env.ConnectOptions(apptest.ConnectJSON, env.Token)
	c := environmentv1connect.NewEnvironmentServiceClient(httpClient, env.URL,
		append(opts, connect.WithInterceptors(connect.UnaryInterceptorFunc(rec.intercept)))...)
	ctx := t.Context()
	store := env.ControlPlane(t)
	kr := env.Keyring(t)

	cu, err := url.Parse(clusterURL)
	if err != nil {
		t.Fatal(err)
	}
	adminPassword, _ := cu.User.Password()
	secretValues := map[string]string{"the cluster admin password": adminPassword}
	for i, line := range strings.Split(strings.TrimSpace(kr.Format()), "\n") {
		_, key, _ := strings.Cut(line, ":")
		secretValues[fmt.Sprintf("master key %d", i)] = key
	}

	org := createOrg(t, c, "acme")
	// Provisioned, then rotated twice.
	dev := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres"})
	_, secretValues["dev's first secret"] = apptest.EnvironmentSecret(t, store, kr, dev.GetId())
	for _, round := range []string{"dev's second secret", "dev's third secret"} {
		if _, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()})); err != nil {
			t.Fatalf("RotateCredential: %v", err)
		}
		_, secretValues[round] = apptest.EnvironmentSecret(t, store, kr, dev.GetId())
	}
	pgWantConnects(t, dev.GetDatabaseUrl(), secretValues["dev's third secret"])
	staging := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "staging", Driver: "postgres"})
	_, secretValues["staging's secret"] = apptest.EnvironmentSecret(t, store, kr, staging.GetId())

	// Brought: a good secret, a wrong one, one in the URL, one for the wrong driver.
	login := apptest.RandomName("byo_")
	secretValues["the secret brought"] = apptest.RandomName("byo-secret-")
	secretValues["a wrong secret"] = apptest.RandomName("wrong-secret-")
	secretValues["a secret in a URL"] = apptest.RandomName("url-secret-")
	secretValues["a secret for sqlite"] = apptest.RandomName("lite-secret-")
	dbURL := apptest.CreatePostgresLogin(t, clusterURL, login, secretValues["the secret brought"])
	own := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "own", Driver: "postgres", DatabaseUrl: dbURL, DatabaseSecret: secretValues["the secret brought"],
	})
	if own.GetStatus() != "active" {
		t.Errorf("brought = %v, want active", own)
	}
	_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "wrong", Driver: "postgres", DatabaseUrl: dbURL, DatabaseSecret: secretValues["a wrong secret"],
	}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDatabaseUnreachable)
	u, _ := url.Parse(dbURL)
	u.User = url.UserPassword(login, secretValues["a secret in a URL"])
	_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "inurl", Driver: "postgres", DatabaseUrl: u.String(),
	}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDatabaseUnreachable)
	_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "lite", Driver: "sqlite", DatabaseUrl: dbURL, DatabaseSecret: secretValues["a secret for sqlite"],
	}))
	apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonDatabaseURLNotAllowed)
	_, err = c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: own.GetId()}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonCredentialNotRotatable)

	// Every read.
	for _, e := range []*environmentv1.Environment{dev, staging, own} {
		getEnv(t, c, e.GetId())
		if _, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: e.GetHostname()})); err != nil {
			t.Errorf("ResolveHostname(%s): %v", e.GetHostname(), err)
		}
	}
	listEnvs(t, c, org.GetId())
	if _, err := c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: dev.GetId()})); err != nil {
		t.Errorf("ActivateEnvironment: %v", err)
	}
	if _, err := c.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: staging.GetId(), DisplayName: proto.String("Staging")})); err != nil {
		t.Errorf("UpdateEnvironment: %v", err)
	}
	// And the deletes.
	for _, e := range []*environmentv1.Environment{staging, own, dev} {
		if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: e.GetId(), Force: true})); err != nil {
			t.Errorf("DeleteEnvironment(%s): %v", e.GetSlug(), err)
		}
	}

	for name, s := range secretValues {
		if len(s) < 16 {
			t.Fatalf("%s is too short to look for (%d bytes)", name, len(s))
		}
	}
	responses := rec.text()
	if !strings.Contains(responses, "RotateCredential") || !strings.Contains(responses, environment.ReasonDatabaseUnreachable) {
		t.Fatalf("the pgRecorder missed calls")
	}
	pgWantNone(t, "a response or an error", responses, secretValues)
	pgWantNone(t, "the server log", env.Logs.String(), secretValues)
	pgWantNone(t, "the server log (INFO and above)", pgInfoLogs(t, env), map[string]string{
		"the cluster admin URL": clusterURL, "the cluster's address": cu.Host, "a database URL": "postgres://",
	})
}
