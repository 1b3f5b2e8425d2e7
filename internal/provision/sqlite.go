package provision

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver/driversqlite"
)

// SQLite provisions one database file per environment under
// <data-dir>/envs/<environment-id>.db. The database URL it reports,
// "sqlite:<environment-id>", names no path: the data dir is the server's
// business, not the client's.
type SQLite struct {
	dir string
}

// NewSQLite returns a provisioner keeping environment files under dataDir/envs.
func NewSQLite(dataDir string) *SQLite {
	return &SQLite{dir: filepath.Join(dataDir, "envs")}
}

// Path returns the file of an environment's database.
func (s *SQLite) Path(environmentID string) string {
	return filepath.Join(s.dir, environmentID+".db")
}

// DatabaseURL is the client-visible URL of an environment's database.
func (s *SQLite) DatabaseURL(environmentID string) string {
	return "sqlite:" + environmentID
}

// Provision creates the file, opens it once in WAL mode and writes an
// ownership marker, proving the database works before the environment is
// declared active. Failures before the first statement, which is what
// creates the file, are reported with Error.NothingCreated.
func (s *SQLite) Provision(ctx context.Context, env controlplane.Environment) (Result, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return Result{}, &Error{Public: "could not create the directory for environment databases", Err: err, NothingCreated: true}
	}
	// The file is made here, readable by this user only, as the control
	// plane's is: SQLite makes its -wal and -shm files with the mode of the
	// database file. (sql.Open only checks its arguments.)
	f, err := os.OpenFile(s.Path(env.ID), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return Result{}, &Error{Public: "could not create the environment's database file", Err: err, NothingCreated: true}
	}
	if err := f.Close(); err != nil {
		return Result{}, &Error{Public: "could not create the environment's database file", Err: err}
	}
	db, err := sql.Open("sqlite", driversqlite.DSN(s.Path(env.ID)))
	if err != nil {
		return Result{}, &Error{Public: "could not open the environment's database file", Err: err, NothingCreated: true}
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS _envplane_environment (environment_id TEXT PRIMARY KEY)`); err != nil {
		return Result{}, &Error{Public: "could not create the environment's database file", Err: err}
	}
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO _envplane_environment (environment_id) VALUES (?)`, env.ID); err != nil {
		return Result{}, &Error{Public: "could not write to the environment's database file", Err: err}
	}
	var owner string
	if err := db.QueryRowContext(ctx, `SELECT environment_id FROM _envplane_environment`).Scan(&owner); err != nil {
		return Result{}, &Error{Public: "could not read the environment's database file", Err: err}
	}
	if owner != env.ID {
		return Result{}, &Error{Public: "the environment's database file belongs to another environment", Err: fmt.Errorf("owner %s", owner)}
	}
	return Result{DatabaseURL: s.DatabaseURL(env.ID)}, nil
}

// Private makes the environment's database files readable by this user
// only, for files made before envplane made them so.
func (s *SQLite) Private(environmentID string) error {
	path := s.Path(environmentID)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		info, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// Deprovision removes the file and its WAL companions.
func (s *SQLite) Deprovision(_ context.Context, env controlplane.Environment) error {
	path := s.Path(env.ID)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		// ENOTDIR: the envs directory is not a directory, so no file is there.
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return &Error{Public: "could not remove the environment's database file", Err: err}
		}
	}
	return nil
}
