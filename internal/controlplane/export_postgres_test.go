package controlplane

import (
	"context"
	"database/sql"
	"io/fs"
)

// MigratePostgres runs the PostgreSQL migrations of the store's database
// again, lock included, so tests can check that an up-to-date database gets
// none of them twice.
func MigratePostgres(ctx context.Context, s *Postgres) ([]int, error) { return s.migrate(ctx) }

// PostgresConstraintNames exposes the constraint and index names the store
// maps errors by, so tests can check the migrated schema defines every one.
var PostgresConstraintNames = pgConstraintNames

// PostgresMigrations and PostgresMigrationsDir expose the embedded schema,
// and MigratePostgresFiles runs the runner with PostgreSQL placeholders, so
// tests can leave a database at an older version.
var PostgresMigrations = postgresMigrations

const PostgresMigrationsDir = postgresMigrationsDir

func MigratePostgresFiles(ctx context.Context, db *sql.DB, files fs.FS, dir string) ([]int, error) {
	return migrate(ctx, db, files, dir, dollarSign)
}
