package driversqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversqlite"
	"github.com/envplane/envplane/internal/driver/drivertest"
)

// open returns a driver over a new file in the test's temporary directory.
func open(t *testing.T) driver.Driver {
	t.Helper()
	d, err := driversqlite.Open(t.Context(), filepath.Join(t.TempDir(), "env.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, open)
}
