package controlplane

import (
	"context"
	"errors"
	"time"
)

// ErrVersionConflict means an object definition changed since the caller
// read it (optimistic concurrency on Version).
var ErrVersionConflict = errors.New("controlplane: object definition changed concurrently")

// ObjectDefinition is one object definition of one environment, as stored:
// the definition itself is opaque to the store (the metadata service encodes
// it), so the store never needs to understand schemas.
type ObjectDefinition struct {
	EnvironmentID string
	Name          string
	// Definition is the encoded definition (protojson of envplane.metadata.v1.ObjectDefinition).
	Definition []byte
	// Version is 1 for a new object and increases by one with every change.
	Version    int64
	CreateTime time.Time
	UpdateTime time.Time
}

// ObjectMigration records the steps one version of a definition applied.
type ObjectMigration struct {
	EnvironmentID string
	Name          string
	Version       int64
	// Steps is the encoded list of steps (JSON).
	Steps     []byte
	ApplyTime time.Time
}

// ObjectStore keeps object definitions per environment, versioned, with the
// migration steps of each version. Definitions go when their environment goes.
type ObjectStore interface {
	// PutObjectDefinition stores def as version expected+1 with its
	// migration, in one transaction: expected 0 means the object must not
	// exist yet; otherwise the stored version must equal expected.
	// ErrVersionConflict otherwise; ErrNotFound when the environment is gone.
	// CreateTime is kept from the first version; UpdateTime set to def.UpdateTime.
	//
	// Precisely: the stored version is always expected+1, whatever
	// def.Version says. With expected > 0, a definition that does not exist
	// (never created, or deleted meanwhile) is ErrVersionConflict too, as the
	// caller's read is stale either way; a missing environment is
	// ErrNotFound whatever expected is. Of migration only Steps and
	// ApplyTime are used: it is recorded under def's environment and name and
	// the new version. A zero UpdateTime is the store's clock, a zero
	// CreateTime (first version) the UpdateTime, a zero ApplyTime the
	// UpdateTime. An empty Definition or Name is refused; nil Steps are
	// stored as empty and read back as nil. Concurrent puts with the same
	// expected version: exactly one succeeds, the others get
	// ErrVersionConflict and change nothing.
	PutObjectDefinition(ctx context.Context, def ObjectDefinition, expected int64, migration ObjectMigration) (ObjectDefinition, error)
	// GetObjectDefinition returns the current definition; ErrNotFound.
	GetObjectDefinition(ctx context.Context, environmentID, name string) (ObjectDefinition, error)
	// ListObjectDefinitions lists an environment's definitions by name (byte
	// order), names after page.After, with the page limits of the other
	// lists. An environment that does not exist has none (an empty page).
	ListObjectDefinitions(ctx context.Context, environmentID string, page Page) ([]ObjectDefinition, error)
	// ListObjectMigrations lists the migrations of an object, oldest first;
	// an object that does not exist has none (no error).
	ListObjectMigrations(ctx context.Context, environmentID, name string) ([]ObjectMigration, error)
	// DeleteObjectDefinition removes the definition and its migrations; ErrNotFound.
	DeleteObjectDefinition(ctx context.Context, environmentID, name string) error
	// DeleteObjectDefinitionIf removes the definition and its migrations
	// only while it is the one the caller read: version and createTime
	// (which tells a re-created object from the one before). A definition
	// changed or re-created since is ErrVersionConflict and stays; one gone
	// is ErrNotFound.
	DeleteObjectDefinitionIf(ctx context.Context, environmentID, name string, version int64, createTime time.Time) error
}
