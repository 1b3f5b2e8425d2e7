package apptest

import (
	"testing"

	"github.com/envplane/envplane/internal/tursotest"
)

// FakeTursoGroup is the only group the fake accepts: the server's default
// --turso-group.
const FakeTursoGroup = "default"

// StartTursodb serves a new, empty database with a real tursodb on a free
// loopback port until tb ends and returns its http:// URL: a libSQL
// database to bring to a turso environment. tursodb checks no token.
func StartTursodb(tb testing.TB) string {
	tb.Helper()
	return tursotest.NewServer(tb).URL
}

// TursodbQuery runs query on the libSQL database at databaseURL and
// returns every row's first column as text (see tursotest.Query).
func TursodbQuery(tb testing.TB, databaseURL, query string, args ...any) []string {
	tb.Helper()
	return tursotest.Query(tb, databaseURL, query, args...)
}

// FakeTurso is a Turso Platform API of one organization whose databases
// are real tursodb processes behind proxies that check their tokens (see
// tursotest.Fake).
type FakeTurso = tursotest.Fake

// StartFakeTurso starts a fake Platform API of a new organization with a
// random API token, accepting databases in FakeTursoGroup, stopped (with
// every database's tursodb) when tb ends. Start it before the envplane
// server that uses it, so the server stops first.
func StartFakeTurso(tb testing.TB) (apiURL, apiToken, org string, fake *FakeTurso) {
	tb.Helper()
	f := tursotest.NewFake(tb, tursotest.FakeConfig{Group: FakeTursoGroup, Serve: true})
	return f.URL, f.Token, f.Org, f
}
