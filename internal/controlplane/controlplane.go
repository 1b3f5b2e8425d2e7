// Package controlplane stores what the platform knows about organizations and
// environments: which exist, where each environment's database lives and how
// requests are routed to it. Uniqueness rules live in the schema, so they hold
// under concurrent writers without check-then-insert races.
package controlplane

import (
	"errors"
	"slices"
	"time"
)

// Environment statuses.
const (
	StatusProvisioning = "provisioning"
	StatusActive       = "active"
	StatusSuspended    = "suspended"
	StatusFailed       = "failed"
	StatusDeleting     = "deleting"
)

// Errors returned by a Store, wrapped with context; compare with errors.Is.
var (
	ErrNotFound = errors.New("controlplane: not found")
	// ErrStorageFull means the control plane's storage had no room for a
	// write (a full disk); the write changed nothing.
	ErrStorageFull         = errors.New("controlplane: storage full")
	ErrOrganizationExists  = errors.New("controlplane: organization slug taken")
	ErrEnvironmentExists   = errors.New("controlplane: environment slug taken in organization")
	ErrHostnameTaken       = errors.New("controlplane: hostname taken")
	ErrOrganizationMissing = errors.New("controlplane: organization does not exist")
	// ErrRequestReused means a request_id was sent again with different content.
	ErrRequestReused = errors.New("controlplane: request id reused for a different request")
	// ErrStatusMismatch means a conditional patch (EnvironmentPatch.IfStatus)
	// found the environment in another status, typically because a concurrent
	// caller moved it first, and changed nothing.
	ErrStatusMismatch = errors.New("controlplane: environment status is not the one expected")
	// ErrHostnameMoved means a conditional patch (EnvironmentPatch.IfHostname)
	// found the environment with another hostname or challenge, typically
	// because it was changed while a check ran, and changed nothing.
	ErrHostnameMoved = errors.New("controlplane: environment hostname is not the one expected")
)

// Hostname states. Only a verified hostname routes; at most one environment
// holds a hostname verified, while any number may claim it pending.
const (
	HostnameVerified = "verified"
	HostnamePending  = "pending"
	// HostnameLapsed is a hostname that was verified and stopped proving
	// ownership for longer than the grace period.
	HostnameLapsed = "lapsed"
)

// How a hostname was verified (HostnameProof.Method).
const (
	// VerifiedGenerated: the platform's own name, under the root domain.
	VerifiedGenerated = "generated"
	// VerifiedOperator: set or marked verified by a platform-admin token.
	VerifiedOperator = "operator"
	VerifiedDNS      = "dns"
	VerifiedHTTP     = "http"
	// VerifiedMigrated: a hostname bound before ownership was checked,
	// kept routing by the migration that introduced the checks.
	VerifiedMigrated = "migrated"
)

// HostnameProof is what the control plane knows of an environment's claim
// to its hostname: whether it routes, how it was proven, and the checks.
type HostnameProof struct {
	State string
	// Method says how the hostname was last verified ("" while never).
	Method string
	// Token is the challenge the owner publishes ("" for generated names).
	Token string
	// VerifyTime is the last successful proof.
	VerifyTime time.Time
	// CheckTime is the last check, whatever its outcome.
	CheckTime time.Time
	// NextCheckTime is when the background loop checks next (zero: never,
	// as for generated and operator-verified names).
	NextCheckTime time.Time
	// Failures counts checks failed in a row, for backoff.
	Failures int
	// Message is the outcome of the last check, for the owner to read.
	Message string
	// FailingSince is when a verified hostname first failed a re-check; it
	// keeps routing until FailingSince plus the grace period.
	FailingSince time.Time
}

// Routes reports whether the hostname routes to its environment.
func (p HostnameProof) Routes() bool { return p.State == HostnameVerified }

// Organization owns environments.
type Organization struct {
	ID          string
	Slug        string
	DisplayName string
	// RequestID is the client's idempotency key of the create, if any.
	RequestID string
	// RequestDigest is a digest of the create request that carried
	// RequestID, computed by the caller; a create with the same RequestID and
	// the same digest is a retry, with another digest ErrRequestReused. Empty
	// when RequestID is empty.
	RequestDigest string
	CreateTime    time.Time
	UpdateTime    time.Time
}

// Environment is one environment of an organization with its own database.
type Environment struct {
	ID             string
	OrganizationID string
	Slug           string
	DisplayName    string
	Type           string
	Driver         string
	Status         string
	// StatusMessage explains a failed status; sanitized, never secrets or paths.
	StatusMessage string
	IsDefault     bool
	Hostname      string
	// Proof is the environment's claim to Hostname.
	Proof          HostnameProof
	Region         string
	StorageLimitMB int64
	// DatabaseURL locates the environment's database, without any secret.
	DatabaseURL string
	RequestID   string
	// RequestDigest is a digest of the create request that carried
	// RequestID, computed by the caller; a create with the same RequestID and
	// the same digest is a retry, with another digest ErrRequestReused. Empty
	// when RequestID is empty.
	RequestDigest string
	CreateTime    time.Time
	UpdateTime    time.Time
	ProvisionTime time.Time // zero until provisioned
	// ExternalDatabase marks a database the user brought (database_url at
	// create): envplane connects to it but never provisions or drops it.
	ExternalDatabase bool
	// Credential is the sealed secret of the database (zero: none).
	Credential Credential
	// ResourcesMayExist says a provisioning attempt may have created
	// something on the environment's engine (a database, a role, a file), so
	// deleting the environment must remove it first. An environment is
	// inserted with it false; each attempt's outcome sets it unless that
	// attempt provably reached nothing, and nothing clears it. It is final
	// only while no attempt runs (status failed, say). Rows from before the
	// column existed read true.
	ResourcesMayExist bool
}

// Credential is an environment's database secret, encrypted at rest
// (secrets.Sealed, bound to the environment id). The key id names the master
// key that sealed it, so keys can rotate. A Credential with an empty
// Ciphertext is none: stores keep no part of it and hand it back as the zero
// Credential, with a nil (never an empty non-nil) Ciphertext.
type Credential struct {
	KeyID      string
	Ciphertext []byte
	RotateTime time.Time
}

// DefaultMode says how a new environment relates to its organization's default.
type DefaultMode int

const (
	// DefaultIfFirst makes the environment the default when the organization has none.
	DefaultIfFirst DefaultMode = iota
	// DefaultYes makes it the default, moving the flag from the old one atomically.
	DefaultYes
	// DefaultNo never makes it the default.
	DefaultNo
)

// EnvironmentPatch holds the fields an update changes; nil fields are kept.
type EnvironmentPatch struct {
	// IfStatus, when not empty, makes the patch a compare-and-set: it applies
	// only while the environment's status is one of these, checked atomically
	// with the write, and otherwise fails with ErrStatusMismatch. It is how
	// concurrent callers, on any replica, agree on which one of them moves an
	// environment from one status to the next.
	IfStatus []string
	// IfUpdatedBefore, when set, narrows the compare-and-set further: the
	// patch applies only while the environment was last updated before
	// this time, and otherwise fails with ErrStatusMismatch. A patch sets
	// UpdateTime, so of concurrent patches with the same condition exactly
	// one applies.
	IfUpdatedBefore *time.Time
	// IfHostname, when set, makes the patch apply only while the
	// environment's hostname and challenge token are these, and otherwise
	// fail with ErrHostnameMoved: a check's outcome is recorded only for the
	// claim it checked.
	IfHostname *HostnameClaim
	Hostname   *string
	// Proof replaces the hostname's proof. A verified proof of a hostname
	// another environment holds verified is ErrHostnameTaken, unless
	// TakeHostname is set.
	Proof *HostnameProof
	// TakeHostname makes a verified Proof take the hostname from the
	// environment that holds it, whose claim falls back to pending in the
	// same transaction: whoever proves ownership last holds the name.
	TakeHostname   bool
	DisplayName    *string
	IsDefault      *bool
	Status         *string
	StatusMessage  *string
	Region         *string
	StorageLimitMB *int64
	DatabaseURL    *string
	ProvisionTime  *time.Time
	// Credential replaces the sealed secret (the old one is gone with it).
	Credential *Credential
	// ResourcesMayExist sets Environment.ResourcesMayExist.
	ResourcesMayExist *bool
}

// HostnameClaim names a claim to a hostname: the name and its challenge.
type HostnameClaim struct {
	Hostname string
	Token    string
	// Proof, when set, must be the claim's proof as it is too (its state,
	// method and check and verify times): a check's outcome, which replaces
	// the proof it read, is dropped when another outcome or an operator's
	// word was recorded meanwhile.
	Proof *HostnameProof
}

// mismatches reports that cur fails the patch's conditions (IfStatus,
// IfUpdatedBefore): both stores check them in the transaction that reads and
// writes the row.
func (p EnvironmentPatch) mismatches(cur Environment) bool {
	return len(p.IfStatus) > 0 && !slices.Contains(p.IfStatus, cur.Status) ||
		p.IfUpdatedBefore != nil && !cur.UpdateTime.Before(*p.IfUpdatedBefore)
}

// hostnameMoved reports that cur fails the patch's IfHostname condition.
func (p EnvironmentPatch) hostnameMoved(cur Environment) bool {
	c := p.IfHostname
	if c == nil {
		return false
	}
	if cur.Hostname != c.Hostname || cur.Proof.Token != c.Token {
		return true
	}
	return c.Proof != nil && (cur.Proof.State != c.Proof.State || cur.Proof.Method != c.Proof.Method ||
		!cur.Proof.CheckTime.Equal(c.Proof.CheckTime) || !cur.Proof.VerifyTime.Equal(c.Proof.VerifyTime))
}

// Page asks for at most Limit items whose id sorts after After ("" = start).
// Ids are UUIDv7, so id order is creation order.
type Page struct {
	After string
	Limit int
}

// Token is an API token as stored: the principal of every call. Only a hash
// of the secret is kept; the secret itself is shown once, at creation.
type Token struct {
	ID   string
	Name string
	// OrganizationID is "" for a platform-wide token.
	OrganizationID string
	// Role is admin, developer, editor or viewer.
	Role          string
	PlatformAdmin bool
	// EnvironmentIDs limits the token to these environments when not empty.
	// Stores keep the order given and hand an empty list back as nil.
	EnvironmentIDs []string
	// SecretHash is the SHA-256 of the secret; unique.
	SecretHash []byte
	// SecretPrefix is the secret's first characters, for people to recognize it.
	SecretPrefix string
	// RequestID is the idempotency key of the create, scoped to the organization.
	RequestID string
	// RequestDigest is a digest of the create request that carried
	// RequestID, computed by the caller; a create with the same RequestID and
	// the same digest is a retry, with another digest ErrRequestReused. Empty
	// when RequestID is empty.
	RequestDigest string
	// CreatedBy is the id of the token that created this one ("" for bootstrap and CLI).
	CreatedBy  string
	CreateTime time.Time
	ExpireTime time.Time // zero: never expires
	RevokeTime time.Time // zero: not revoked
	// LastUseTime is updated at most about once a minute, not on every call.
	LastUseTime time.Time
	// ActiveEnvironmentID is the session's active environment ("" = none).
	ActiveEnvironmentID string
}
