package controlplane_test

import (
	"io/fs"
	"path"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/envplane/envplane/internal/controlplane"
)

// TestSQLiteMigratesVersion6Forward opens a database left at schema version
// 6, with a token whose session points at an environment and an object
// definition of that environment: migration 7 rebuilds the environments
// table (with foreign keys off, so dropping the old one cascades nowhere),
// and afterwards the token's session, the definition and the environment's
// hostname are all still there, the hostname verified as "migrated", and the
// foreign keys enforced again.
func TestSQLiteMigratesVersion6Forward(t *testing.T) {
	ctx := t.Context()
	dbPath := filepath.Join(t.TempDir(), "cp.db")
	v6 := fstest.MapFS{}
	entries, err := fs.ReadDir(controlplane.SQLiteMigrations, controlplane.SQLiteMigrationsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() >= "0007" {
			continue
		}
		name := path.Join(controlplane.SQLiteMigrationsDir, e.Name())
		data, err := fs.ReadFile(controlplane.SQLiteMigrations, name)
		if err != nil {
			t.Fatal(err)
		}
		v6[name] = &fstest.MapFile{Data: data}
	}
	old := openRawAt(t, dbPath)
	if _, err := old.ExecContext(ctx, `PRAGMA foreign_keys = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := controlplane.Migrate(ctx, old, v6, controlplane.SQLiteMigrationsDir); err != nil {
		t.Fatalf("Migrate to version 6: %v", err)
	}
	const ts = "2026-01-01T00:00:00.000000000Z"
	if _, err := old.ExecContext(ctx, `INSERT INTO organizations (id, slug, display_name, create_time, update_time)
		VALUES ('org', 'acme', 'Acme', '`+ts+`', '`+ts+`');
		INSERT INTO environments (id, organization_id, slug, display_name, type, driver, status,
			status_message, is_default, hostname, region, storage_limit_mb, database_url,
			create_time, update_time)
		VALUES ('env', 'org', 'dev', 'Dev', 'development', 'sqlite', 'active', '', 1,
			'shop.example.com', '', 0, '', '`+ts+`', '`+ts+`');
		INSERT INTO tokens (id, name, organization_id, role, platform_admin, secret_hash, secret_prefix,
			created_by, create_time, active_environment_id)
		VALUES ('tok', 'ci', 'org', 'admin', 0, x'01', 'ep_', '', '`+ts+`', 'env');
		INSERT INTO object_definitions (environment_id, name, definition, version, create_time, update_time)
		VALUES ('env', 'tasks', x'7b7d', 1, '`+ts+`', '`+ts+`')`); err != nil {
		t.Fatalf("fill version 6: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLiteAt(t, dbPath)
	diff(t, "versions after the new binary opened", []int{1, 2, 3, 4, 5, 6, 7}, versions(t, s.WriteDB()))
	env, err := s.GetEnvironmentByHostname(ctx, "shop.example.com")
	if err != nil {
		t.Fatalf("the migrated hostname does not route: %v", err)
	}
	if env.ID != "env" || env.Proof.State != controlplane.HostnameVerified || env.Proof.Method != controlplane.VerifiedMigrated {
		t.Errorf("migrated environment %s: proof %+v, want verified by migration", env.ID, env.Proof)
	}
	tok, err := s.GetToken(ctx, "tok")
	if err != nil || tok.ActiveEnvironmentID != "env" {
		t.Errorf("token after migrating: session %q, %v; want the environment kept", tok.ActiveEnvironmentID, err)
	}
	if _, err := s.GetObjectDefinition(ctx, "env", "tasks"); err != nil {
		t.Errorf("object definition after migrating: %v, want it kept", err)
	}
	var fk int
	if err := s.WriteDB().QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys after migrating = %d (%v), want 1", fk, err)
	}
	// The references still hold: deleting the environment clears the session.
	if err := s.DeleteEnvironment(ctx, "env"); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.GetToken(ctx, "tok"); err != nil || tok.ActiveEnvironmentID != "" {
		t.Errorf("token after deleting its environment: session %q, %v; want none", tok.ActiveEnvironmentID, err)
	}
}
