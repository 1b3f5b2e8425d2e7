package driversqlite_test

import (
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversqlite"
	"github.com/envplane/envplane/internal/driver/drivertest"
)

// paths maps each driver open made to its file, for raw.
var paths sync.Map

// open returns a driver over a new file in the test's temporary directory.
func open(t *testing.T) driver.Driver {
	t.Helper()
	path := filepath.Join(t.TempDir(), "env.db")
	d, err := driversqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	paths.Store(d, path)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// raw runs a statement on d's file through a connection of its own, as
// another process would.
func raw(t *testing.T, d driver.Driver, stmt string) {
	t.Helper()
	path, _ := paths.Load(d)
	db, err := sql.Open("sqlite", "file:"+path.(string)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, open)
}

func TestLedger(t *testing.T) {
	drivertest.RunLedger(t, open, raw)
}
