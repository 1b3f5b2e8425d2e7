package controlplane

import (
	"context"
	"database/sql"
	"io/fs"
)

// Migrate runs the migration runner with SQLite placeholders, for the
// runner's own tests in package controlplane_test.
func Migrate(ctx context.Context, db *sql.DB, files fs.FS, dir string) ([]int, error) {
	return migrate(ctx, db, files, dir, questionMark)
}

// SQLiteMigrations and SQLiteMigrationsDir expose the embedded schema, so
// tests can check that reopening a database applies none of it again.
var SQLiteMigrations fs.FS = sqliteMigrations

const SQLiteMigrationsDir = sqliteMigrationsDir

// WriteDB and ReadDB expose the two pools, so tests can check their pragmas.
func (s *SQLite) WriteDB() *sql.DB { return s.w }

func (s *SQLite) ReadDB() *sql.DB { return s.r }

// IsUniqueViolation exposes the error classifier, so tests can check that the
// column lists the store matches are the ones SQLite reports.
var IsUniqueViolation = isUniqueViolation
