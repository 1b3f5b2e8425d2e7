package controlplane_test

import (
	"bytes"
	"io/fs"
	"path"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
)

// TestSQLiteMigratesVersion2Forward opens, with this binary, a database that
// an older binary left at schema version 2 with data in it: the credentials
// migration is applied on open, the old environment reads back with no
// credential and not external, and the new columns work.
func TestSQLiteMigratesVersion2Forward(t *testing.T) {
	ctx := t.Context()
	dbPath := filepath.Join(t.TempDir(), "cp.db")

	// The embedded migrations as the old binary had them: 0001 and 0002.
	v2 := fstest.MapFS{}
	for _, base := range []string{"0001_init.sql", "0002_tokens.sql"} {
		name := path.Join(controlplane.SQLiteMigrationsDir, base)
		data, err := fs.ReadFile(controlplane.SQLiteMigrations, name)
		if err != nil {
			t.Fatal(err)
		}
		v2[name] = &fstest.MapFile{Data: data}
	}
	old := openRawAt(t, dbPath)
	if _, err := old.ExecContext(ctx, `PRAGMA foreign_keys = 1`); err != nil {
		t.Fatal(err)
	}
	applied, err := controlplane.Migrate(ctx, old, v2, controlplane.SQLiteMigrationsDir)
	if err != nil {
		t.Fatalf("Migrate to version 2: %v", err)
	}
	diff(t, "applied by the old binary", []int{1, 2}, applied)
	if _, err := old.ExecContext(ctx, `INSERT INTO organizations
		(id, slug, display_name, create_time, update_time)
		VALUES ('org', 'acme', 'Acme', '2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z');
		INSERT INTO environments (id, organization_id, slug, display_name, type, driver, status,
			status_message, is_default, hostname, region, storage_limit_mb, database_url,
			create_time, update_time)
		VALUES ('env', 'org', 'dev', 'Dev', 'development', 'postgres', 'active', '', 1,
			'dev.env.test', '', 0, 'postgres://db/dev', '2026-01-01T00:00:00.000000000Z',
			'2026-01-01T00:00:00.000000000Z')`); err != nil {
		t.Fatalf("fill version 2: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLiteAt(t, dbPath)
	diff(t, "versions after the new binary opened", []int{1, 2, 3, 4, 5, 6, 7}, versions(t, s.WriteDB()))
	env, err := s.GetEnvironment(ctx, "env")
	if err != nil {
		t.Fatalf("GetEnvironment after migrating: %v", err)
	}
	if c := env.Credential; env.ExternalDatabase || c.KeyID != "" || c.Ciphertext != nil || !c.RotateTime.IsZero() {
		t.Errorf("old environment after migrating: external %v, credential %+v; want neither", env.ExternalDatabase, env.Credential)
	}
	if env.Slug != "dev" || !env.IsDefault || env.DatabaseURL != "postgres://db/dev" {
		t.Errorf("old environment after migrating = %+v", env)
	}
	if !env.ResourcesMayExist {
		t.Errorf("old environment after migrating: ResourcesMayExist false, want true (nothing says its database was never made)")
	}

	cred := controlplane.Credential{KeyID: "k1", Ciphertext: []byte{0, 1, 2, 0xff}, RotateTime: time.Date(2026, 2, 3, 4, 5, 6, 789, time.UTC)}
	got, err := s.UpdateEnvironment(ctx, "env", controlplane.EnvironmentPatch{Credential: &cred})
	if err != nil {
		t.Fatalf("UpdateEnvironment(credential) after migrating: %v", err)
	}
	if got.Credential.KeyID != cred.KeyID || !bytes.Equal(got.Credential.Ciphertext, cred.Ciphertext) ||
		!got.Credential.RotateTime.Equal(cred.RotateTime) {
		t.Errorf("credential after migrating = %+v, want %+v", got.Credential, cred)
	}

	ext := controlplane.Environment{
		ID: newTokenID(), OrganizationID: "org", Slug: "byo", Type: "development", Driver: "postgres",
		Status: controlplane.StatusActive, Hostname: "byo.env.test", ExternalDatabase: true,
		CreateTime: time.Now(), UpdateTime: time.Now(),
	}
	stored, _, err := s.CreateEnvironment(ctx, ext, controlplane.DefaultNo)
	if err != nil || !stored.ExternalDatabase {
		t.Fatalf("CreateEnvironment(external) after migrating = %+v, %v", stored, err)
	}
}

// TestSQLiteCredentialSchema checks the rules the new environment columns
// enforce by themselves, with the store bypassed.
func TestSQLiteCredentialSchema(t *testing.T) {
	ctx := t.Context()
	s := openSQLiteAt(t, filepath.Join(t.TempDir(), "cp.db"))
	org, _, err := s.CreateOrganization(ctx, newOrg("acme"))
	if err != nil {
		t.Fatal(err)
	}
	env, _, err := s.CreateEnvironment(ctx, controlplane.Environment{
		ID: newTokenID(), OrganizationID: org.ID, Slug: "dev", Hostname: "dev.env.test",
		CreateTime: time.Now(), UpdateTime: time.Now(),
	}, controlplane.DefaultNo)
	if err != nil {
		t.Fatal(err)
	}
	const ts = "2026-01-01T00:00:00.000000000Z"
	for name, set := range map[string]string{
		"external_database 2":       `external_database = 2`,
		"external_database NULL":    `external_database = NULL`,
		"ciphertext without key id": `credential_ciphertext = x'01'`,
		"key id without ciphertext": `credential_key_id = 'k'`,
		"empty ciphertext":          `credential_key_id = 'k', credential_ciphertext = x''`,
		"rotate time alone":         `credential_rotate_time = '` + ts + `'`,
		"ciphertext as text":        `credential_key_id = 'k', credential_ciphertext = 'abc'`,
	} {
		if _, err := s.WriteDB().ExecContext(ctx, `UPDATE environments SET `+set+` WHERE id = ?`, env.ID); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, set := range map[string]string{
		"external":                 `external_database = 1`,
		"credential":               `credential_key_id = 'k', credential_ciphertext = x'01'`,
		"credential with rotation": `credential_key_id = 'k', credential_ciphertext = x'01', credential_rotate_time = '` + ts + `'`,
	} {
		if _, err := s.WriteDB().ExecContext(ctx, `UPDATE environments SET `+set+` WHERE id = ?`, env.ID); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
