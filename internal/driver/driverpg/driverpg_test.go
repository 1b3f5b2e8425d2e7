package driverpg_test

import (
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driverpg"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/pgtest"
)

// conformanceOpen returns the open function of the conformance suite: one
// database for the whole run, and a new schema in it for every driver,
// reached through the search_path the driver's URL sets. Each driver sees
// only its own tables (and index names, which PostgreSQL scopes to the
// schema), as the suite requires, without a CREATE DATABASE per case, which
// costs half a second each.
func conformanceOpen(t *testing.T) func(t *testing.T) driver.Driver {
	return conformanceOpenURLs(t, nil)
}

// conformanceOpenURLs is conformanceOpen recording each driver's URL in urls
// (when not nil).
func conformanceOpenURLs(t *testing.T, urls *sync.Map) func(t *testing.T) driver.Driver {
	dbURL := pgtest.NewDatabase(t, "envplane_driver_")
	return func(t *testing.T) driver.Driver {
		t.Helper()
		schemaName := "s_" + strings.ReplaceAll(uuid.NewString(), "-", "")
		pgtest.Exec(t, t.Context(), dbURL, "CREATE SCHEMA "+pgx.Identifier{schemaName}.Sanitize())
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
		if urls != nil {
			urls.Store(d, u.String())
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, conformanceOpen(t))
}

func TestLedger(t *testing.T) {
	var urls sync.Map
	drivertest.RunLedger(t, conformanceOpenURLs(t, &urls), func(t *testing.T, d driver.Driver, stmt string) {
		t.Helper()
		u, _ := urls.Load(d)
		pgtest.Exec(t, t.Context(), u.(string), stmt)
	})
}
