package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/controlplane/storetest"
	"github.com/envplane/envplane/internal/pgtest"
)

// withParam returns the connection string conn with the parameter set.
func withParam(conn, key, value string) (string, error) {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err != nil {
			return "", err
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return conn + " " + key + "=" + value, nil
}

// openPostgres opens a store on dbURL and closes it when t ends.
func openPostgres(t *testing.T, dbURL string) *controlplane.Postgres {
	t.Helper()
	s, err := controlplane.OpenPostgres(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// connectPostgres opens a plain connection to dbURL, for looking at the
// schema behind the store's back; it is closed when t ends.
func connectPostgres(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestPostgresConformance(t *testing.T) {
	pgtest.URL(t)
	storetest.Run(t, func(t *testing.T) controlplane.Store {
		return openPostgres(t, pgtest.NewDatabase(t, "envplane_test_"))
	})
}

// TestPostgresOneConnection drives every store method, error paths and
// races included, through a pool of a single connection: a method that held
// a connection while waiting for another would hang, and the deadline turns
// that into a failure. It also checks the error order PostgreSQL does not
// give by itself: a missing organization is reported before a taken
// hostname or an unknown active environment, as by SQLite.
func TestPostgresOneConnection(t *testing.T) {
	t.Parallel()
	dbURL, err := withParam(pgtest.NewDatabase(t, "envplane_test_"), "pool_max_conns", "1")
	if err != nil {
		t.Fatal(err)
	}
	s := openPostgres(t, dbURL)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	want := func(what string, err, target error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Fatalf("%s: error %v, want %v", what, err, target)
		}
	}

	org, _, err := s.CreateOrganization(ctx, newOrg("acme"))
	must("CreateOrganization", err)
	_, _, err = s.CreateOrganization(ctx, newOrg("acme"))
	want("CreateOrganization(taken slug)", err, controlplane.ErrOrganizationExists)
	first, _, err := s.CreateEnvironment(ctx, newPgEnv(org.ID, "first"), controlplane.DefaultIfFirst)
	must("CreateEnvironment(DefaultIfFirst)", err)
	retried := newPgEnv(org.ID, "second")
	retried.RequestID = "req-1"
	second, _, err := s.CreateEnvironment(ctx, retried, controlplane.DefaultYes)
	must("CreateEnvironment(DefaultYes)", err)
	retried.ID = uuid.NewString()
	if got, created, err := s.CreateEnvironment(ctx, retried, controlplane.DefaultYes); err != nil || created || got.ID != second.ID {
		t.Fatalf("retried CreateEnvironment = %s, created %v, %v; want %s", got.ID, created, err, second.ID)
	}
	taken := newPgEnv(org.ID, "third")
	taken.Hostname = first.Hostname
	_, _, err = s.CreateEnvironment(ctx, taken, controlplane.DefaultYes)
	want("CreateEnvironment(taken hostname)", err, controlplane.ErrHostnameTaken)
	for _, mode := range []controlplane.DefaultMode{controlplane.DefaultIfFirst, controlplane.DefaultYes, controlplane.DefaultNo} {
		taken.OrganizationID = uuid.NewString()
		_, _, err = s.CreateEnvironment(ctx, taken, mode)
		want(fmt.Sprintf("CreateEnvironment(mode %d, missing organization, taken hostname)", mode), err, controlplane.ErrOrganizationMissing)
	}
	_, err = s.UpdateEnvironment(ctx, first.ID, controlplane.EnvironmentPatch{IsDefault: ptrTo(true)})
	must("UpdateEnvironment(IsDefault)", err)
	_, err = s.UpdateEnvironment(ctx, first.ID, controlplane.EnvironmentPatch{Hostname: &second.Hostname})
	want("UpdateEnvironment(taken hostname)", err, controlplane.ErrHostnameTaken)
	_, err = s.UpdateEnvironment(ctx, uuid.NewString(), controlplane.EnvironmentPatch{IsDefault: ptrTo(true)})
	want("UpdateEnvironment(unknown)", err, controlplane.ErrNotFound)

	tok := newTestToken(org.ID)
	tok.RequestID = "req-1"
	tok, _, err = s.CreateToken(ctx, tok)
	must("CreateToken", err)
	again := newTestToken(org.ID)
	again.RequestID = "req-1"
	if got, created, err := s.CreateToken(ctx, again); err != nil || created || got.ID != tok.ID {
		t.Fatalf("retried CreateToken = %s, created %v, %v; want %s", got.ID, created, err, tok.ID)
	}
	ghost := newTestToken(org.ID)
	ghost.ActiveEnvironmentID = uuid.NewString()
	_, _, err = s.CreateToken(ctx, ghost)
	want("CreateToken(unknown active environment)", err, controlplane.ErrNotFound)
	ghost.OrganizationID = uuid.NewString()
	_, _, err = s.CreateToken(ctx, ghost)
	want("CreateToken(missing organization, unknown active environment)", err, controlplane.ErrOrganizationMissing)
	must("SetActiveEnvironment", s.SetActiveEnvironment(ctx, tok.ID, second.ID))
	want("SetActiveEnvironment(unknown environment)", s.SetActiveEnvironment(ctx, tok.ID, uuid.NewString()), controlplane.ErrNotFound)
	must("TouchToken", s.TouchToken(ctx, tok.ID, time.Now()))
	_, err = s.RevokeToken(ctx, tok.ID, time.Now())
	must("RevokeToken", err)
	_, err = s.ListTokens(ctx, org.ID, controlplane.Page{})
	must("ListTokens", err)
	_, err = s.CountTokens(ctx)
	must("CountTokens", err)
	must("DeleteEnvironment", s.DeleteEnvironment(ctx, second.ID))
	if got, err := s.GetToken(ctx, tok.ID); err != nil || got.ActiveEnvironmentID != "" {
		t.Errorf("token after deleting its active environment: %q, %v; want none", got.ActiveEnvironmentID, err)
	}

	// Racers queue for the one connection; the default still ends up single.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			mode := []controlplane.DefaultMode{controlplane.DefaultYes, controlplane.DefaultIfFirst}[i%2]
			_, _, errs[i] = s.CreateEnvironment(ctx, newPgEnv(org.ID, fmt.Sprintf("race-%d", i)), mode)
		})
	}
	wg.Wait()
	must("racing creates", errors.Join(errs...))
	envs, err := s.ListEnvironments(ctx, org.ID, controlplane.Page{})
	must("ListEnvironments", err)
	defaults := 0
	for _, e := range envs {
		if e.IsDefault {
			defaults++
		}
	}
	if defaults != 1 {
		t.Errorf("%d defaults, want 1", defaults)
	}
}

// TestOpenPostgresRefusesBadURLs needs no server: every URL fails before or
// at connecting, with an error that does not reveal the password.
func TestOpenPostgresRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for name, u := range map[string]string{
		"empty":       "",
		"malformed":   "postgres://user:hunter2@127.0.0.1:notaport/db",
		"unreachable": "postgres://user:hunter2@127.0.0.1:1/db?sslmode=disable&connect_timeout=5",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := controlplane.OpenPostgres(t.Context(), u)
			if err == nil {
				_ = s.Close()
				t.Fatalf("OpenPostgres(%q) succeeded", u)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error reveals the password: %v", err)
			}
		})
	}
}

type pgMigrationRow struct {
	Version   int
	AppliedAt string
}

func pgSchemaMigrations(t *testing.T, conn *pgx.Conn) []pgMigrationRow {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pgMigrationRow])
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return out
}

func pgVersions(t *testing.T, conn *pgx.Conn) []int {
	t.Helper()
	var out []int
	for _, r := range pgSchemaMigrations(t, conn) {
		out = append(out, r.Version)
	}
	return out
}

func TestPostgresReopenAppliesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t, "envplane_test_")
	s, err := controlplane.OpenPostgres(ctx, dbURL)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	org, _, err := s.CreateOrganization(ctx, newOrg("acme"))
	if err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	newEnv := newPgEnv(org.ID, "dev")
	newEnv.ExternalDatabase = true
	newEnv.Credential = controlplane.Credential{KeyID: "k1", Ciphertext: []byte{0, 1, 0xff}, RotateTime: time.Now()}
	env, _, err := s.CreateEnvironment(ctx, newEnv, controlplane.DefaultIfFirst)
	if err != nil {
		t.Fatalf("CreateEnvironment: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	conn := connectPostgres(t, dbURL)
	before := pgSchemaMigrations(t, conn)
	diff(t, "versions after the first open", []int{1, 2, 3, 4, 5, 6, 7}, pgVersions(t, conn))

	s = openPostgres(t, dbURL)
	diff(t, "schema_migrations after reopening", before, pgSchemaMigrations(t, conn))
	got, err := s.GetOrganization(ctx, org.ID)
	if err != nil {
		t.Fatalf("GetOrganization after reopening: %v", err)
	}
	diff(t, "organization after reopening", org, got)
	gotEnv, err := s.GetEnvironment(ctx, env.ID)
	if err != nil {
		t.Fatalf("GetEnvironment after reopening: %v", err)
	}
	diff(t, "environment after reopening", env, gotEnv)
	applied, err := controlplane.MigratePostgres(ctx, s)
	if err != nil || len(applied) != 0 {
		t.Errorf("migrating an up-to-date database applied %v, %v; want nothing", applied, err)
	}
	diff(t, "schema_migrations after migrating again", before, pgSchemaMigrations(t, conn))
}

// TestPostgresReplicasMigrateTogether opens several stores on one new
// database at once, as replicas starting together would: all succeed, each
// version is applied once, and every store works.
func TestPostgresReplicasMigrateTogether(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t, "envplane_test_")
	const replicas = 4
	stores := make([]*controlplane.Postgres, replicas)
	errs := make([]error, replicas)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = controlplane.OpenPostgres(t.Context(), dbURL)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: OpenPostgres: %v", i, err)
			continue
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	if t.Failed() {
		t.FailNow()
	}
	diff(t, "versions", []int{1, 2, 3, 4, 5, 6, 7}, pgVersions(t, connectPostgres(t, dbURL)))
	for i, s := range stores {
		if _, _, err := s.CreateOrganization(t.Context(), newOrg(fmt.Sprintf("org-%d", i))); err != nil {
			t.Errorf("replica %d: CreateOrganization: %v", i, err)
		}
	}
}

// TestPostgresRacesAcrossStores races two stores, each its own pool as two
// replicas of the control plane would be, on one database: the rules hold
// between processes, not just between goroutines sharing a pool.
func TestPostgresRacesAcrossStores(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t, "envplane_test_")
	stores := []*controlplane.Postgres{openPostgres(t, dbURL), openPostgres(t, dbURL)}
	const perStore = 10
	// race runs fn from perStore goroutines on each store at once; i
	// numbers the goroutines across both stores.
	race := func(fn func(s *controlplane.Postgres, i int) error) []error {
		errs := make([]error, perStore*len(stores))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range errs {
			s := stores[i%len(stores)]
			wg.Go(func() {
				<-start
				errs[i] = fn(s, i)
			})
		}
		close(start)
		wg.Wait()
		return errs
	}
	ctx := t.Context()
	s := stores[0]
	countDefaults := func(orgID string) int {
		t.Helper()
		envs, err := s.ListEnvironments(ctx, orgID, controlplane.Page{Limit: 1000})
		if err != nil {
			t.Fatalf("ListEnvironments: %v", err)
		}
		n := 0
		for _, e := range envs {
			if e.IsDefault {
				n++
			}
		}
		return n
	}

	t.Run("Hostname", func(t *testing.T) {
		a, _, errA := s.CreateOrganization(ctx, newOrg("hostname-a"))
		b, _, errB := s.CreateOrganization(ctx, newOrg("hostname-b"))
		if err := errors.Join(errA, errB); err != nil {
			t.Fatalf("CreateOrganization: %v", err)
		}
		errs := race(func(s *controlplane.Postgres, i int) error {
			orgID := []string{a.ID, b.ID}[i%2]
			env := newPgEnv(orgID, fmt.Sprintf("env-%d", i))
			env.Hostname = "contested.env.test"
			_, _, err := s.CreateEnvironment(ctx, env, controlplane.DefaultIfFirst)
			return err
		})
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, controlplane.ErrHostnameTaken):
				t.Errorf("racer %d: %v, want nil or ErrHostnameTaken", i, err)
			}
		}
		if won != 1 {
			t.Errorf("%d racers created the hostname, want exactly 1", won)
		}
	})

	t.Run("Default", func(t *testing.T) {
		org, _, err := s.CreateOrganization(ctx, newOrg("default"))
		if err != nil {
			t.Fatalf("CreateOrganization: %v", err)
		}
		ids := make([]string, perStore*len(stores))
		for i := range ids {
			env, _, err := s.CreateEnvironment(ctx, newPgEnv(org.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultNo)
			if err != nil {
				t.Fatalf("CreateEnvironment: %v", err)
			}
			ids[i] = env.ID
		}
		// Every racer moves the default a few times, alternating the three
		// ways of taking it: patching, DefaultYes and DefaultIfFirst.
		errs := race(func(s *controlplane.Postgres, i int) error {
			for round := range 3 {
				var err error
				switch (i + round) % 3 {
				case 0:
					_, err = s.UpdateEnvironment(ctx, ids[i], controlplane.EnvironmentPatch{IsDefault: ptrTo(true)})
				case 1:
					_, _, err = s.CreateEnvironment(ctx, newPgEnv(org.ID, fmt.Sprintf("yes-%d-%d", i, round)), controlplane.DefaultYes)
				case 2:
					_, _, err = s.CreateEnvironment(ctx, newPgEnv(org.ID, fmt.Sprintf("first-%d-%d", i, round)), controlplane.DefaultIfFirst)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		for i, err := range errs {
			if err != nil {
				t.Errorf("racer %d: %v", i, err)
			}
		}
		if n := countDefaults(org.ID); n != 1 {
			t.Errorf("%d defaults, want exactly 1", n)
		}
	})

	t.Run("DefaultIfFirst", func(t *testing.T) {
		org, _, err := s.CreateOrganization(ctx, newOrg("if-first"))
		if err != nil {
			t.Fatalf("CreateOrganization: %v", err)
		}
		var mu sync.Mutex
		made := 0
		errs := race(func(s *controlplane.Postgres, i int) error {
			env, _, err := s.CreateEnvironment(ctx, newPgEnv(org.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultIfFirst)
			if env.IsDefault {
				mu.Lock()
				made++
				mu.Unlock()
			}
			return err
		})
		for i, err := range errs {
			if err != nil {
				t.Errorf("racer %d: %v", i, err)
			}
		}
		if made != 1 || countDefaults(org.ID) != 1 {
			t.Errorf("%d creates returned IsDefault and %d are stored so, want exactly 1", made, countDefaults(org.ID))
		}
	})

	t.Run("RequestID", func(t *testing.T) {
		org, _, err := s.CreateOrganization(ctx, newOrg("request"))
		if err != nil {
			t.Fatalf("CreateOrganization: %v", err)
		}
		type result struct {
			orgID, envID, tokenID string
			created               int
		}
		results := make([]result, perStore*len(stores))
		errs := race(func(s *controlplane.Postgres, i int) error {
			o := newOrg("retried")
			o.RequestID = "req-1"
			gotOrg, c1, err1 := s.CreateOrganization(ctx, o)
			e := newPgEnv(org.ID, "retried")
			e.Hostname = "retried.env.test"
			e.RequestID = "req-1"
			gotEnv, c2, err2 := s.CreateEnvironment(ctx, e, controlplane.DefaultYes)
			tok := newTestToken(org.ID)
			tok.RequestID = "req-1"
			gotTok, c3, err3 := s.CreateToken(ctx, tok)
			results[i] = result{gotOrg.ID, gotEnv.ID, gotTok.ID, countTrue(c1, c2, c3)}
			return errors.Join(err1, err2, err3)
		})
		created := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("racer %d: %v", i, err)
			}
			created += results[i].created
			r, first := results[i], results[0]
			if r.orgID != first.orgID || r.envID != first.envID || r.tokenID != first.tokenID {
				t.Errorf("racer %d got %+v, racer 0 %+v; want the same rows", i, r, first)
			}
		}
		if created != 3 {
			t.Errorf("%d creates reported created, want 3 (one of each)", created)
		}
	})
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func ptrTo[T any](v T) *T { return &v }

func newPgEnv(orgID, slug string) controlplane.Environment {
	now := time.Now()
	id := uuid.Must(uuid.NewV7()).String()
	return controlplane.Environment{
		ID: id, OrganizationID: orgID, Slug: slug, DisplayName: slug,
		Type: "development", Driver: "postgres", Status: controlplane.StatusProvisioning,
		Hostname: slug + "-" + id[len(id)-12:] + ".env.test", Region: "eu-west-1",
		StorageLimitMB: 1024, CreateTime: now, UpdateTime: now,
	}
}

// TestPostgresTimesToTheMicrosecond checks what the conformance suite, which
// keeps to microseconds, cannot: finer times are truncated, consistently, to
// what PostgreSQL stores, come back in UTC, and a token retry is compared
// with the stored expire time at that precision.
func TestPostgresTimesToTheMicrosecond(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openPostgres(t, pgtest.NewDatabase(t, "envplane_test_"))
	zone := time.FixedZone("UTC-7", -7*60*60)
	org := newOrg("acme")
	org.CreateTime = time.Date(2026, 3, 4, 5, 6, 7, 123456789, zone)
	org.UpdateTime = time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	stored, _, err := s.CreateOrganization(ctx, org)
	if err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	read, err := s.GetOrganization(ctx, org.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want time.Time }{
		{stored.CreateTime, time.Date(2026, 3, 4, 12, 6, 7, 123456000, time.UTC)},
		{read.CreateTime, time.Date(2026, 3, 4, 12, 6, 7, 123456000, time.UTC)},
		{stored.UpdateTime, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
		{read.UpdateTime, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
	} {
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
			t.Errorf("read back %v, want %v in UTC", c.got, c.want)
		}
	}

	// Same microsecond, other nanoseconds: the same expire time.
	expire := time.Date(2030, 1, 2, 3, 4, 5, 678901234, zone)
	first := newTestToken(org.ID)
	first.RequestID = "req-1"
	first.ExpireTime = expire
	tok, created, err := s.CreateToken(ctx, first)
	if err != nil || !created {
		t.Fatalf("CreateToken = created %v, %v; want created", created, err)
	}
	if want := expire.Truncate(time.Microsecond); !tok.ExpireTime.Equal(want) {
		t.Errorf("ExpireTime %v, want %v", tok.ExpireTime, want)
	}
	retry := newTestToken(org.ID)
	retry.RequestID = "req-1"
	retry.ExpireTime = expire.Truncate(time.Microsecond).Add(999 * time.Nanosecond).UTC()
	got, created, err := s.CreateToken(ctx, retry)
	if err != nil || created || got.ID != tok.ID {
		t.Errorf("retry within the same microsecond = %s, created %v, %v; want the stored %s", got.ID, created, err, tok.ID)
	}
	retry.ExpireTime = expire.Add(time.Microsecond)
	if _, _, err := s.CreateToken(ctx, retry); !errors.Is(err, controlplane.ErrRequestReused) {
		t.Errorf("retry a microsecond later: %v, want ErrRequestReused", err)
	}
}

// TestPostgresSchema checks the rules the Store API cannot reach: every
// constraint name the store maps errors by exists, deleting an organization
// is refused while it has environments and takes its tokens with it, and the
// foreign keys hold for rows written behind the store's back.
func TestPostgresSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t, "envplane_test_")
	s := openPostgres(t, dbURL)
	conn := connectPostgres(t, dbURL)

	for _, name := range controlplane.PostgresConstraintNames {
		var n int
		if err := conn.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_constraint WHERE conname = $1) +
			(SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1)`,
			name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("the schema has no constraint or index %q", name)
		}
	}

	org, _, err := s.CreateOrganization(ctx, newOrg("acme"))
	if err != nil {
		t.Fatal(err)
	}
	env, _, err := s.CreateEnvironment(ctx, newPgEnv(org.ID, "dev"), controlplane.DefaultIfFirst)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.CreateToken(ctx, newTestToken(org.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM organizations WHERE id = $1`, org.ID); err == nil {
		t.Fatalf("deleted an organization that has environments")
	}
	if _, err := conn.Exec(ctx, `INSERT INTO environments (id, organization_id, slug,
		display_name, type, driver, status, status_message, is_default, hostname, region,
		storage_limit_mb, database_url, create_time, update_time)
		VALUES ('e', 'missing', 's', '', '', '', '', '', false, 'h', '', 0, '', now(), now())`); err == nil {
		t.Errorf("inserted an environment of a missing organization")
	}
	if err := s.DeleteEnvironment(ctx, env.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM organizations WHERE id = $1`, org.ID); err != nil {
		t.Fatalf("delete an organization without environments: %v", err)
	}
	if _, err := s.GetToken(ctx, tok.ID); !errors.Is(err, controlplane.ErrNotFound) {
		t.Errorf("token of a deleted organization: GetToken error %v, want ErrNotFound", err)
	}
}
