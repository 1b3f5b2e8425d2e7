// Package engine opens an environment's Driver from its control-plane row:
// it is the one place that knows which engine serves which driver name and
// how an environment's credential reaches it. The registry calls it on a
// cache miss; services never see it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivermem"
	"github.com/envplane/envplane/internal/driver/driverpg"
	"github.com/envplane/envplane/internal/driver/driversqlite"
	"github.com/envplane/envplane/internal/driver/driverturso"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/secrets"
)

// ErrNotProvisioned means the environment has no database this server can
// open (a memory environment of another process, a driver not configured).
var ErrNotProvisioned = errors.New("engine: the environment's database is not available on this server")

// Rows is what the opener reads of the control plane.
type Rows interface {
	GetEnvironment(ctx context.Context, id string) (controlplane.Environment, error)
}

// Opener opens drivers for environments.
type Opener struct {
	rows    Rows
	keyring *secrets.Keyring
	sqlite  *provision.SQLite
	memory  *Memory
	// PostgresMaxConns bounds each postgres environment's pool.
	PostgresMaxConns int32
	// Reconcile, when set, sees every driver opened before the registry
	// does and returns the driver to use: the metadata service's
	// Reconciler. recreate says the database was just made empty (a memory
	// environment after a restart of the process).
	Reconcile func(ctx context.Context, environmentID string, d driver.Driver, recreate bool) (driver.Driver, error)
}

// New returns an Opener.
func New(rows Rows, keyring *secrets.Keyring, sqlite *provision.SQLite, memory *Memory) *Opener {
	return &Opener{rows: rows, keyring: keyring, sqlite: sqlite, memory: memory, PostgresMaxConns: 4}
}

// Open opens the driver of environment id from its current row and
// credential, reconciled (see Reconcile).
func (o *Opener) Open(ctx context.Context, id string) (driver.Driver, error) {
	env, err := o.rows.GetEnvironment(ctx, id)
	if err != nil {
		return nil, err
	}
	d, recreate, err := o.open(ctx, env)
	if err != nil {
		return nil, err
	}
	d = limit(d, env.StorageLimitMB)
	if o.Reconcile == nil {
		return d, nil
	}
	reconciled, err := o.Reconcile(ctx, id, d, recreate)
	if err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	return reconciled, nil
}

func (o *Opener) open(ctx context.Context, env controlplane.Environment) (d driver.Driver, recreate bool, err error) {
	// Only an environment that was provisioned and is not going away has a
	// database to open: a call that raced a delete must not open (for
	// SQLite: create again) the database being removed.
	if env.Status != controlplane.StatusActive && env.Status != controlplane.StatusSuspended {
		if env.Status == controlplane.StatusDeleting {
			return nil, false, fmt.Errorf("%w: %w", driver.ErrGone, ErrNotProvisioned)
		}
		return nil, false, fmt.Errorf("%w: the environment is %s", ErrNotProvisioned, env.Status)
	}
	switch env.Driver {
	case provision.DriverMemory:
		// A memory database does not outlive its process: after a restart
		// the environment comes back empty, and reconciling creates its
		// objects' tables again from their definitions.
		return o.memory.Open(env.ID)
	case provision.DriverSQLite:
		// Opening creates a missing file: a file that is gone must not come
		// back as an empty database that looks like the environment's.
		path := o.sqlite.Path(env.ID)
		if _, err := os.Stat(path); err != nil {
			return nil, false, fmt.Errorf("%w: its database file: %w", ErrNotProvisioned, err)
		}
		if err := o.sqlite.Private(env.ID); err != nil {
			return nil, false, fmt.Errorf("engine: the database file's mode: %w", err)
		}
		d, err := driversqlite.Open(ctx, path)
		return d, false, err
	case provision.DriverPostgres:
		secret, err := o.secret(env)
		if err != nil {
			return nil, false, err
		}
		cfg, err := provision.PostgresConnConfig(env.DatabaseURL, secret)
		if err != nil {
			return nil, false, err
		}
		if o.PostgresMaxConns > 0 {
			cfg.MaxConns = o.PostgresMaxConns
		}
		d, err := driverpg.Open(ctx, cfg)
		return d, false, err
	case provision.DriverTurso:
		token, err := o.secret(env)
		if err != nil {
			return nil, false, err
		}
		d, err := driverturso.Open(ctx, env.DatabaseURL, token)
		return d, false, err
	default:
		return nil, false, fmt.Errorf("%w: driver %q", ErrNotProvisioned, env.Driver)
	}
}

func (o *Opener) secret(env controlplane.Environment) (string, error) {
	if len(env.Credential.Ciphertext) == 0 {
		return "", nil
	}
	plain, err := o.keyring.Open(secrets.Sealed{KeyID: env.Credential.KeyID, Ciphertext: env.Credential.Ciphertext}, []byte(env.ID))
	if err != nil {
		return "", fmt.Errorf("engine: open the credential of %s: %w", env.ID, err)
	}
	return string(plain), nil
}

// Memory holds the databases of memory environments for the life of the
// process: the registry may close and reopen a driver handle at will, so
// the data must outlive the handle. It is also the memory provisioner.
type Memory struct {
	mu  sync.Mutex
	dbs map[string]*drivermem.Driver
	// gone are the environments deprovisioned in this process: a call
	// that read the environment active just before its deletion must not
	// make it a new database (and acknowledge writes into it).
	gone map[string]bool
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{dbs: make(map[string]*drivermem.Driver), gone: make(map[string]bool)}
}

// Provision implements provision.Provisioner: a fresh in-process database.
func (m *Memory) Provision(_ context.Context, env controlplane.Environment) (provision.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.gone, env.ID)
	if _, ok := m.dbs[env.ID]; !ok {
		m.dbs[env.ID] = drivermem.New()
	}
	return provision.Result{DatabaseURL: "memory:" + env.ID}, nil
}

// Deprovision implements provision.Provisioner: the data is gone.
func (m *Memory) Deprovision(_ context.Context, env controlplane.Environment) error {
	m.mu.Lock()
	d, ok := m.dbs[env.ID]
	delete(m.dbs, env.ID)
	m.gone[env.ID] = true
	m.mu.Unlock()
	if ok {
		return d.Close()
	}
	return nil
}

// Open returns a handle on the environment's database whose Close leaves
// the data in place, making an empty database when the process has none
// for it (fresh true): the process that made it has ended. An environment
// this process deprovisioned has none: driver.ErrGone.
func (m *Memory) Open(environmentID string) (d driver.Driver, fresh bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gone[environmentID] {
		return nil, false, fmt.Errorf("%w: the memory database was deprovisioned", driver.ErrGone)
	}
	db, ok := m.dbs[environmentID]
	if !ok {
		db = drivermem.New()
		m.dbs[environmentID] = db
	}
	return keepOpen{db}, !ok, nil
}

// keepOpen is a memory database handle whose Close does not drop the data.
type keepOpen struct{ *drivermem.Driver }

func (keepOpen) Close() error { return nil }

var _ provision.Provisioner = (*Memory)(nil)
