package provision

import (
	"context"
	"net/url"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/pgtest"
)

// TestPostgresCreatedNothingUnreachable: a cluster that cannot be reached
// got no statement, so the failure says nothing was created.
func TestPostgresCreatedNothingUnreachable(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	_, err := p.Provision(testContext(t), controlplane.Environment{ID: uuid.NewString()})
	if err == nil || !CreatedNothing(err) {
		t.Errorf("Provision on an unreachable cluster: CreatedNothing(%v) = false, want true", err)
	}
}

// TestPostgresCreatedSomething: an admin without CREATEDB creates the role
// and then fails at the database, so the failure must not say nothing was
// created.
func TestPostgresCreatedSomething(t *testing.T) {
	t.Parallel()
	su := superuser(t)
	ctx := testContext(t)
	adminRole := "envplane_test_admin_" + uuid.NewString()[:8]
	ident := pgx.Identifier{adminRole}.Sanitize()
	if _, err := su.Exec(ctx, "CREATE ROLE "+ident+" LOGIN CREATEROLE NOCREATEDB"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(adminRole)
	p := newTestPostgres(t, u.String())
	env := controlplane.Environment{ID: uuid.NewString(), Driver: DriverPostgres}
	name := mustName(t, env)
	t.Cleanup(func() {
		c := context.Background()
		for _, stmt := range []string{"DROP OWNED BY " + ident, "DROP ROLE IF EXISTS " + ident,
			"DROP ROLE IF EXISTS " + pgx.Identifier{name}.Sanitize()} {
			if _, err := su.Exec(c, stmt); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	_, err = p.Provision(ctx, env)
	if err == nil {
		t.Fatal("Provision by an admin without CREATEDB succeeded")
	}
	if CreatedNothing(err) {
		t.Errorf("Provision failed after creating the role, yet CreatedNothing(%v) = true", err)
	}
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the environment's role: %d, %v; want it made before the failure", n, err)
	}
}
