package driverpg_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driverpg"
	"github.com/envplane/envplane/internal/driver/drivertest"
)

// postgresURLVar names the environment variable with the URL of the
// PostgreSQL server the tests run against; CI sets it. The role must be
// allowed to create databases: every test gets its own.
const postgresURLVar = "ENVPLANE_TEST_POSTGRES_URL"

// adminURL returns the test server's URL, skipping t when it is not
// configured, which is the only reason these tests skip.
func adminURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv(postgresURLVar)
	if u == "" {
		t.Skip(postgresURLVar + " is not set; set it to a PostgreSQL URL, e.g. " +
			"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable, to run the PostgreSQL tests")
	}
	return u
}

// newDatabase creates an empty database on the test server, so the test
// sees no other test's tables, and drops it when the test ends, closing any
// connection still open to it. It returns the database's URL.
func newDatabase(t *testing.T) string {
	t.Helper()
	admin := adminURL(t)
	name := "envplane_driver_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	dbURL, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("%s: %v", postgresURLVar, err)
	}
	adminExec(t, t.Context(), admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	t.Cleanup(func() {
		// t.Context is done by now; the drop gets its own deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		adminExec(t, ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return dbURL
}

// adminExec runs one statement on the database at url.
func adminExec(t *testing.T, ctx context.Context, url, stmt string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to %s: %v", postgresURLVar, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// withDatabase returns the URL admin with its database replaced by name.
func withDatabase(admin, name string) (string, error) {
	if !strings.HasPrefix(admin, "postgres://") && !strings.HasPrefix(admin, "postgresql://") {
		return "", fmt.Errorf("want a postgres:// URL")
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", err
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String(), nil
}

// conformanceOpen returns the open function of the conformance suite: one
// database for the whole run, and a new schema in it for every driver,
// reached through the search_path the driver's URL sets. Each driver sees
// only its own tables (and index names, which PostgreSQL scopes to the
// schema), as the suite requires, without a CREATE DATABASE per case, which
// costs half a second each.
func conformanceOpen(t *testing.T) func(t *testing.T) driver.Driver {
	dbURL := newDatabase(t)
	return func(t *testing.T) driver.Driver {
		t.Helper()
		schemaName := "s_" + strings.ReplaceAll(uuid.NewString(), "-", "")
		adminExec(t, t.Context(), dbURL, "CREATE SCHEMA "+pgx.Identifier{schemaName}.Sanitize())
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schemaName)
		u.RawQuery = q.Encode()
		d, err := driverpg.OpenURL(t.Context(), u.String())
		if err != nil {
			t.Fatalf("OpenURL: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, conformanceOpen(t))
}
