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
