package controlplane

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// PutObjectDefinition implements Store. Under READ COMMITTED the version
// check lives in the write itself: a first version is an INSERT, which a
// concurrent insert of the same name makes fail on the primary key; a later
// one is an UPDATE … WHERE version = expected, which waits for a concurrent
// update of the row and then re-checks the version on the row it committed,
// so of several puts with one expected version exactly one matches. The
// migration row is written in the same transaction.
func (s *Postgres) PutObjectDefinition(ctx context.Context, def ObjectDefinition, expected int64, migration ObjectMigration) (ObjectDefinition, error) {
	op := objectOp("put", def.EnvironmentID, def.Name)
	def, migration, err := prepareObjectPut(def, expected, migration, s.now())
	if err != nil {
		return ObjectDefinition{}, wrapErr(op, err)
	}
	def.CreateTime, def.UpdateTime = pgTime(def.CreateTime), pgTime(def.UpdateTime)
	migration.ApplyTime = pgTime(migration.ApplyTime)
	for attempt := 1; ; attempt++ {
		var stored ObjectDefinition
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			if expected == 0 {
				stored, err = scanPgObjectDefinition(tx.QueryRow(ctx, `INSERT INTO object_definitions
					(environment_id, name, definition, version, create_time, update_time)
					VALUES ($1, $2, $3, 1, $4, $5)
					RETURNING `+objectDefinitionColumns,
					def.EnvironmentID, def.Name, def.Definition, def.CreateTime, def.UpdateTime))
			} else {
				stored, err = scanPgObjectDefinition(tx.QueryRow(ctx, `UPDATE object_definitions
					SET definition = $1, version = version + 1, update_time = $2
					WHERE environment_id = $3 AND name = $4 AND version = $5
					RETURNING `+objectDefinitionColumns,
					def.Definition, def.UpdateTime, def.EnvironmentID, def.Name, expected))
				if errors.Is(err, pgx.ErrNoRows) {
					// Another version, or no definition at all: stale
					// either way, unless the environment itself is gone.
					var envExists bool
					if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM environments WHERE id = $1)`,
						def.EnvironmentID).Scan(&envExists); err != nil {
						return err
					}
					if !envExists {
						return ErrNotFound
					}
					return ErrVersionConflict
				}
			}
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO object_migrations
				(environment_id, name, version, steps, apply_time) VALUES ($1, $2, $3, $4, $5)`,
				migration.EnvironmentID, migration.Name, migration.Version, migration.Steps,
				migration.ApplyTime)
			return err
		})
		if err == nil {
			return stored, nil
		}
		switch {
		case pgRetryable(err) && attempt < postgresMaxAttempts:
			continue
		case pgViolates(err, pgUniqueViolation, pgObjectDefinitionsPKey):
			err = ErrVersionConflict
		case pgViolates(err, pgForeignKeyViolation, pgObjectDefinitionsEnvironmentFKey):
			err = ErrNotFound
		case pgViolates(err, pgForeignKeyViolation, pgObjectMigrationsDefinitionFKey),
			pgViolates(err, pgUniqueViolation, pgObjectMigrationsPKey):
			// The definition went, or came back, between the write and
			// its migration: the caller's version is stale.
			err = ErrVersionConflict
		}
		return ObjectDefinition{}, wrapErr(op, err)
	}
}

// GetObjectDefinition implements Store.
func (s *Postgres) GetObjectDefinition(ctx context.Context, environmentID, name string) (ObjectDefinition, error) {
	def, err := scanPgObjectDefinition(s.pool.QueryRow(ctx, `SELECT `+objectDefinitionColumns+`
		FROM object_definitions WHERE environment_id = $1 AND name = $2`, environmentID, name))
	if err != nil {
		return ObjectDefinition{}, wrapErr(objectOp("get", environmentID, name), err)
	}
	return def, nil
}

// ListObjectDefinitions implements Store.
func (s *Postgres) ListObjectDefinitions(ctx context.Context, environmentID string, page Page) ([]ObjectDefinition, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+objectDefinitionColumns+` FROM object_definitions
		WHERE environment_id = $1 AND name > $2 ORDER BY name LIMIT $3`,
		environmentID, page.After, pageLimit(page))
	out, err := collectPg(rows, err, scanPgObjectDefinition)
	if err != nil {
		return nil, wrapErr("list object definitions of environment "+strconv.Quote(environmentID), err)
	}
	return out, nil
}

// ListObjectMigrations implements Store.
func (s *Postgres) ListObjectMigrations(ctx context.Context, environmentID, name string) ([]ObjectMigration, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+objectMigrationColumns+` FROM object_migrations
		WHERE environment_id = $1 AND name = $2 ORDER BY version`, environmentID, name)
	out, err := collectPg(rows, err, scanPgObjectMigration)
	if err != nil {
		return nil, wrapErr(objectOp("list migrations of", environmentID, name), err)
	}
	return out, nil
}

// DeleteObjectDefinition implements Store. Its migrations go with it through
// the foreign key's ON DELETE CASCADE.
func (s *Postgres) DeleteObjectDefinition(ctx context.Context, environmentID, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM object_definitions WHERE environment_id = $1 AND name = $2`,
		environmentID, name)
	if err := wantOneRowPg(tag, err); err != nil {
		return wrapErr(objectOp("delete", environmentID, name), err)
	}
	return nil
}

// DeleteObjectDefinitionIf implements Store.
func (s *Postgres) DeleteObjectDefinitionIf(ctx context.Context, environmentID, name string, version int64, createTime time.Time) error {
	var deleted, exists bool
	err := s.pool.QueryRow(ctx, `WITH gone AS (
			DELETE FROM object_definitions
			WHERE environment_id = $1 AND name = $2 AND version = $3 AND create_time = $4
			RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM gone),
			EXISTS (SELECT 1 FROM object_definitions WHERE environment_id = $1 AND name = $2)`,
		environmentID, name, version, createTime).Scan(&deleted, &exists)
	switch {
	case err != nil:
		return wrapErr(objectOp("delete", environmentID, name), err)
	case deleted:
		return nil
	case exists:
		return wrapErr(objectOp("delete", environmentID, name), ErrVersionConflict)
	}
	return wrapErr(objectOp("delete", environmentID, name), ErrNotFound)
}

// scanPgObjectDefinition reads one object_definitions row selected with
// objectDefinitionColumns.
func scanPgObjectDefinition(row pgx.Row) (ObjectDefinition, error) {
	var def ObjectDefinition
	if err := row.Scan(&def.EnvironmentID, &def.Name, &def.Definition, &def.Version,
		&def.CreateTime, &def.UpdateTime); err != nil {
		return ObjectDefinition{}, err
	}
	def.CreateTime, def.UpdateTime = def.CreateTime.UTC(), def.UpdateTime.UTC()
	return def, nil
}

// scanPgObjectMigration reads one object_migrations row selected with
// objectMigrationColumns.
func scanPgObjectMigration(row pgx.Row) (ObjectMigration, error) {
	var m ObjectMigration
	if err := row.Scan(&m.EnvironmentID, &m.Name, &m.Version, &m.Steps, &m.ApplyTime); err != nil {
		return ObjectMigration{}, err
	}
	m.Steps, m.ApplyTime = nilIfEmpty(m.Steps), m.ApplyTime.UTC()
	return m, nil
}
