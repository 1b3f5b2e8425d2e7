// Package cptest makes a real embedded control plane for the tests of the
// packages that read it: a SQLite file with one organization and one
// active environment.
package cptest

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
)

// WithEnvironment opens a control plane in a temporary directory (closed
// when the test ends) holding organization "acme" and its default
// environment "dev" on driver, active.
func WithEnvironment(t testing.TB, driver string) (*controlplane.SQLite, controlplane.Environment) {
	t.Helper()
	ctx := t.Context()
	store, err := controlplane.OpenSQLite(ctx, filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	now := time.Now().UTC()
	org, _, err := store.CreateOrganization(ctx, controlplane.Organization{ID: uuid.NewString(), Slug: "acme", DisplayName: "acme", CreateTime: now, UpdateTime: now})
	if err != nil {
		t.Fatal(err)
	}
	env, _, err := store.CreateEnvironment(ctx, controlplane.Environment{
		ID: uuid.NewString(), OrganizationID: org.ID, Slug: "dev", DisplayName: "dev", Type: "development",
		Driver: driver, Status: controlplane.StatusActive, Hostname: "acme-dev.localhost", CreateTime: now, UpdateTime: now,
	}, controlplane.DefaultYes)
	if err != nil {
		t.Fatal(err)
	}
	return store, env
}
