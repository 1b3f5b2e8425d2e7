package controlplane

import "context"

// Store is the control-plane storage. Implementations: SQLite (embedded
// default, OpenSQLite) and, in a later issue, PostgreSQL. storetest.Run holds
// the conformance suite every implementation passes.
type Store interface {
	// CreateOrganization inserts org (ID, CreateTime, UpdateTime set by the
	// caller). With a RequestID already used by an identical create it
	// returns the stored organization and created=false; with a different
	// one, ErrRequestReused. A taken slug is ErrOrganizationExists.
	CreateOrganization(ctx context.Context, org Organization) (stored Organization, created bool, err error)
	GetOrganization(ctx context.Context, id string) (Organization, error)
	ListOrganizations(ctx context.Context, page Page) ([]Organization, error)

	// CreateEnvironment inserts env in one transaction. mode decides
	// IsDefault: DefaultYes clears the flag on the organization's other
	// environment in the same transaction; DefaultIfFirst sets it only when
	// the organization has no default (and still succeeds, without it, when a
	// concurrent create won the race). Idempotency by RequestID (scoped to the
	// organization) as CreateOrganization. Errors: ErrOrganizationMissing,
	// ErrEnvironmentExists (slug), ErrHostnameTaken.
	CreateEnvironment(ctx context.Context, env Environment, mode DefaultMode) (stored Environment, created bool, err error)
	GetEnvironment(ctx context.Context, id string) (Environment, error)
	// GetEnvironmentByHostname looks up an already-normalized hostname.
	GetEnvironmentByHostname(ctx context.Context, hostname string) (Environment, error)
	ListEnvironments(ctx context.Context, organizationID string, page Page) ([]Environment, error)
	// UpdateEnvironment applies patch in one transaction and sets UpdateTime.
	// IsDefault=true moves the default atomically; a taken hostname is
	// ErrHostnameTaken and changes nothing.
	UpdateEnvironment(ctx context.Context, id string, patch EnvironmentPatch) (Environment, error)
	// DeleteEnvironment removes the row; ErrNotFound when it is not there.
	DeleteEnvironment(ctx context.Context, id string) error

	// Ping checks the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}
