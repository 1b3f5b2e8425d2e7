package driverturso

import (
	"testing"

	"github.com/envplane/envplane/internal/tursotest"
)

// The tests run against a real libSQL server, tursotest's tursodb; a
// missing binary fails them, it never skips them.

// server is one tursodb serving one database file.
type server struct {
	*tursotest.Server
}

// startServer starts tursodb on a new database file in t's temporary
// directory and stops it when t ends.
func startServer(t testing.TB) *server {
	t.Helper()
	return &server{tursotest.NewServer(t)}
}

// stop kills the server, if it runs, and waits for it to exit.
func (s *server) stop() { s.Close() }

// restart stops the server and starts another on the same file, on
// another port: whatever it serves then is what the file holds.
func (s *server) restart(t testing.TB) {
	t.Helper()
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// openServer opens a driver on s, closed when t ends.
func openServer(t *testing.T, s *server, opts ...Option) *Driver {
	t.Helper()
	d, err := Open(t.Context(), s.URL, "", opts...)
	if err != nil {
		t.Fatalf("Open: %v\n%s", err, s.Log())
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}
