package controlplane_test

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
)

func newTokenID() string { return uuid.Must(uuid.NewV7()).String() }

func newTestToken(orgID string) controlplane.Token {
	id := newTokenID()
	h := sha256.Sum256([]byte(id))
	return controlplane.Token{
		ID: id, Name: "t", OrganizationID: orgID, Role: "admin",
		SecretHash: h[:], SecretPrefix: "ept_", CreateTime: time.Now(),
	}
}

// TestSQLiteMigratesVersion1Forward opens, with this binary, a database that
// an older binary left at schema version 1 with data in it: the tokens
// migration is applied on open, the data stays, and the new table works,
// references to the old tables included.
func TestSQLiteMigratesVersion1Forward(t *testing.T) {
	ctx := t.Context()
	dbPath := filepath.Join(t.TempDir(), "cp.db")

	// The embedded migrations as the old binary had them: 0001 alone.
	name := path.Join(controlplane.SQLiteMigrationsDir, "0001_init.sql")
	initSQL, err := fs.ReadFile(controlplane.SQLiteMigrations, name)
	if err != nil {
		t.Fatal(err)
	}
	v1 := fstest.MapFS{name: &fstest.MapFile{Data: initSQL}}
	old := openRawAt(t, dbPath)
	if _, err := old.ExecContext(ctx, `PRAGMA foreign_keys = 1`); err != nil {
		t.Fatal(err)
	}
	applied, err := controlplane.Migrate(ctx, old, v1, controlplane.SQLiteMigrationsDir)
	if err != nil {
		t.Fatalf("Migrate to version 1: %v", err)
	}
	diff(t, "applied by the old binary", []int{1}, applied)
	if _, err := old.ExecContext(ctx, `INSERT INTO organizations
		(id, slug, display_name, create_time, update_time)
		VALUES ('org', 'acme', 'Acme', '2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z');
		INSERT INTO environments (id, organization_id, slug, display_name, type, driver, status,
			status_message, is_default, hostname, region, storage_limit_mb, database_url,
			create_time, update_time)
		VALUES ('env', 'org', 'dev', 'Dev', 'development', 'postgres', 'active', '', 1,
			'dev.env.test', '', 0, '', '2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z')`); err != nil {
		t.Fatalf("fill version 1: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLiteAt(t, dbPath)
	diff(t, "versions after the new binary opened", []int{1, 2, 3, 4, 5, 6, 7}, versions(t, s.WriteDB()))
	org, err := s.GetOrganization(ctx, "org")
	if err != nil || org.Slug != "acme" {
		t.Fatalf("GetOrganization after migrating = %+v, %v", org, err)
	}
	env, err := s.GetEnvironment(ctx, "env")
	if err != nil || !env.IsDefault {
		t.Fatalf("GetEnvironment after migrating = %+v, %v", env, err)
	}
	if n, err := s.CountTokens(ctx); err != nil || n != 0 {
		t.Fatalf("CountTokens after migrating = %d, %v; want 0", n, err)
	}

	tok := newTestToken("org")
	tok.EnvironmentIDs = []string{"env"}
	if _, _, err := s.CreateToken(ctx, tok); err != nil {
		t.Fatalf("CreateToken after migrating: %v", err)
	}
	if err := s.SetActiveEnvironment(ctx, tok.ID, "env"); err != nil {
		t.Fatalf("SetActiveEnvironment after migrating: %v", err)
	}
	if err := s.DeleteEnvironment(ctx, "env"); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	got, err := s.GetToken(ctx, tok.ID)
	if err != nil || got.ActiveEnvironmentID != "" {
		t.Errorf("token after deleting its active environment = %q, %v; want none", got.ActiveEnvironmentID, err)
	}
	_, _, err = s.CreateToken(ctx, newTestToken("missing"))
	if !errors.Is(err, controlplane.ErrOrganizationMissing) {
		t.Errorf("CreateToken(missing organization) after migrating: %v, want ErrOrganizationMissing", err)
	}
	rows, err := s.WriteDB().QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if rows.Next() {
		t.Errorf("foreign_key_check reports violations after migrating")
	}
}

// TestSQLiteTokenSchema checks the rules the tokens table enforces by itself,
// with the store's own checks bypassed.
func TestSQLiteTokenSchema(t *testing.T) {
	s := openSQLite(t)
	ctx := t.Context()
	org, _, err := s.CreateOrganization(ctx, newOrg("acme"))
	if err != nil {
		t.Fatal(err)
	}
	insert := func(id, orgID, envIDs string, platformAdmin int, hash []byte, requestID any) error {
		_, err := s.WriteDB().ExecContext(ctx, `INSERT INTO tokens (id, name, organization_id, role,
			platform_admin, environment_ids, secret_hash, secret_prefix, request_id, created_by, create_time)
			VALUES (?, '', ?, '', ?, ?, ?, '', ?, '', '')`,
			id, nullIfEmpty(orgID), platformAdmin, envIDs, hash, requestID)
		return err
	}
	hash := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

	for name, err := range map[string]error{
		"missing organization":       insert("a", "missing", "[]", 0, hash("a"), nil),
		"environment ids not JSON":   insert("b", org.ID, "env", 0, hash("b"), nil),
		"environment ids not a list": insert("c", org.ID, `{"a":1}`, 0, hash("c"), nil),
		"platform_admin not a bool":  insert("d", org.ID, "[]", 2, hash("d"), nil),
		"empty secret hash":          insert("e", org.ID, "[]", 0, []byte{}, nil),
		"no secret hash":             insert("f", org.ID, "[]", 0, nil, nil),
	} {
		if err == nil {
			t.Errorf("inserted a token with %s", name)
		}
	}

	// Idempotency keys: unique per organization, platform tokens one scope.
	for _, orgID := range []string{"", org.ID} {
		if err := insert(newTokenID(), orgID, "[]", 0, hash("k1"+orgID), "req"); err != nil {
			t.Fatalf("insert with a request id: %v", err)
		}
		err := insert(newTokenID(), orgID, "[]", 0, hash("k2"+orgID), "req")
		if !controlplane.IsUniqueViolation(err, "index 'tokens_organization_request_id'") {
			t.Errorf("second request id in organization %q: %v, want the unique index to refuse it", orgID, err)
		}
		for i := range 2 {
			if err := insert(newTokenID(), orgID, "[]", 0, hash(string(rune('x'+i))+orgID), nil); err != nil {
				t.Errorf("insert without a request id: %v", err)
			}
		}
	}
	err = insert(newTokenID(), "", "[]", 0, hash("k1"), "other")
	if !controlplane.IsUniqueViolation(err, "tokens.secret_hash") {
		t.Errorf("taken secret hash: %v, want the unique column to refuse it", err)
	}

	// The store refuses an empty hash before the schema has to.
	empty := newTestToken(org.ID)
	empty.SecretHash = nil
	if _, _, err := s.CreateToken(ctx, empty); err == nil {
		t.Errorf("CreateToken with no secret hash succeeded")
	}

	// Deleting an organization takes its tokens along, not the platform's.
	before, err := s.CountTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteDB().ExecContext(ctx, `DELETE FROM organizations WHERE id = ?`, org.ID); err != nil {
		t.Fatalf("delete organization: %v", err)
	}
	after, err := s.CountTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before != 6 || after != 3 {
		t.Errorf("tokens before and after deleting the organization = %d, %d; want 6, 3", before, after)
	}
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TestSQLiteTokenQueryPlans checks that the token lookups the store makes
// are served by the indexes the migration creates for them.
func TestSQLiteTokenQueryPlans(t *testing.T) {
	s := openSQLite(t)
	for query, index := range map[string]string{
		`SELECT id FROM tokens WHERE coalesce(organization_id, '') = ? AND request_id = ?`: "tokens_organization_request_id",
		`SELECT id FROM tokens WHERE organization_id = ? AND id > ? ORDER BY id LIMIT 10`:  "tokens_organization_id_id",
		`SELECT id FROM tokens WHERE secret_hash = ?`:                                      "sqlite_autoindex_tokens_",
		`SELECT id FROM tokens WHERE active_environment_id = ?`:                            "tokens_active_environment_id",
	} {
		args := make([]any, strings.Count(query, "?"))
		for i := range args {
			args[i] = "x"
		}
		rows, err := s.ReadDB().QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+query, args...)
		if err != nil {
			t.Fatalf("EXPLAIN %s: %v", query, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "USING") || !strings.Contains(p, index) {
			t.Errorf("plan of %s = %q, want it to use %s", query, p, index)
		}
	}
}

// TestSQLiteTokenTimesToTheNanosecond checks what the conformance suite,
// which keeps to microseconds, cannot: token times round-trip exactly, and
// TouchToken orders times by instant whatever their zone.
func TestSQLiteTokenTimesToTheNanosecond(t *testing.T) {
	s := openSQLite(t)
	ctx := t.Context()
	zone := time.FixedZone("UTC-7", -7*60*60)
	tok := newTestToken("")
	tok.CreateTime = time.Date(2026, 3, 4, 5, 6, 7, 123456789, zone)
	tok.ExpireTime = time.Date(2027, 3, 4, 5, 6, 7, 1, zone)
	tok.RevokeTime = time.Date(2026, 6, 1, 0, 0, 0, 999999999, time.UTC)
	tok.LastUseTime = time.Date(2026, 5, 1, 0, 0, 0, 5, time.Local)
	if _, _, err := s.CreateToken(ctx, tok); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	// One nanosecond earlier, written in a zone whose text sorts later.
	earlier := tok.LastUseTime.Add(-time.Nanosecond).In(time.FixedZone("UTC+14", 14*60*60))
	if err := s.TouchToken(ctx, tok.ID, earlier); err != nil {
		t.Fatalf("TouchToken: %v", err)
	}
	got, err := s.GetToken(ctx, tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want time.Time }{
		{got.CreateTime, tok.CreateTime}, {got.ExpireTime, tok.ExpireTime},
		{got.RevokeTime, tok.RevokeTime}, {got.LastUseTime, tok.LastUseTime},
	} {
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
			t.Errorf("stored %v, read back %v; want the same instant in UTC", c.want, c.got)
		}
	}

	// Idempotency compares expire times as instants, to the nanosecond.
	retry := newTestToken("")
	retry.RequestID = "req"
	retry.ExpireTime = tok.ExpireTime
	if _, _, err := s.CreateToken(ctx, retry); err != nil {
		t.Fatal(err)
	}
	again := newTestToken("")
	again.RequestID = "req"
	again.ExpireTime = tok.ExpireTime.UTC()
	if _, created, err := s.CreateToken(ctx, again); err != nil || created {
		t.Errorf("retry with the same expire instant = created %v, %v; want the stored token", created, err)
	}
	again.ExpireTime = tok.ExpireTime.Add(time.Nanosecond)
	if _, _, err := s.CreateToken(ctx, again); !errors.Is(err, controlplane.ErrRequestReused) {
		t.Errorf("retry with an expire time 1ns later: %v, want ErrRequestReused", err)
	}
}
