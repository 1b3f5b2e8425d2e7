package driverturso

import (
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivertest"
)

// TestConformance runs the suite with a server of its own for every driver
// it opens, so that drivers see only their own tables, as the suite
// requires; tursodb starts in about a tenth of a second.
func TestConformance(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		t.Helper()
		return openServer(t, startServer(t))
	})
}

func TestLedger(t *testing.T) {
	drivertest.RunLedger(t, func(t *testing.T) driver.Driver {
		t.Helper()
		return openServer(t, startServer(t))
	}, func(t *testing.T, d driver.Driver, stmt string) {
		t.Helper()
		if _, err := d.(*Driver).db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	})
}
