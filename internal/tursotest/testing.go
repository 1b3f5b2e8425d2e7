package tursotest

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	_ "github.com/tursodatabase/libsql-client-go/libsql" // the "libsql" database/sql driver of Query
)

// NewServer serves a new, empty database with tursodb until tb ends,
// failing tb (never skipping it) when tursodb is not installed or does not
// start.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := Start(tb.Context(), bin, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Query runs query on the libSQL database at databaseURL (through
// libsql-client-go, as the server does) and returns every row's first
// column as text; an error fails tb.
func Query(tb testing.TB, databaseURL, query string, args ...any) []string {
	tb.Helper()
	out, err := TryQuery(tb.Context(), databaseURL, query, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TryQuery is Query returning its error.
func TryQuery(ctx context.Context, databaseURL, query string, args ...any) ([]string, error) {
	db, err := sql.Open("libsql", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", databaseURL, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v sql.NullString
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("query %q: %w", query, err)
		}
		out = append(out, v.String)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	return out, nil
}
