package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// migration is one versioned schema change read from a migrations folder.
type migration struct {
	version int
	name    string
	sql     string
	// foreignKeysOff runs the migration with SQLite's foreign key
	// enforcement off, as rebuilding a table that others reference needs
	// (dropping it would otherwise cascade); the references are checked
	// before the commit instead. A migration asks for it with the first line
	// "-- envplane: foreign_keys off".
	foreignKeysOff bool
}

// foreignKeysOffLine is the first line of a migration that runs with
// foreign keys off.
const foreignKeysOffLine = "-- envplane: foreign_keys off"

// migrationName is the file name every migration must have: a positive
// version, an underscore and a lowercase description, e.g. 0001_init.sql.
var migrationName = regexp.MustCompile(`^([0-9]+)_[a-z0-9_]+\.sql$`)

// placeholder renders the n-th (1-based) bind parameter of a dialect, so the
// runner's own statements work on SQLite ("?") and PostgreSQL ("$1") alike.
type placeholder func(n int) string

// questionMark is the placeholder style of SQLite.
func questionMark(int) string { return "?" }

// migrate applies, in version order, every migration in dir of files that the
// database has not recorded in schema_migrations yet, each in its own
// transaction together with its schema_migrations row, so a failed migration
// leaves neither a half-applied schema nor a recorded version. The applied
// check is repeated inside each transaction, so two processes migrating the
// same database at once (serialised by the database's write lock) apply each
// version once. It returns the versions it applied, and refuses to run
// against a database recorded at a version newer than any in dir, since this
// binary would not understand that schema.
func migrate(ctx context.Context, db *sql.DB, files fs.FS, dir string, ph placeholder) ([]int, error) {
	migrations, err := readMigrations(files, dir)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return nil, fmt.Errorf("controlplane: migrate: create schema_migrations: %w", err)
	}
	var newest sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&newest); err != nil {
		return nil, fmt.Errorf("controlplane: migrate: read schema version: %w", err)
	}
	known := 0
	if len(migrations) > 0 {
		known = migrations[len(migrations)-1].version
	}
	if newest.Valid && int(newest.Int64) > known {
		return nil, fmt.Errorf("controlplane: migrate: database schema version %d is newer than this binary's %d", newest.Int64, known)
	}

	var applied []int
	for _, m := range migrations {
		done, err := applyMigration(ctx, db, m, ph)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.version)
		}
	}
	return applied, nil
}

// applyMigration runs one migration and records it in one transaction; it
// reports false when the version was already recorded.
func applyMigration(ctx context.Context, db *sql.DB, m migration, ph placeholder) (bool, error) {
	// One connection for the pragmas and the transaction: SQLite ignores
	// PRAGMA foreign_keys inside a transaction, and it is per connection.
	conn, err := db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("controlplane: migrate %s: %w", m.name, err)
	}
	defer conn.Close()
	if m.foreignKeysOff {
		if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
			return false, fmt.Errorf("controlplane: migrate %s: %w", m.name, err)
		}
		defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`) }()
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("controlplane: migrate %s: begin: %w", m.name, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit

	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = `+ph(1), m.version).Scan(&n); err != nil {
		return false, fmt.Errorf("controlplane: migrate %s: %w", m.name, err)
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("controlplane: migrate %s: %w", m.name, err)
	}
	if m.foreignKeysOff {
		if err := checkForeignKeys(ctx, tx); err != nil {
			return false, fmt.Errorf("controlplane: migrate %s: %w", m.name, err)
		}
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO schema_migrations (version, applied_at) VALUES (`+ph(1)+`, `+ph(2)+`)`,
		m.version, formatTime(time.Now())); err != nil {
		return false, fmt.Errorf("controlplane: migrate %s: record version: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("controlplane: migrate %s: commit: %w", m.name, err)
	}
	return true, nil
}

// checkForeignKeys fails when a row of the SQLite database in tx references
// one that does not exist, as a migration run with foreign keys off could
// leave behind.
func checkForeignKeys(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		return err
	}
	defer rows.Close()
	if rows.Next() {
		var table string
		var rowid sql.NullInt64
		var parent string
		var fkid int
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			return err
		}
		return fmt.Errorf("a row of %s references a missing row of %s", table, parent)
	}
	return rows.Err()
}

// readMigrations lists the .sql files directly in dir, sorted by version.
// Other files are ignored; a .sql file with a malformed name or a version
// used twice is an error, so a typo cannot silently skip a migration.
func readMigrations(files fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(files, dir)
	if err != nil {
		return nil, fmt.Errorf("controlplane: migrate: %w", err)
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		match := migrationName.FindStringSubmatch(e.Name())
		if match == nil {
			return nil, fmt.Errorf("controlplane: migrate: %s: name is not NNNN_description.sql", e.Name())
		}
		version, err := strconv.Atoi(match[1])
		if err != nil || version <= 0 {
			return nil, fmt.Errorf("controlplane: migrate: %s: version must be a positive integer", e.Name())
		}
		if prev, ok := seen[version]; ok {
			return nil, fmt.Errorf("controlplane: migrate: %s and %s share version %d", prev, e.Name(), version)
		}
		seen[version] = e.Name()
		body, err := fs.ReadFile(files, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("controlplane: migrate: %w", err)
		}
		out = append(out, migration{version: version, name: e.Name(), sql: string(body),
			foreignKeysOff: strings.HasPrefix(string(body), foreignKeysOffLine+"\n")})
	}
	if len(out) == 0 {
		return nil, errors.New("controlplane: migrate: no migrations in " + dir)
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	return out, nil
}
