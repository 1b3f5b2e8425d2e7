package controlplane_test

import (
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
)

// TestSQLiteRequestDigestMigration opens, with this binary, a database that an
// older binary left at schema version 3 with rows created under request ids:
// they read back without a digest, and retries of their creates are still
// told apart by the client-supplied fields.
func TestSQLiteRequestDigestMigration(t *testing.T) {
	ctx := t.Context()
	dbPath := filepath.Join(t.TempDir(), "cp.db")

	v3 := fstest.MapFS{}
	for _, base := range []string{"0001_init.sql", "0002_tokens.sql", "0003_environment_credentials.sql"} {
		name := path.Join(controlplane.SQLiteMigrationsDir, base)
		data, err := fs.ReadFile(controlplane.SQLiteMigrations, name)
		if err != nil {
			t.Fatal(err)
		}
		v3[name] = &fstest.MapFile{Data: data}
	}
	old := openRawAt(t, dbPath)
	if _, err := controlplane.Migrate(ctx, old, v3, controlplane.SQLiteMigrationsDir); err != nil {
		t.Fatalf("Migrate to version 3: %v", err)
	}
	const ts = "2026-01-01T00:00:00.000000000Z"
	if _, err := old.ExecContext(ctx, `INSERT INTO organizations
		(id, slug, display_name, request_id, create_time, update_time)
		VALUES ('org', 'acme', 'Acme', 'req-org', '`+ts+`', '`+ts+`');
		INSERT INTO environments (id, organization_id, slug, display_name, type, driver, status,
			status_message, is_default, hostname, region, storage_limit_mb, database_url,
			request_id, create_time, update_time)
		VALUES ('env', 'org', 'dev', 'Dev', 'development', 'postgres', 'active', '', 1,
			'dev.env.test', '', 0, 'postgres://db/dev', 'req-env', '`+ts+`', '`+ts+`');
		INSERT INTO tokens (id, name, organization_id, role, platform_admin, secret_hash,
			secret_prefix, request_id, created_by, create_time)
		VALUES ('tok', 'ci', 'org', 'developer', 0, x'01', 'ept_', 'req-tok', '', '`+ts+`')`); err != nil {
		t.Fatalf("fill version 3: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLiteAt(t, dbPath)
	now := time.Now()
	org := controlplane.Organization{ID: "org-2", Slug: "acme", DisplayName: "Acme",
		RequestID: "req-org", RequestDigest: "d", CreateTime: now, UpdateTime: now}
	if got, created, err := s.CreateOrganization(ctx, org); err != nil || created || got.ID != "org" || got.RequestDigest != "" {
		t.Errorf("retried old organization = %+v, created %v, %v; want the stored one, no digest", got, created, err)
	}
	org.DisplayName = "Other"
	if _, _, err := s.CreateOrganization(ctx, org); !errors.Is(err, controlplane.ErrRequestReused) {
		t.Errorf("old organization request id with another name: %v, want ErrRequestReused", err)
	}

	env := controlplane.Environment{ID: "env-2", OrganizationID: "org", Slug: "dev", DisplayName: "Dev",
		Type: "development", Driver: "postgres", Hostname: "dev.env.test", RequestID: "req-env",
		RequestDigest: "d", CreateTime: now, UpdateTime: now}
	if got, created, err := s.CreateEnvironment(ctx, env, controlplane.DefaultNo); err != nil || created || got.ID != "env" {
		t.Errorf("retried old environment = %+v, created %v, %v; want the stored one", got, created, err)
	}
	env.Hostname = "other.env.test"
	if _, _, err := s.CreateEnvironment(ctx, env, controlplane.DefaultNo); !errors.Is(err, controlplane.ErrRequestReused) {
		t.Errorf("old environment request id with another hostname: %v, want ErrRequestReused", err)
	}

	tok := controlplane.Token{ID: "tok-2", Name: "ci", OrganizationID: "org", Role: "developer",
		SecretHash: []byte{2}, RequestID: "req-tok", RequestDigest: "d", CreateTime: now}
	if got, created, err := s.CreateToken(ctx, tok); err != nil || created || got.ID != "tok" {
		t.Errorf("retried old token = %+v, created %v, %v; want the stored one", got, created, err)
	}
	tok.Role = "viewer"
	if _, _, err := s.CreateToken(ctx, tok); !errors.Is(err, controlplane.ErrRequestReused) {
		t.Errorf("old token request id with another role: %v, want ErrRequestReused", err)
	}
}
