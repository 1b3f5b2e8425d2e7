// Package provision creates and removes the physical database of an
// environment, one adapter per driver. Adapters report failures as *Error so
// the service can keep a sanitized message on the environment row while the
// cause (which may name a file or a server) goes only to the debug log.
package provision

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/envplane/envplane/internal/controlplane"
)

// Drivers the platform knows, configured or not.
const (
	DriverMemory   = "memory"
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
	DriverTurso    = "turso"
)

// ErrDriverNotConfigured means the driver exists but this server has no
// adapter for it (no cluster, no API token).
var ErrDriverNotConfigured = errors.New("provision: driver not configured on this server")

// ErrDriverNotSupported means the driver cannot work in this deployment:
// memory environments with a PostgreSQL control plane, where every replica
// would hold a different copy of the data.
var ErrDriverNotSupported = errors.New("provision: driver not supported in this deployment")

// Provisioner creates and removes environments' databases for one driver.
type Provisioner interface {
	// Provision creates env's database (idempotently: a retry after a
	// failure or a crash must succeed).
	Provision(ctx context.Context, env controlplane.Environment) (Result, error)
	// Deprovision removes env's database; a database already gone is success.
	Deprovision(ctx context.Context, env controlplane.Environment) error
}

// Result is what provisioning made.
type Result struct {
	// DatabaseURL locates the database; it never holds a secret.
	DatabaseURL string
	// Secret is the password or token to reach it ("" when the engine
	// needs none). The caller stores it encrypted and never shows it.
	Secret string
}

// Rotator is implemented by provisioners whose databases have a credential.
type Rotator interface {
	// Rotate makes a new secret the valid one and revokes current, returning
	// the new secret.
	Rotate(ctx context.Context, env controlplane.Environment, current string) (string, error)
}

// CommittingRotator is a Rotator that records the new secret as part of the
// rotation. Rotating and then storing the secret as two steps lets concurrent
// rotations of one environment interleave (A sets p1, B sets p2, B stores p2,
// A stores p1), leaving stored a secret the database no longer accepts.
type CommittingRotator interface {
	Rotator
	// RotateAndCommit makes a new secret the valid one, like Rotate, and calls
	// commit with it while no other rotation, provisioning or removal of env
	// can run, on any replica, and before the new secret takes effect: when
	// commit fails the old secret stays the valid one and its error is
	// returned as is. Rotation errors are *Error.
	RotateAndCommit(ctx context.Context, env controlplane.Environment, current string, commit func(ctx context.Context, secret string) error) error
}

// Error is a provisioning failure with a message safe to show clients.
type Error struct {
	Public string // what the client and the environment row see
	Err    error  // the cause, for the debug log only
	// NothingCreated is set by an adapter that knows the failed attempt
	// made nothing on the engine: it failed before issuing any statement or
	// call that creates a database, role or file (not reaching the server at
	// all, typically). Unset is the safe answer: something may exist and
	// has to be removed before the environment can go.
	NothingCreated bool
}

func (e *Error) Error() string { return e.Public + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// CreatedNothing reports whether err, from Provision, says the attempt made
// nothing on the engine (Error.NothingCreated). Any other error, from any
// adapter, may have left something behind.
func CreatedNothing(err error) bool {
	var pe *Error
	return errors.As(err, &pe) && pe.NothingCreated
}

// PublicMessage returns the client-safe text of a provisioning failure.
func PublicMessage(err error) string {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Public
	}
	return "provisioning failed"
}

// Set maps drivers to their provisioners.
type Set struct {
	byDriver map[string]Provisioner
	// refused maps drivers this deployment cannot support to the reason.
	refused map[string]string
}

// NewSet returns a Set of the given adapters.
func NewSet(byDriver map[string]Provisioner) *Set {
	return &Set{byDriver: byDriver}
}

// Refuse makes For answer ErrDriverNotSupported for driver, with why.
func (s *Set) Refuse(driver, why string) {
	if s.refused == nil {
		s.refused = map[string]string{}
	}
	s.refused[driver] = why
	delete(s.byDriver, driver)
}

// For returns the provisioner of driver, ErrDriverNotSupported or
// ErrDriverNotConfigured.
func (s *Set) For(driver string) (Provisioner, error) {
	if why, ok := s.refused[driver]; ok {
		return nil, fmt.Errorf("%w: %s", ErrDriverNotSupported, why)
	}
	p, ok := s.byDriver[driver]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrDriverNotConfigured, driver)
	}
	return p, nil
}

// Drivers lists the configured drivers, sorted.
func (s *Set) Drivers() []string {
	out := make([]string, 0, len(s.byDriver))
	for d := range s.byDriver {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
