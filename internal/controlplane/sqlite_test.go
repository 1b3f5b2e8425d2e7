package controlplane_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/controlplane/storetest"
)

// openSQLite opens a store on a new file in a directory that does not exist
// yet, so every test also exercises creating it.
func openSQLite(t *testing.T) *controlplane.SQLite {
	t.Helper()
	s, err := controlplane.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "state", "controlplane.db"))
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) controlplane.Store { return openSQLite(t) })
}

func TestOpenSQLiteCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "cp.db")
	s, err := controlplane.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	defer s.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	if _, err := controlplane.OpenSQLite(t.Context(), ""); err == nil {
		t.Errorf("OpenSQLite(\"\") succeeded")
	}
}

// TestOpenSQLiteOddPath checks that characters meaningful in a DSN or URI
// cannot redirect the database or inject parameters.
func TestOpenSQLiteOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird #dir%20")
	path := filepath.Join(dir, "cp.db?mode=ro")
	s, err := controlplane.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	defer s.Close()
	org := newOrg("acme")
	if _, _, err := s.CreateOrganization(t.Context(), org); err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
}

func TestSQLitePragmas(t *testing.T) {
	s := openSQLite(t)
	ctx := t.Context()
	for name, db := range map[string]*sql.DB{"write": s.WriteDB(), "read": s.ReadDB()} {
		for pragma, want := range map[string]string{
			"journal_mode": "wal",
			"foreign_keys": "1",
			"busy_timeout": "10000",
			"synchronous":  "1", // NORMAL
		} {
			var got string
			if err := db.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatalf("%s pool: PRAGMA %s: %v", name, pragma, err)
			}
			if got != want {
				t.Errorf("%s pool: PRAGMA %s = %q, want %q", name, pragma, got, want)
			}
		}
	}
	var queryOnly int
	if err := s.ReadDB().QueryRowContext(ctx, "PRAGMA query_only").Scan(&queryOnly); err != nil || queryOnly != 1 {
		t.Errorf("read pool: PRAGMA query_only = %d, %v; want 1", queryOnly, err)
	}
	if _, err := s.ReadDB().ExecContext(ctx, `DELETE FROM organizations`); err == nil {
		t.Errorf("read pool wrote to the database")
	}
	// Foreign keys are enforced even when the store's own existence check
	// is bypassed.
	_, err := s.WriteDB().ExecContext(ctx, `INSERT INTO environments (id, organization_id, slug,
		display_name, type, driver, status, status_message, is_default, hostname, region,
		storage_limit_mb, database_url, create_time, update_time)
		VALUES ('e', 'missing', 's', '', '', '', '', '', 0, 'h', '', 0, '', '', '')`)
	if err == nil {
		t.Errorf("inserted an environment of a missing organization")
	}
}

func TestSQLiteReopenAppliesNothing(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cp.db")
	s, err := controlplane.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	org, _, err := s.CreateOrganization(ctx, newOrg("acme"))
	if err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	before := schemaMigrations(t, s.WriteDB())
	diff(t, "versions after the first open", []int{1, 2, 3, 4, 5, 6, 7}, versions(t, s.WriteDB()))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openSQLiteAt(t, path)
	diff(t, "schema_migrations after reopening", before, schemaMigrations(t, s.WriteDB()))
	got, err := s.GetOrganization(ctx, org.ID)
	if err != nil {
		t.Fatalf("GetOrganization after reopening: %v", err)
	}
	diff(t, "organization after reopening", org, got)
	applied, err := controlplane.Migrate(ctx, s.WriteDB(), controlplane.SQLiteMigrations, controlplane.SQLiteMigrationsDir)
	if err != nil || len(applied) != 0 {
		t.Errorf("migrating an up-to-date database applied %v, %v; want nothing", applied, err)
	}
}

func openSQLiteAt(t *testing.T, path string) *controlplane.SQLite {
	t.Helper()
	s, err := controlplane.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type migrationRow struct {
	version   int
	appliedAt string
}

func schemaMigrations(t *testing.T, db *sql.DB) []migrationRow {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.version, &r.appliedAt); err != nil {
			t.Fatal(err)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.appliedAt); err != nil {
			t.Errorf("applied_at %q: %v", r.appliedAt, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSQLiteTimesRoundTripToTheNanosecond checks what the conformance suite,
// which keeps to microseconds for PostgreSQL's sake, cannot.
func TestSQLiteTimesRoundTripToTheNanosecond(t *testing.T) {
	s := openSQLite(t)
	ctx := t.Context()
	zone := time.FixedZone("UTC-7", -7*60*60)
	org := newOrg("acme")
	org.CreateTime = time.Date(2026, 3, 4, 5, 6, 7, 123456789, zone)
	org.UpdateTime = time.Date(2026, 3, 4, 5, 6, 7, 1, time.UTC)
	if _, _, err := s.CreateOrganization(ctx, org); err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	env := controlplane.Environment{
		ID: uuid.Must(uuid.NewV7()).String(), OrganizationID: org.ID, Slug: "dev",
		Hostname: "dev.env.test", Status: controlplane.StatusActive,
		CreateTime:    time.Date(1999, 12, 31, 23, 59, 59, 999999999, zone),
		UpdateTime:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ProvisionTime: time.Date(2030, 6, 7, 8, 9, 10, 987654321, time.Local),
	}
	if _, _, err := s.CreateEnvironment(ctx, env, controlplane.DefaultNo); err != nil {
		t.Fatalf("CreateEnvironment: %v", err)
	}
	gotOrg, err := s.GetOrganization(ctx, org.ID)
	if err != nil {
		t.Fatal(err)
	}
	gotEnv, err := s.GetEnvironment(ctx, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want time.Time }{
		{gotOrg.CreateTime, org.CreateTime}, {gotOrg.UpdateTime, org.UpdateTime},
		{gotEnv.CreateTime, env.CreateTime}, {gotEnv.UpdateTime, env.UpdateTime},
		{gotEnv.ProvisionTime, env.ProvisionTime},
	} {
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
			t.Errorf("stored %v, read back %v; want the same instant in UTC", c.want, c.got)
		}
	}
}

func TestMigrate(t *testing.T) {
	ctx := t.Context()
	db := openRaw(t)
	files := fstest.MapFS{
		"m/2_parent.sql": {Data: []byte(`CREATE TABLE parent (id INTEGER PRIMARY KEY);
			-- two statements in one file
			INSERT INTO parent (id) VALUES (7);`)},
		// Version 10 sorts after 2 by number, not by name, and needs 2.
		"m/10_child.sql": {Data: []byte(`CREATE TABLE child (parent_id INTEGER REFERENCES parent (id));
			INSERT INTO child (parent_id) SELECT id FROM parent;`)},
		"m/README.md": {Data: []byte("not a migration")},
	}
	applied, err := controlplane.Migrate(ctx, db, files, "m")
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	diff(t, "applied", []int{2, 10}, applied)
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM child WHERE parent_id = 7`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("child rows = %d, %v; want 1", n, err)
	}

	applied, err = controlplane.Migrate(ctx, db, files, "m")
	if err != nil || len(applied) != 0 {
		t.Fatalf("second Migrate applied %v, %v; want nothing", applied, err)
	}

	files["m/11_more.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE child ADD COLUMN note TEXT;`)}
	applied, err = controlplane.Migrate(ctx, db, files, "m")
	if err != nil {
		t.Fatalf("Migrate with a new file: %v", err)
	}
	diff(t, "applied", []int{11}, applied)

	// A failing migration is rolled back whole and not recorded.
	files["m/12_broken.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE half (x INTEGER);
		INSERT INTO nowhere VALUES (1);`)}
	if _, err := controlplane.Migrate(ctx, db, files, "m"); err == nil {
		t.Fatalf("Migrate with a broken file succeeded")
	}
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'half'`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("broken migration left its table behind (%d, %v)", tables, err)
	}
	diff(t, "recorded versions", []int{2, 10, 11}, versions(t, db))

	// Fixing it applies it.
	files["m/12_broken.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE half (x INTEGER);`)}
	applied, err = controlplane.Migrate(ctx, db, files, "m")
	if err != nil {
		t.Fatalf("Migrate with the fixed file: %v", err)
	}
	diff(t, "applied", []int{12}, applied)

	// A binary older than the database refuses it.
	old := fstest.MapFS{"m/2_parent.sql": files["m/2_parent.sql"]}
	if _, err := controlplane.Migrate(ctx, db, old, "m"); err == nil {
		t.Errorf("Migrate with fewer migrations than recorded succeeded")
	}
}

func TestMigrateRejectsBadFolders(t *testing.T) {
	for name, files := range map[string]fstest.MapFS{
		"malformed name":    {"m/1-init.sql": {Data: []byte(`SELECT 1;`)}},
		"uppercase name":    {"m/1_Init.sql": {Data: []byte(`SELECT 1;`)}},
		"version zero":      {"m/0_init.sql": {Data: []byte(`SELECT 1;`)}},
		"duplicate version": {"m/1_a.sql": {Data: []byte(`SELECT 1;`)}, "m/01_b.sql": {Data: []byte(`SELECT 1;`)}},
		"no migrations":     {"m/README.md": {Data: []byte(`nothing`)}},
		"no folder":         {},
	} {
		t.Run(name, func(t *testing.T) {
			db := openRaw(t)
			if _, err := controlplane.Migrate(t.Context(), db, files, "m"); err == nil {
				t.Errorf("Migrate succeeded")
			}
			var n int
			err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n)
			if err == nil && n != 0 {
				t.Errorf("%d versions recorded", n)
			}
		})
	}
}

// TestMigrateConcurrently runs the runner from several connections at once,
// as several processes starting together would: each version is applied once.
func TestMigrateConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	files := fstest.MapFS{
		"m/1_a.sql": {Data: []byte(`CREATE TABLE a (x INTEGER);`)},
		"m/2_b.sql": {Data: []byte(`INSERT INTO a (x) VALUES (1);`)},
	}
	// The file exists, in WAL mode, before the migrations race, as the
	// store's writer makes it before it migrates: four connections racing
	// to create a file and switch its journal mode can be refused
	// SQLITE_BUSY without waiting, which is SQLite's, not the migrations'.
	if _, err := openRawAt(t, path).ExecContext(t.Context(), `PRAGMA journal_mode = WAL`); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			_, err = controlplane.Migrate(context.Background(), db, files, "m")
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("Migrate: %v", err)
		}
	}
	db := openRawAt(t, path)
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM a`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows in a = %d, %v; want 1", n, err)
	}
}

func openRaw(t *testing.T) *sql.DB {
	t.Helper()
	return openRawAt(t, filepath.Join(t.TempDir(), "m.db"))
}

func openRawAt(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func versions(t *testing.T, db *sql.DB) []int {
	t.Helper()
	var out []int
	for _, r := range schemaMigrations(t, db) {
		out = append(out, r.version)
	}
	return out
}

func newOrg(slug string) controlplane.Organization {
	now := time.Now()
	return controlplane.Organization{
		ID: uuid.Must(uuid.NewV7()).String(), Slug: slug, DisplayName: slug,
		CreateTime: now, UpdateTime: now,
	}
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmp.AllowUnexported(migrationRow{})); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}
