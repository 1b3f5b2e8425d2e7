package engine_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/engine"
	"github.com/envplane/envplane/internal/provision"
)

// rows serves one environment row.
type rows struct{ env controlplane.Environment }

func (r rows) GetEnvironment(_ context.Context, id string) (controlplane.Environment, error) {
	if id != r.env.ID {
		return controlplane.Environment{}, controlplane.ErrNotFound
	}
	return r.env, nil
}

// TestOpenSQLiteNeverCreates: the opener opens the database a provisioning
// made, and creates none: not for an environment being deleted (a call that
// raced the delete), not when the file is gone.
func TestOpenSQLiteNeverCreates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	lite := provision.NewSQLite(t.TempDir())
	env := controlplane.Environment{ID: "01a21c9d-98e2-78e2-81c7-bb363b5b4ce3", Driver: provision.DriverSQLite, Status: controlplane.StatusActive}
	open := func(status string) error {
		env := env
		env.Status = status
		d, err := engine.New(rows{env}, nil, lite, engine.NewMemory()).Open(ctx, env.ID)
		if err == nil {
			_ = d.Close()
		}
		return err
	}
	wantNoFile := func(what string) {
		t.Helper()
		if _, err := os.Stat(lite.Path(env.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the database file exists (%v)", what, err)
		}
	}

	if err := open(controlplane.StatusActive); !errors.Is(err, engine.ErrNotProvisioned) {
		t.Errorf("active without a file: %v, want ErrNotProvisioned", err)
	}
	wantNoFile("active without a file")

	if _, err := lite.Provision(ctx, env); err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{controlplane.StatusActive, controlplane.StatusSuspended} {
		if err := open(status); err != nil {
			t.Errorf("%s: %v", status, err)
		}
	}
	for _, status := range []string{controlplane.StatusDeleting, controlplane.StatusProvisioning, controlplane.StatusFailed} {
		if err := open(status); !errors.Is(err, engine.ErrNotProvisioned) {
			t.Errorf("%s: %v, want ErrNotProvisioned", status, err)
		}
	}

	if err := lite.Deprovision(ctx, env); err != nil {
		t.Fatal(err)
	}
	if err := open(controlplane.StatusDeleting); !errors.Is(err, engine.ErrNotProvisioned) {
		t.Errorf("deleting, file removed: %v, want ErrNotProvisioned", err)
	}
	wantNoFile("deleting, file removed")
}

// TestOpenMemoryAfterDeprovision: a call that read a memory environment
// active just before its deletion finds its database gone, and makes no new
// one to write into.
func TestOpenMemoryAfterDeprovision(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mem := engine.NewMemory()
	env := controlplane.Environment{ID: "01a21c9d-98e2-78e2-81c7-bb363b5b4ce4", Driver: provision.DriverMemory, Status: controlplane.StatusActive}
	opener := engine.New(rows{env}, nil, provision.NewSQLite(t.TempDir()), mem)
	if _, err := mem.Provision(ctx, env); err != nil {
		t.Fatal(err)
	}
	d, err := opener.Open(ctx, env.ID)
	if err != nil {
		t.Fatalf("Open of a provisioned memory environment: %v", err)
	}
	_ = d.Close()
	if err := mem.Deprovision(ctx, env); err != nil {
		t.Fatal(err)
	}
	// The row still reads active (the racing call read it before the delete).
	if d, err := opener.Open(ctx, env.ID); !errors.Is(err, driver.ErrGone) {
		if err == nil {
			_ = d.Close()
		}
		t.Fatalf("Open after Deprovision: %v, want driver.ErrGone", err)
	}
	// Provisioned again (a retried create of the same id), it opens.
	if _, err := mem.Provision(ctx, env); err != nil {
		t.Fatal(err)
	}
	if d, err := opener.Open(ctx, env.ID); err != nil {
		t.Errorf("Open after a new Provision: %v", err)
	} else {
		_ = d.Close()
	}
}
