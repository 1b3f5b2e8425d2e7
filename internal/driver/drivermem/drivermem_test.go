package drivermem_test

import (
	"errors"
	"testing"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivermem"
	"github.com/envplane/envplane/internal/driver/drivertest"
	"github.com/envplane/envplane/internal/schema"
)

func open(t *testing.T) driver.Driver {
	d := drivermem.New()
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, open)
}

// TestLedger runs the ledger cases; nothing reaches a memory database
// beside its driver, so the cases that tamper with one do not apply.
func TestLedger(t *testing.T) {
	drivertest.RunLedger(t, open, nil)
}

// TestHandle checks that closing a handle ends only that handle: the data
// stays for the next handle, as a registry evicting a memory environment
// needs.
func TestHandle(t *testing.T) {
	ctx := t.Context()
	obj := &schema.Object{Name: "notes", Fields: []schema.Field{{Name: "title", Type: schema.TypeText}}}
	d := drivermem.New()
	if err := d.Migrate(ctx, drivertest.Next(t, d, obj, schema.Plan(nil, obj))); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	h := d.Handle()
	rec := driver.Record{"id": "n1", "title": "kept", "etag": "e1"}
	if err := h.Insert(ctx, obj, rec); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := h.Get(ctx, obj, "n1"); !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("Get on a closed handle = %v; want ErrUnavailable", err)
	}
	if err := h.Close(); err == nil {
		t.Error("a second Close succeeded")
	}
	again := d.Handle()
	got, err := again.Get(ctx, obj, "n1")
	if err != nil || got["title"] != "kept" {
		t.Errorf("Get through a new handle = %v, %v; want the record", got, err)
	}
	if err := d.Ping(ctx); err != nil {
		t.Errorf("Ping on the first handle: %v", err)
	}
}
