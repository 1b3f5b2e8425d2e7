// Package dberror turns the errors of an environment's database that mean
// the same to every service (storage full, storage limit, schema drift, a
// database gone with its environment) into the errors clients see, so the
// data and metadata services answer them alike. Errors only one service
// knows stay with that service.
package dberror

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver"
)

// Reasons.
const (
	// ReasonStorageFull: the storage of the environment's database (or of
	// the control plane) has no room; nothing of the write was kept.
	ReasonStorageFull = "STORAGE_FULL"
	// ReasonStorageLimitExceeded: the write would take the environment's
	// database past its storage_limit_mb; nothing of it was kept.
	ReasonStorageLimitExceeded = "STORAGE_LIMIT_EXCEEDED"
	// ReasonSchemaDrift: the object's table does not hold its definition.
	ReasonSchemaDrift = "SCHEMA_DRIFT"
	// ReasonEnvironmentDeleting: the environment (and so its database) is
	// going away.
	ReasonEnvironmentDeleting = "ENVIRONMENT_DELETING"
)

// Error returns the client's error for err, or nil when err is not one of
// the errors this package knows.
func Error(err error) error {
	var drift *driver.DriftError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrStorageLimit):
		return apierr.New(connect.CodeResourceExhausted, ReasonStorageLimitExceeded,
			"the environment's database reached its storage limit; nothing was written: delete records or raise storage_limit_mb")
	case errors.Is(err, driver.ErrStorageFull):
		return StorageFull()
	case errors.As(err, &drift):
		return apierr.New(connect.CodeFailedPrecondition, ReasonSchemaDrift,
			"the table of object "+drift.Object+" does not match its definition: "+drift.Reason+
				"; repair it with PutObject and repair REPAIR_REAPPLY or REPAIR_ADOPT",
			"object", drift.Object, "drift", drift.Reason)
	case errors.Is(err, driver.ErrGone):
		return deleting()
	}
	return nil
}

// ControlPlane returns the client's error for a control-plane error that
// means the same to every service (its storage is full), nil otherwise.
func ControlPlane(err error) error {
	if errors.Is(err, controlplane.ErrStorageFull) {
		return StorageFull()
	}
	return nil
}

// Classify is the client's error for a failure of a call on an
// environment's database or the control plane that means the same to every
// service: Error's, the control plane's full storage, or a deletion the
// call raced (Deleting: asked only for errors that may be one). nil when it
// is none of them; log hears about a full control plane.
func Classify(ctx context.Context, envs Environments, environmentID string, err error, log *slog.Logger) error {
	if err == nil {
		return nil
	}
	if known := Error(err); known != nil {
		return known
	}
	if known := ControlPlane(err); known != nil {
		log.Error("the control plane's storage is full")
		return known
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || outcome(err) {
		return nil
	}
	return Deleting(ctx, envs, environmentID)
}

// outcome reports whether err is an answer of a database that works (no
// such record, a duplicate, a stale etag): it needs no look at the
// control plane, so a client asking for missing records over and over
// costs the control plane nothing.
func outcome(err error) bool {
	var uv *driver.UniqueViolationError
	return errors.Is(err, driver.ErrNotFound) || errors.Is(err, driver.ErrAlreadyExists) ||
		errors.Is(err, driver.ErrEtagMismatch) || errors.As(err, &uv)
}

// deletingTimeout bounds Deleting's read of the control plane, which runs
// after the caller's own deadline may have passed.
const deletingTimeout = 2 * time.Second

// Environments reads an environment's current row.
type Environments interface {
	GetEnvironment(ctx context.Context, id string) (controlplane.Environment, error)
}

// Deleting returns ENVIRONMENT_DELETING when the environment is being
// deleted or is gone, nil otherwise (or when that cannot be told): a call
// whose database failed under it may have raced the deletion, and then
// "retry" would be the wrong answer, whatever the database said (a
// terminated connection, a role or file that is no longer there).
func Deleting(ctx context.Context, envs Environments, environmentID string) error {
	if envs == nil || environmentID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deletingTimeout)
	defer cancel()
	env, err := envs.GetEnvironment(ctx, environmentID)
	if errors.Is(err, controlplane.ErrNotFound) || (err == nil && env.Status == controlplane.StatusDeleting) {
		return deleting()
	}
	return nil
}

func deleting() error {
	return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentDeleting,
		"the environment is being deleted")
}

// StorageFull is the error of a write that found no room.
func StorageFull() error {
	return apierr.New(connect.CodeResourceExhausted, ReasonStorageFull,
		"the storage is full; nothing was written: free space, then retry")
}
