package controlplane

import (
	"context"
	"time"
)

// Store is the control-plane storage. Implementations: SQLite (embedded
// default, OpenSQLite) and PostgreSQL (OpenPostgres, for control planes with
// several replicas). storetest.Run holds the conformance suite every
// implementation passes.
type Store interface {
	// CreateOrganization inserts org (ID, CreateTime, UpdateTime set by the
	// caller). With a RequestID already used by a create with the same
	// RequestDigest it returns the stored organization, as it is now, and
	// created=false; with another digest, ErrRequestReused. A row stored
	// without a digest (before migration 0004) is matched by its
	// client-supplied fields instead. A taken slug is ErrOrganizationExists.
	CreateOrganization(ctx context.Context, org Organization) (stored Organization, created bool, err error)
	GetOrganization(ctx context.Context, id string) (Organization, error)
	ListOrganizations(ctx context.Context, page Page) ([]Organization, error)

	// CreateEnvironment inserts env in one transaction. mode decides
	// IsDefault: DefaultYes clears the flag on the organization's other
	// environment in the same transaction; DefaultIfFirst sets it only when
	// the organization has no default (and still succeeds, without it, when a
	// concurrent create won the race). Idempotency by RequestID (scoped to the
	// organization) as CreateOrganization; for a row stored without a
	// digest, the Credential is not part of what makes a retry the same
	// request, ExternalDatabase is. Errors:
	// ErrOrganizationMissing, ErrEnvironmentExists (slug), ErrHostnameTaken
	// (env.Proof is verified and another environment holds the hostname
	// verified; pending claims never collide).
	CreateEnvironment(ctx context.Context, env Environment, mode DefaultMode) (stored Environment, created bool, err error)
	GetEnvironment(ctx context.Context, id string) (Environment, error)
	// GetEnvironmentByHostname returns the environment that holds an
	// already-normalized hostname verified (the one it routes to);
	// ErrNotFound when none does, whatever claims are pending.
	GetEnvironmentByHostname(ctx context.Context, hostname string) (Environment, error)
	// ListHostnameClaims returns every environment whose hostname is the
	// already-normalized hostname, in any state, in id order: at most one
	// verified, any number pending or lapsed.
	ListHostnameClaims(ctx context.Context, hostname string) ([]Environment, error)
	// ListHostnameChecks returns up to limit environments whose hostname
	// check is due (Proof.NextCheckTime set and not after due), the most
	// overdue first.
	ListHostnameChecks(ctx context.Context, due time.Time, limit int) ([]Environment, error)
	// LockHostnameChecks takes the lock that lets one process at a time
	// run the hostname checks of every environment, without waiting: ok is
	// false when another process holds it. release gives it back.
	LockHostnameChecks(ctx context.Context) (release func(), ok bool, err error)
	ListEnvironments(ctx context.Context, organizationID string, page Page) ([]Environment, error)
	// UpdateEnvironment applies patch in one transaction and sets UpdateTime.
	// IsDefault=true moves the default atomically; a hostname another
	// environment holds verified, patched in with a verified Proof and no
	// TakeHostname, is ErrHostnameTaken and changes nothing (see
	// EnvironmentPatch.TakeHostname). A patch with IfHostname applies only
	// to that claim, else ErrHostnameMoved with the environment as it is. A Credential patch replaces the
	// whole credential; a pointer to the zero Credential removes it. A patch
	// with IfStatus applies only while the status is one of those; otherwise
	// it changes nothing and returns ErrStatusMismatch together with the
	// environment as it is, so the caller can say which status it found;
	// likewise with IfUpdatedBefore, for the time of the last update.
	// Concurrent patches with the same IfStatus moving the status out of it:
	// exactly one succeeds.
	UpdateEnvironment(ctx context.Context, id string, patch EnvironmentPatch) (Environment, error)
	// DeleteEnvironment removes the row; ErrNotFound when it is not there.
	DeleteEnvironment(ctx context.Context, id string) error

	TokenStore
	ObjectStore

	// Ping checks the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}

// TokenStore is the part of the Store that keeps API tokens and their sessions.
type TokenStore interface {
	// CreateToken inserts t (ID, SecretHash, CreateTime set by the caller).
	// Idempotency by RequestID scoped to t.OrganizationID ("" = platform) as
	// CreateOrganization: the same RequestDigest (for a row stored without
	// one, the same name, role, environment ids, expire time and platform
	// admin) returns the stored token and created=false.
	// Errors: ErrOrganizationMissing, ErrRequestReused.
	CreateToken(ctx context.Context, t Token) (stored Token, created bool, err error)
	GetToken(ctx context.Context, id string) (Token, error)
	// GetTokenBySecretHash finds the token whose secret hashes to hash.
	GetTokenBySecretHash(ctx context.Context, hash []byte) (Token, error)
	// ListTokens lists one organization's tokens, or every token (platform
	// ones included) when organizationID is "".
	ListTokens(ctx context.Context, organizationID string, page Page) ([]Token, error)
	// RevokeToken sets RevokeTime (kept from the first revocation when called
	// again) and returns the token.
	RevokeToken(ctx context.Context, id string, at time.Time) (Token, error)
	// SetActiveEnvironment stores the session's active environment;
	// ErrNotFound when the token or the environment does not exist. Deleting
	// the environment clears it, and so does an empty environmentID.
	SetActiveEnvironment(ctx context.Context, tokenID, environmentID string) error
	// TouchToken records a use of the token at at; LastUseTime never moves
	// back, so touches landing out of order keep the latest. ErrNotFound
	// when the token does not exist.
	TouchToken(ctx context.Context, id string, at time.Time) error
	// CountTokens counts every token, revoked ones included (bootstrap runs
	// only on a control plane that never had one).
	CountTokens(ctx context.Context) (int, error)
}
