package app_test

import (
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/services/environment"
)

// TestRetryAbandonedProvisioning: a server that stops during a provisioning
// run leaves its environment provisioning, with no run to finish it. Once
// no run can still be going (2.5 minutes, plus a minute for replicas'
// clocks), RetryProvisioning takes it as it takes a failed one; before,
// it refuses, saying from when it may.
func TestRetryAbandonedProvisioning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := apptest.StartDir(t, dir)
	c := first.Client(apptest.ConnectProto)
	org := createOrg(t, c, "acme")
	old := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "old", Driver: "sqlite"})
	recent := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "recent", Driver: "sqlite"})
	first.Stop(t)

	// What a server stopped mid-run leaves in the control plane: the status
	// set when the run began, and that moment as the last update. (old's
	// file is removed too, as if the run had not got to make it.)
	db, err := sql.Open("sqlite", filepath.Join(dir, "controlplane.db"))
	if err != nil {
		t.Fatal(err)
	}
	for id, ago := range map[string]time.Duration{old.GetId(): 4 * time.Minute, recent.GetId(): 10 * time.Second} {
		began := time.Now().Add(-ago).UTC().Format("2006-01-02T15:04:05.000000000Z07:00")
		if _, err := db.ExecContext(t.Context(), `UPDATE environments SET status = 'provisioning', database_url = '', update_time = ? WHERE id = ?`,
			began, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(first.SQLitePath(old.GetId()) + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	second := apptest.StartDir(t, dir)
	for _, p := range []apptest.Protocol{apptest.ConnectProto, apptest.GRPC} {
		if s := getEnv(t, second.Client(p), old.GetId()).GetStatus(); s != "provisioning" {
			t.Fatalf("after the restart old is %s, want provisioning", s)
		}
	}
	c = second.Client(apptest.ConnectJSON)

	// A run may still be going: refused, with the time from which it is not.
	_, err = c.RetryProvisioning(t.Context(), connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: recent.GetId()}))
	if apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotFailed) {
		from, perr := time.Parse(time.RFC3339, apierr.Info(err).GetMetadata()["retry_from"])
		if want := time.Now().Add(3*time.Minute + 20*time.Second); perr != nil || from.Before(want.Add(-5*time.Second)) || from.After(want.Add(5*time.Second)) {
			t.Errorf("retry_from = %v (%v), want about %v", from, perr, want)
		}
	}
	if s := getEnv(t, c, recent.GetId()).GetStatus(); s != "provisioning" {
		t.Errorf("a refused retry left recent %s", s)
	}

	// None can: provisioned again, and it serves data.
	retried, err := c.RetryProvisioning(t.Context(), connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: old.GetId()}))
	if err != nil {
		t.Fatalf("RetryProvisioning(abandoned): %v", err)
	}
	if env := retried.Msg.GetEnvironment(); env.GetStatus() != "active" || env.GetDatabaseUrl() == "" {
		t.Fatalf("retried = %v, want active with its database", env)
	}
	if diff := diffEnv(retried.Msg.GetEnvironment(), getEnv(t, c, old.GetId())); diff != "" {
		t.Errorf("GetEnvironment differs from the retry's answer (-retry +get):\n%s", diff)
	}
	dataDefine(t, second, old.GetId(), "note", dataField("text", "text"))
	dataCreate(t, second.DataClient(apptest.ConnectProto, second.AdminToken()), old.GetId(), "note", map[string]any{"text": "after the retry"})

	// Done once: a second retry finds it active.
	_, err = c.RetryProvisioning(t.Context(), connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: old.GetId()}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotFailed)
}
