// Package pgtest gives tests a PostgreSQL server: the one CI names in
// ENVPLANE_TEST_POSTGRES_URL, and a fresh database per test so tests never
// see each other's rows. It is the one place that decides when PostgreSQL
// tests skip: only when that variable is unset.
package pgtest

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// URLVar names the environment variable with the URL of the PostgreSQL
// server the tests run against; CI sets it. The role must be allowed to
// create databases and roles.
const URLVar = "ENVPLANE_TEST_POSTGRES_URL"

// URL returns the test server's URL, skipping tb when it is not configured.
func URL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv(URLVar)
	if u == "" {
		tb.Skip("ENVPLANE_TEST_POSTGRES_URL is not set; set it to a PostgreSQL URL, e.g. " +
			"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable, to run the PostgreSQL tests")
	}
	return u
}

// NewDatabase creates an empty database named prefix+<random> on the test
// server and drops it when the test ends, closing any connection still open
// to it. It returns the database's URL.
func NewDatabase(tb testing.TB, prefix string) string {
	tb.Helper()
	admin := URL(tb)
	name := prefix + strings.ReplaceAll(uuid.NewString(), "-", "")
	dbURL, err := WithDatabase(admin, name)
	if err != nil {
		tb.Fatalf("%s: %v", URLVar, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	Exec(tb, ctx, admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	tb.Cleanup(func() {
		// The test's context is done by now; the drop gets its own deadline,
		// a long one: DROP DATABASE waits for a checkpoint and for the
		// sessions it terminates, which a loaded CI machine (every package's
		// tests at once) has been seen to take more than 30 s over.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		Exec(tb, ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return dbURL
}

// Exec runs one statement on the database at url.
func Exec(tb testing.TB, ctx context.Context, url, stmt string) {
	tb.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("connect to %s: %v", URLVar, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, stmt); err != nil {
		tb.Fatalf("%s: %v", stmt, err)
	}
}

// WithDatabase returns the connection string admin pointed at the database
// name instead, for either form pgx accepts.
func WithDatabase(admin, name string) (string, error) {
	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			return "", err
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String(), nil
	}
	// Keyword/value form: a later keyword overrides an earlier one.
	return admin + " dbname=" + name, nil
}
