package controlplane_test

import (
	"database/sql"
	"io/fs"
	"path"
	"testing"
	"testing/fstest"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/pgtest"
)

// TestPostgresMigratesVersion6Forward is TestSQLiteMigratesVersion6Forward
// on PostgreSQL: a database left at version 6 with an environment holding a
// hostname, a token whose session points at it and an object definition of
// it; migration 7 keeps them all, the hostname verified as "migrated" and
// routing, and the one-verified-holder rule enforced from then on.
func TestPostgresMigratesVersion6Forward(t *testing.T) {
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t, "envplane_migrate7_")
	v6 := fstest.MapFS{}
	entries, err := fs.ReadDir(controlplane.PostgresMigrations, controlplane.PostgresMigrationsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() >= "0007" {
			continue
		}
		name := path.Join(controlplane.PostgresMigrationsDir, e.Name())
		data, err := fs.ReadFile(controlplane.PostgresMigrations, name)
		if err != nil {
			t.Fatal(err)
		}
		v6[name] = &fstest.MapFile{Data: data}
	}
	old, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controlplane.MigratePostgresFiles(ctx, old, v6, controlplane.PostgresMigrationsDir); err != nil {
		t.Fatalf("Migrate to version 6: %v", err)
	}
	const ts = "2026-01-01T00:00:00Z"
	for _, stmt := range []string{
		`INSERT INTO organizations (id, slug, display_name, create_time, update_time) VALUES ('org', 'acme', 'Acme', '` + ts + `', '` + ts + `')`,
		`INSERT INTO environments (id, organization_id, slug, display_name, type, driver, status, status_message, is_default,
			hostname, region, storage_limit_mb, database_url, create_time, update_time)
		VALUES ('env', 'org', 'dev', 'Dev', 'development', 'sqlite', 'active', '', true,
			'shop.example.com', '', 0, '', '` + ts + `', '` + ts + `')`,
		`INSERT INTO environments (id, organization_id, slug, display_name, type, driver, status, status_message, is_default,
			hostname, region, storage_limit_mb, database_url, create_time, update_time)
		VALUES ('env2', 'org', 'stg', 'Stg', 'staging', 'sqlite', 'active', '', false,
			'acme-stg.localhost', '', 0, '', '` + ts + `', '` + ts + `')`,
		`INSERT INTO tokens (id, name, organization_id, role, platform_admin, secret_hash, secret_prefix, created_by,
			create_time, active_environment_id)
		VALUES ('tok', 'ci', 'org', 'admin', false, '\x01', 'ep_', '', '` + ts + `', 'env')`,
		`INSERT INTO object_definitions (environment_id, name, definition, version, create_time, update_time)
		VALUES ('env', 'tasks', '{}', 1, '` + ts + `', '` + ts + `')`,
	} {
		if _, err := old.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("fill version 6: %v\n%s", err, stmt)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openPostgres(t, dbURL)
	for _, host := range []string{"shop.example.com", "acme-stg.localhost"} {
		env, err := s.GetEnvironmentByHostname(ctx, host)
		if err != nil {
			t.Fatalf("the migrated hostname %s does not route: %v", host, err)
		}
		if env.Proof.State != controlplane.HostnameVerified || env.Proof.Method != controlplane.VerifiedMigrated {
			t.Errorf("migrated %s: proof %+v, want verified by migration", host, env.Proof)
		}
	}
	tok, err := s.GetToken(ctx, "tok")
	if err != nil || tok.ActiveEnvironmentID != "env" {
		t.Errorf("token after migrating: session %q, %v; want the environment kept", tok.ActiveEnvironmentID, err)
	}
	if _, err := s.GetObjectDefinition(ctx, "env", "tasks"); err != nil {
		t.Errorf("object definition after migrating: %v, want it kept", err)
	}
	// One verified holder: taking the hostname verified for env2 is refused
	// (ErrHostnameTaken) while env holds it.
	_, err = s.UpdateEnvironment(ctx, "env2", controlplane.EnvironmentPatch{
		Hostname: ptrTo("shop.example.com"),
		Proof:    &controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedOperator},
	})
	if err == nil {
		t.Error("a second verified holder of the migrated hostname was accepted")
	}
}
