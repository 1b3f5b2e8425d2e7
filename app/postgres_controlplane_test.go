package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/fx"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app"
	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/secrets"
	"github.com/envplane/envplane/services/environment"
)

// pgControlPlaneFlags creates a fresh control-plane database on the test
// cluster and a master key file, and returns the serve flags of a server on
// them, with the test cluster as its postgres admin URL too.
func pgControlPlaneFlags(t *testing.T) (flags []string, dbURL string, kr *secrets.Keyring) {
	t.Helper()
	adminURL := apptest.PostgresURL(t)
	_, dbURL = apptest.CreatePostgresDatabase(t, adminURL)
	keyFile, kr := apptest.WriteMasterKeyFile(t, t.TempDir())
	return []string{"--control-plane=" + dbURL, "--master-key-file=" + keyFile, "--postgres-admin-url=" + adminURL}, dbURL, kr
}

func TestPostgresControlPlaneLifecycle(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			flags, dbURL, kr := pgControlPlaneFlags(t)
			env := apptest.Start(t, flags...)
			c := env.Client(p)
			ctx := t.Context()
			if env.Token == "" {
				t.Fatal("the first server on a new control plane minted no admin token")
			}
			if logs := env.Logs.Find(map[string]any{"msg": "control plane ready", "store": "postgres"}); len(logs) != 1 {
				t.Errorf("want one log line that the postgres control plane is ready, got %d", len(logs))
			}
			wantFile(t, filepath.Join(env.DataDir, "controlplane.db"), false)
			wantFile(t, filepath.Join(env.DataDir, "master.key"), false)

			createOrg(t, c, "globex") // another organization, so lookups must pick the right one
			orgReq := &environmentv1.CreateOrganizationRequest{Slug: "acme", RequestId: "acme-1"}
			resp, err := c.CreateOrganization(ctx, connect.NewRequest(orgReq))
			if err != nil {
				t.Fatalf("CreateOrganization: %v", err)
			}
			acme := resp.Msg.GetOrganization()
			if again, err := c.CreateOrganization(ctx, connect.NewRequest(orgReq)); err != nil || again.Msg.GetOrganization().GetId() != acme.GetId() {
				t.Errorf("retried CreateOrganization = %v, %v; want the same organization", again, err)
			}

			dev := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "dev", Driver: "sqlite", RequestId: "dev-1"})
			if dev.GetStatus() != "active" || !dev.GetIsDefault() || dev.GetHostname() != "acme-dev.localhost" {
				t.Errorf("dev = %v, want active, default, acme-dev.localhost", dev)
			}
			wantFile(t, env.SQLitePath(dev.GetId()), true)
			pg := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
				OrganizationId: acme.GetId(), Slug: "pg", Driver: "postgres", Hostname: proto.String("PG.Example.COM."),
			})
			apptest.PostgresEnvironmentCleanup(t, adminURL, pg.GetId())
			if pg.GetStatus() != "active" || pg.GetIsDefault() || pg.GetHostname() != "pg.example.com" {
				t.Errorf("pg = %v, want active, not default, pg.example.com", pg)
			}
			if diff := diffEnv(pg, getEnv(t, c, pg.GetId())); diff != "" {
				t.Errorf("GetEnvironment (-create +get):\n%s", diff)
			}
			if envs := listEnvs(t, c, acme.GetId()); len(envs) != 2 || envs[0].GetId() != dev.GetId() || envs[1].GetId() != pg.GetId() {
				t.Errorf("ListEnvironments = %v, want dev then pg", envs)
			}

			// The credential sits in the PostgreSQL control plane, sealed under the configured key.
			store := env.ControlPlane(t)
			if got := env.Keyring(t).Primary(); got != kr.Primary() {
				t.Fatalf("the server's key is %q, want the key file's %q", got, kr.Primary())
			}
			cred, secret := apptest.EnvironmentSecret(t, store, kr, pg.GetId())
			if cred.KeyID != kr.Primary() || bytes.Contains(cred.Ciphertext, []byte(secret)) {
				t.Errorf("credential key id %q, want %q, and no plaintext in the ciphertext", cred.KeyID, kr.Primary())
			}
			var rawKeyID string
			var rawCipher []byte
			if err := apptest.PostgresPool(t, dbURL).QueryRow(ctx, "SELECT credential_key_id, credential_ciphertext FROM environments WHERE id = $1", pg.GetId()).Scan(&rawKeyID, &rawCipher); err != nil {
				t.Fatalf("read the environment row: %v", err)
			}
			if rawKeyID != kr.Primary() || !bytes.Equal(rawCipher, cred.Ciphertext) || bytes.Contains(rawCipher, []byte(secret)) {
				t.Errorf("the row's credential: key id %q, want %q, and the sealed bytes only", rawKeyID, kr.Primary())
			}
			pgWantConnects(t, pg.GetDatabaseUrl(), secret)

			updated := updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("dev.example.com"), DisplayName: proto.String("Dev")})
			if updated.GetHostname() != "dev.example.com" || updated.GetDisplayName() != "Dev" {
				t.Errorf("updated = %v", updated)
			}
			resolved, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "DEV.example.com"}))
			if err != nil || resolved.Msg.GetEnvironmentId() != dev.GetId() {
				t.Errorf("ResolveHostname(DEV.example.com) = %v, %v; want dev", resolved, err)
			}
			_, err = c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "acme-dev.localhost"}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonHostnameNotFound)

			_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "dev", Driver: "sqlite"}))
			apptest.WantError(t, err, connect.CodeAlreadyExists, environment.ReasonEnvironmentSlugTaken)
			// Memory environments would differ on every replica of a shared control plane.
			_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "mem", Driver: "memory"}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDriverNotSupported)
			_, err = c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "other", Driver: "sqlite", Hostname: proto.String("dev.example.com")}))
			apptest.WantError(t, err, connect.CodeAlreadyExists, environment.ReasonHostnameTaken)

			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: pg.GetId()})); err != nil {
				t.Fatalf("DeleteEnvironment(pg): %v", err)
			}
			pgWantGone(t, apptest.PostgresPool(t, adminURL), pg.GetId())
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId(), Force: true})); err != nil {
				t.Fatalf("DeleteEnvironment(dev): %v", err)
			}
			wantFile(t, env.SQLitePath(dev.GetId()), false)
			if envs := listEnvs(t, c, acme.GetId()); len(envs) != 0 {
				t.Errorf("environments left: %v", envs)
			}

			// A restart finds everything where it was, and mints no second token.
			env.Stop(t)
			again := apptest.StartDir(t, t.TempDir(), flags...)
			if again.Token != "" {
				t.Errorf("a server on a control plane that has tokens minted another admin token")
			}
			if _, err := again.ClientWithToken(p, env.Token).GetOrganization(ctx, connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: acme.GetId()})); err != nil {
				t.Errorf("GetOrganization after a restart: %v", err)
			}
		})
	}
}

func TestPostgresControlPlaneNeedsMasterKey(t *testing.T) {
	t.Parallel()
	const cp = "--control-plane=postgres://envplane@127.0.0.1:5432/envplane?sslmode=disable"
	noEnv := func(string) string { return "" }
	dir := t.TempDir()

	_, err := config.Parse(apptest.Args(dir, cp), noEnv, io.Discard)
	if err == nil {
		t.Fatal("config.Parse accepted a PostgreSQL control plane without a master key")
	}
	for _, want := range []string{"--master-key-file", "ENVPLANE_MASTER_KEY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error %q quotes the control-plane URL", err)
	}
	// The same URL through ENVPLANE_CONTROL_PLANE.
	_, err = config.Parse(apptest.Args(dir), func(k string) string {
		if k == "ENVPLANE_CONTROL_PLANE" {
			return strings.TrimPrefix(cp, "--control-plane=")
		}
		return ""
	}, io.Discard)
	if err == nil {
		t.Error("config.Parse accepted ENVPLANE_CONTROL_PLANE=postgres://… without a master key")
	}

	keyFile, kr := apptest.WriteMasterKeyFile(t, dir)
	if cfg, err := config.Parse(apptest.Args(dir, cp, "--master-key-file="+keyFile), noEnv, io.Discard); err != nil || cfg.MasterKeyFile != keyFile {
		t.Errorf("with --master-key-file: %+v, %v", cfg.MasterKeyFile, err)
	}
	inline := strings.ReplaceAll(strings.TrimSpace(kr.Format()), "\n", ",")
	cfg, err := config.Parse(apptest.Args(dir, cp), func(k string) string {
		if k == "ENVPLANE_MASTER_KEY" {
			return inline
		}
		return ""
	}, io.Discard)
	if err != nil || cfg.MasterKey != inline {
		t.Errorf("with ENVPLANE_MASTER_KEY: %v (key read: %t)", err, cfg.MasterKey == inline)
	}
	// SQLite needs none: embedded mode makes its own.
	if _, err := config.Parse(apptest.Args(dir), noEnv, io.Discard); err != nil {
		t.Errorf("embedded mode without a key: %v", err)
	}
}

// TestPostgresControlPlaneKeyFromEnvironment runs the application graph with
// the key in ENVPLANE_MASTER_KEY (apptest.Start reads no variables) beside a
// server given the same key as a file: a replica configured either way opens
// what the other sealed.
func TestPostgresControlPlaneKeyFromEnvironment(t *testing.T) {
	t.Parallel()
	flags, _, kr := pgControlPlaneFlags(t)
	a := apptest.Start(t, flags...)
	c := a.Client(apptest.ConnectProto)
	org := createOrg(t, c, "acme")
	pg := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "pg", Driver: "postgres"})
	apptest.PostgresEnvironmentCleanup(t, apptest.PostgresURL(t), pg.GetId())
	_, want := apptest.EnvironmentSecret(t, a.ControlPlane(t), kr, pg.GetId())

	var keyFlags []string
	for _, f := range flags {
		if !strings.HasPrefix(f, "--master-key-file=") {
			keyFlags = append(keyFlags, f)
		}
	}
	cfg, err := config.Parse(apptest.Args(t.TempDir(), keyFlags...), func(k string) string {
		if k == "ENVPLANE_MASTER_KEY" {
			return kr.Format()
		}
		return ""
	}, io.Discard)
	if err != nil {
		t.Fatalf("config.Parse with ENVPLANE_MASTER_KEY: %v", err)
	}
	var ring *secrets.Keyring
	var store controlplane.Store
	fxApp := fx.New(app.Options(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))), fx.Populate(&ring, &store))
	if err := fxApp.Err(); err != nil {
		t.Fatalf("fx.New: %v", err)
	}
	startCtx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := fxApp.Start(startCtx); err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fxApp.Stop(stopCtx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	if ring.Primary() != kr.Primary() {
		t.Errorf("the server's primary key is %q, want %q from ENVPLANE_MASTER_KEY", ring.Primary(), kr.Primary())
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "master.key")); err == nil {
		t.Errorf("a server given ENVPLANE_MASTER_KEY created a key file")
	}
	if _, got := apptest.EnvironmentSecret(t, store, ring, pg.GetId()); got != want {
		t.Errorf("the key from ENVPLANE_MASTER_KEY opens another secret than the key file")
	}
}

func TestPostgresControlPlaneTwoServers(t *testing.T) {
	t.Parallel()
	flags, _, kr := pgControlPlaneFlags(t)
	adminURL := apptest.PostgresURL(t)
	a := apptest.Start(t, flags...)
	b := apptest.Start(t, flags...)
	if b.Token != "" {
		t.Errorf("the second server minted its own admin token")
	}
	wantFile(t, filepath.Join(b.DataDir, "admin.token"), false)
	ca := a.Client(apptest.ConnectProto)
	cb := b.ClientWithToken(apptest.GRPC, a.Token)
	ctx := t.Context()

	org := createOrg(t, ca, "acme")
	dev := createEnv(t, ca, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite", Hostname: proto.String("dev.acme.test")})

	t.Run("written on A, read on B", func(t *testing.T) {
		if got, err := cb.GetOrganization(ctx, connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: org.GetId()})); err != nil || got.Msg.GetOrganization().GetSlug() != "acme" {
			t.Errorf("B GetOrganization = %v, %v", got, err)
		}
		if diff := diffEnv(dev, getEnv(t, cb, dev.GetId())); diff != "" {
			t.Errorf("B GetEnvironment (-A +B):\n%s", diff)
		}
		if envs := listEnvs(t, cb, org.GetId()); len(envs) != 1 || envs[0].GetId() != dev.GetId() {
			t.Errorf("B ListEnvironments = %v, want dev", envs)
		}
		resolved, err := cb.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "dev.acme.test"}))
		if err != nil || resolved.Msg.GetEnvironmentId() != dev.GetId() {
			t.Errorf("B ResolveHostname = %v, %v; want dev", resolved, err)
		}
	})

	t.Run("written on B, read on A", func(t *testing.T) {
		updateEnv(t, cb, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("dev2.acme.test")})
		resolved, err := ca.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "dev2.acme.test"}))
		if err != nil || resolved.Msg.GetEnvironmentId() != dev.GetId() {
			t.Errorf("A ResolveHostname(new hostname) = %v, %v; want dev", resolved, err)
		}
		_, err = ca.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "dev.acme.test"}))
		apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonHostnameNotFound)
	})

	t.Run("a credential sealed on A rotates on B", func(t *testing.T) {
		pg := createEnv(t, ca, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "pg", Driver: "postgres"})
		apptest.PostgresEnvironmentCleanup(t, adminURL, pg.GetId())
		store := a.ControlPlane(t)
		_, before := apptest.EnvironmentSecret(t, store, kr, pg.GetId())
		if _, err := cb.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: pg.GetId()})); err != nil {
			t.Fatalf("B RotateCredential: %v", err)
		}
		cred, after := apptest.EnvironmentSecret(t, store, kr, pg.GetId())
		if after == before || cred.KeyID != kr.Primary() {
			t.Errorf("the rotation on B did not store a new secret under the shared key")
		}
		pgWantConnects(t, pg.GetDatabaseUrl(), after)
		if _, err := ca.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: pg.GetId()})); err != nil {
			t.Fatalf("A DeleteEnvironment: %v", err)
		}
		pgWantGone(t, apptest.PostgresPool(t, adminURL), pg.GetId())
	})

	// raceAB runs n calls on A and n on B at once and returns their errors.
	raceAB := func(n int, call func(c client, i int) error) []error {
		errs := make([]error, 2*n)
		var start, done sync.WaitGroup
		start.Add(1)
		for i := range 2 * n {
			c := ca
			if i >= n {
				c = cb
			}
			done.Go(func() {
				start.Wait()
				errs[i] = call(c, i)
			})
		}
		start.Done()
		done.Wait()
		return errs
	}

	t.Run("one custom hostname, 10 creates on each server", func(t *testing.T) {
		errs := raceAB(10, func(c client, i int) error {
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: fmt.Sprintf("host-%d", i), Driver: "sqlite", Hostname: proto.String("shared.acme.test"),
			}))
			return err
		})
		w := wantOneWinner(t, errs, connect.CodeAlreadyExists, environment.ReasonHostnameTaken)
		var holders []string
		for _, e := range listEnvs(t, ca, org.GetId()) {
			if e.GetHostname() == "shared.acme.test" {
				holders = append(holders, e.GetSlug())
			}
		}
		if len(holders) != 1 || w >= 0 && holders[0] != fmt.Sprintf("host-%d", w) {
			t.Errorf("environments with the hostname: %q, want the winner host-%d only", holders, w)
		}
	})

	t.Run("one slug, 10 creates on each server", func(t *testing.T) {
		errs := raceAB(10, func(c client, i int) error {
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: "same", Driver: "sqlite", Hostname: proto.String(fmt.Sprintf("same-%d.acme.test", i)),
			}))
			return err
		})
		wantOneWinner(t, errs, connect.CodeAlreadyExists, environment.ReasonEnvironmentSlugTaken)
	})

	t.Run("is_default, 10 creates on each server", func(t *testing.T) {
		errs := raceAB(10, func(c client, i int) error {
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: fmt.Sprintf("default-%d", i), Driver: "sqlite", IsDefault: proto.Bool(true),
			}))
			return err
		})
		for i, err := range errs {
			if err != nil {
				t.Errorf("create default-%d: %v", i, err)
			}
		}
		envs := listEnvs(t, cb, org.GetId())
		if got := defaults(envs); len(got) != 1 || !strings.HasPrefix(got[0], "default-") {
			t.Errorf("default environments = %q, want exactly one of the racers", got)
		}
	})
}

// TestPGEmbeddedModeCreatesMasterKey: with neither --master-key-file nor
// ENVPLANE_MASTER_KEY, the embedded server makes <data-dir>/master.key, 0600,
// keeps it across restarts, and refuses one that others can read.
func TestPGEmbeddedModeCreatesMasterKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := apptest.StartDir(t, dir)
	path := filepath.Join(dir, "master.key")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("master key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Errorf("master key file mode %v, want a regular file with mode 0600", fi.Mode())
	}
	kr := env.Keyring(t)
	if len(kr.KeyIDs()) != 1 {
		t.Errorf("new key file holds keys %q, want one", kr.KeyIDs())
	}
	if lines := env.Logs.Find(map[string]any{"level": "INFO", "file": path}); len(lines) != 1 {
		t.Errorf("want one INFO line naming the new key file, got %d", len(lines))
	}
	_, key, _ := strings.Cut(strings.TrimSpace(kr.Format()), ":")
	if strings.Contains(env.Logs.String(), key) {
		t.Errorf("the server log holds the master key")
	}
	env.Stop(t)

	again := apptest.StartDir(t, dir)
	if got := again.Keyring(t); got.Format() != kr.Format() {
		t.Errorf("a restart changed the master key")
	}
	if lines := again.Logs.Find(map[string]any{"file": path}); len(lines) != 0 {
		t.Errorf("a restart logged creating the key file again: %v", lines)
	}
	again.Stop(t)

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := apptest.Config(t, dir)
	fxApp := fx.New(app.Options(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := fxApp.Err(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fxApp.Start(ctx); err == nil {
			_ = fxApp.Stop(ctx)
		}
		t.Errorf("a server started with a master key file readable by others")
	} else if !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("error %q does not say how to fix the key file's mode", err)
	}
}
