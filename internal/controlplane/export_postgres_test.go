package controlplane

import "context"

// MigratePostgres runs the PostgreSQL migrations of the store's database
// again, lock included, so tests can check that an up-to-date database gets
// none of them twice.
func MigratePostgres(ctx context.Context, s *Postgres) ([]int, error) { return s.migrate(ctx) }

// PostgresConstraintNames exposes the constraint and index names the store
// maps errors by, so tests can check the migrated schema defines every one.
var PostgresConstraintNames = pgConstraintNames
