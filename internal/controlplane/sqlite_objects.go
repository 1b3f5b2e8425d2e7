package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// objectDefinitionColumns lists the columns scanObjectDefinition reads, in its order.
const objectDefinitionColumns = `environment_id, name, definition, version, create_time, update_time`

// objectMigrationColumns lists the columns scanObjectMigration reads, in its order.
const objectMigrationColumns = `environment_id, name, version, steps, apply_time`

// objectOp names an operation on one object for errors.
func objectOp(verb, environmentID, name string) string {
	return verb + " object definition " + strconv.Quote(name) + " of environment " + strconv.Quote(environmentID)
}

// PutObjectDefinition implements Store. It runs in one IMMEDIATE
// transaction, so the version check and the write cannot interleave with
// another writer.
func (s *SQLite) PutObjectDefinition(ctx context.Context, def ObjectDefinition, expected int64, migration ObjectMigration) (ObjectDefinition, error) {
	op := objectOp("put", def.EnvironmentID, def.Name)
	def, migration, err := prepareObjectPut(def, expected, migration, s.now())
	if err != nil {
		return ObjectDefinition{}, wrapErr(op, err)
	}
	var stored ObjectDefinition
	err = s.write(ctx, func(tx *sql.Tx) error {
		var envExists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM environments WHERE id = ?)`,
			def.EnvironmentID).Scan(&envExists); err != nil {
			return err
		}
		if !envExists {
			return ErrNotFound
		}
		if expected == 0 {
			_, err := tx.ExecContext(ctx, `INSERT INTO object_definitions
				(environment_id, name, definition, version, create_time, update_time)
				VALUES (?, ?, ?, 1, ?, ?)`,
				def.EnvironmentID, def.Name, def.Definition,
				formatTime(def.CreateTime), formatTime(def.UpdateTime))
			switch {
			case isPrimaryKeyViolation(err):
				return ErrVersionConflict
			case isForeignKeyViolation(err):
				return ErrNotFound
			case err != nil:
				return err
			}
		} else {
			res, err := tx.ExecContext(ctx, `UPDATE object_definitions
				SET definition = ?, version = version + 1, update_time = ?
				WHERE environment_id = ? AND name = ? AND version = ?`,
				def.Definition, formatTime(def.UpdateTime), def.EnvironmentID, def.Name, expected)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n == 0 {
				// Another version, or no definition at all: stale either way.
				return ErrVersionConflict
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO object_migrations
			(environment_id, name, version, steps, apply_time) VALUES (?, ?, ?, ?, ?)`,
			migration.EnvironmentID, migration.Name, migration.Version, migration.Steps,
			formatTime(migration.ApplyTime)); err != nil {
			return err
		}
		var err error
		stored, err = scanObjectDefinition(tx.QueryRowContext(ctx, `SELECT `+objectDefinitionColumns+`
			FROM object_definitions WHERE environment_id = ? AND name = ?`, def.EnvironmentID, def.Name))
		return err
	})
	if err != nil {
		return ObjectDefinition{}, wrapErr(op, err)
	}
	return stored, nil
}

// GetObjectDefinition implements Store.
func (s *SQLite) GetObjectDefinition(ctx context.Context, environmentID, name string) (ObjectDefinition, error) {
	def, err := scanObjectDefinition(s.r.QueryRowContext(ctx, `SELECT `+objectDefinitionColumns+`
		FROM object_definitions WHERE environment_id = ? AND name = ?`, environmentID, name))
	if err != nil {
		return ObjectDefinition{}, wrapErr(objectOp("get", environmentID, name), err)
	}
	return def, nil
}

// ListObjectDefinitions implements Store.
func (s *SQLite) ListObjectDefinitions(ctx context.Context, environmentID string, page Page) ([]ObjectDefinition, error) {
	op := "list object definitions of environment " + strconv.Quote(environmentID)
	rows, err := s.r.QueryContext(ctx, `SELECT `+objectDefinitionColumns+` FROM object_definitions
		WHERE environment_id = ? AND name > ? ORDER BY name LIMIT ?`,
		environmentID, page.After, pageLimit(page))
	out, err := collectSQLite(rows, err, scanObjectDefinition)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	return out, nil
}

// ListObjectMigrations implements Store.
func (s *SQLite) ListObjectMigrations(ctx context.Context, environmentID, name string) ([]ObjectMigration, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+objectMigrationColumns+` FROM object_migrations
		WHERE environment_id = ? AND name = ? ORDER BY version`, environmentID, name)
	out, err := collectSQLite(rows, err, scanObjectMigration)
	if err != nil {
		return nil, wrapErr(objectOp("list migrations of", environmentID, name), err)
	}
	return out, nil
}

// DeleteObjectDefinition implements Store. Its migrations go with it through
// the foreign key's ON DELETE CASCADE.
func (s *SQLite) DeleteObjectDefinition(ctx context.Context, environmentID, name string) error {
	op := objectOp("delete", environmentID, name)
	res, err := s.w.ExecContext(ctx, `DELETE FROM object_definitions WHERE environment_id = ? AND name = ?`,
		environmentID, name)
	if err != nil {
		return wrapErr(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrapErr(op, err)
	}
	if n == 0 {
		return wrapErr(op, ErrNotFound)
	}
	return nil
}

// DeleteObjectDefinitionIf implements Store.
func (s *SQLite) DeleteObjectDefinitionIf(ctx context.Context, environmentID, name string, version int64, createTime time.Time) error {
	op := objectOp("delete", environmentID, name)
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM object_definitions
			WHERE environment_id = ? AND name = ? AND version = ? AND create_time = ?`,
			environmentID, name, version, formatTime(createTime))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM object_definitions WHERE environment_id = ? AND name = ?)`,
			environmentID, name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return ErrVersionConflict
		}
		return ErrNotFound
	})
	return wrapErrIf(op, err)
}

// collectSQLite scans every row of a query with scan; rows and err are what
// the query returned. An empty result is nil.
func collectSQLite[T any](rows *sql.Rows, err error, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// scanObjectDefinition reads one object_definitions row selected with
// objectDefinitionColumns.
func scanObjectDefinition(row interface{ Scan(...any) error }) (ObjectDefinition, error) {
	var def ObjectDefinition
	var createTime, updateTime string
	if err := row.Scan(&def.EnvironmentID, &def.Name, &def.Definition, &def.Version,
		&createTime, &updateTime); err != nil {
		return ObjectDefinition{}, err
	}
	var err error
	if def.CreateTime, err = parseTime(createTime); err != nil {
		return ObjectDefinition{}, err
	}
	if def.UpdateTime, err = parseTime(updateTime); err != nil {
		return ObjectDefinition{}, err
	}
	return def, nil
}

// scanObjectMigration reads one object_migrations row selected with
// objectMigrationColumns.
func scanObjectMigration(row interface{ Scan(...any) error }) (ObjectMigration, error) {
	var m ObjectMigration
	var applyTime string
	if err := row.Scan(&m.EnvironmentID, &m.Name, &m.Version, &m.Steps, &applyTime); err != nil {
		return ObjectMigration{}, err
	}
	m.Steps = nilIfEmpty(m.Steps)
	var err error
	if m.ApplyTime, err = parseTime(applyTime); err != nil {
		return ObjectMigration{}, err
	}
	return m, nil
}

// isPrimaryKeyViolation reports whether err is SQLite refusing a row whose
// primary key is taken.
func isPrimaryKeyViolation(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
