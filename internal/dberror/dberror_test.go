package dberror_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/controlplane/cptest"
	"github.com/envplane/envplane/internal/dberror"
	"github.com/envplane/envplane/internal/driver"
)

// countingStore is a real control plane that counts the reads Classify
// makes of it.
type countingStore struct {
	*controlplane.SQLite
	reads atomic.Int64
}

func (s *countingStore) GetEnvironment(ctx context.Context, id string) (controlplane.Environment, error) {
	s.reads.Add(1)
	return s.SQLite.GetEnvironment(ctx, id)
}

// TestClassify: the answers of a database that works (no such record, a
// duplicate, a stale etag) are left to the service and never read the
// control plane; a failure of a database whose environment is being
// deleted is ENVIRONMENT_DELETING; one of a live environment is left to
// the service too.
func TestClassify(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	sqlite, env := cptest.WithEnvironment(t, "sqlite")
	store := &countingStore{SQLite: sqlite}
	log := slog.New(slog.DiscardHandler)

	for _, err := range []error{
		driver.ErrNotFound, driver.ErrAlreadyExists, driver.ErrEtagMismatch,
		fmt.Errorf("insert: %w", &driver.UniqueViolationError{Fields: []string{"email"}}),
		fmt.Errorf("get: %w", driver.ErrNotFound), context.Canceled,
	} {
		if got := dberror.Classify(ctx, store, env.ID, err, log); got != nil {
			t.Errorf("Classify(%v) = %v, want nil (the service's own answer)", err, got)
		}
	}
	if n := store.reads.Load(); n != 0 {
		t.Errorf("answers of a working database read the control plane %d times, want 0", n)
	}

	failure := errors.New("the connection was terminated")
	if got := dberror.Classify(ctx, store, env.ID, failure, log); got != nil {
		t.Errorf("Classify(failure) of a live environment = %v, want nil", got)
	}
	if n := store.reads.Load(); n != 1 {
		t.Errorf("a failure read the control plane %d times, want 1", n)
	}
	deleting := controlplane.StatusDeleting
	if _, err := store.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{Status: &deleting}); err != nil {
		t.Fatal(err)
	}
	if got := apierr.Reason(dberror.Classify(ctx, store, env.ID, failure, log)); got != dberror.ReasonEnvironmentDeleting {
		t.Errorf("Classify(failure) of a deleting environment: reason %q, want %s", got, dberror.ReasonEnvironmentDeleting)
	}
	if got := apierr.Reason(dberror.Classify(ctx, store, uuid.NewString(), failure, log)); got != dberror.ReasonEnvironmentDeleting {
		t.Errorf("Classify(failure) of a deleted environment: reason %q, want %s", got, dberror.ReasonEnvironmentDeleting)
	}
}
