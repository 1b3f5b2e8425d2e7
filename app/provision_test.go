package app_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/services/environment"
)

// TestFailedProvisioningAndRetry breaks SQLite provisioning for real: the
// envs directory is a regular file, so creating it fails.
func TestFailedProvisioningAndRetry(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")
		repair := breakSQLiteProvisioning(t, env)

		req := connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
		requestID := "provision." + safeID(p)
		req.Header().Set("X-Request-Id", requestID)
		resp, err := c.CreateEnvironment(ctx, req)
		if err != nil {
			t.Fatalf("CreateEnvironment: %v, want success with status failed", err)
		}
		failed := resp.Msg.GetEnvironment()
		if failed.GetStatus() != "failed" || failed.GetDatabaseUrl() != "" || failed.GetProvisionTime() != nil {
			t.Errorf("created = %v, want failed without database_url or provision_time", failed)
		}
		wantSafeMessage(t, env, failed.GetStatusMessage())
		if diff := diffEnv(failed, getEnv(t, c, failed.GetId())); diff != "" {
			t.Errorf("GetEnvironment differs from the create's answer (-create +get):\n%s", diff)
		}

		// The cause, which names the path, goes to the server log only, under the request id.
		if len(env.Logs.Find(map[string]any{"msg": "provisioning failure cause", "request_id": requestID, "environment_id": failed.GetId()})) == 0 {
			t.Errorf("no debug line with the provisioning failure cause for request %s", requestID)
		}

		t.Run("a failed environment cannot be activated by update", func(t *testing.T) {
			_, err := c.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: failed.GetId(), Status: proto.String("active")}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotReady)
			if s := getEnv(t, c, failed.GetId()).GetStatus(); s != "failed" {
				t.Errorf("status = %q, want failed", s)
			}
		})

		t.Run("other drivers still work", func(t *testing.T) {
			mem := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "mem", Driver: "memory"})
			if mem.GetStatus() != "active" {
				t.Errorf("memory environment status = %q, want active", mem.GetStatus())
			}
		})

		// second fails too and is deleted, never retried, once the directory is fixed.
		second := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "second", Driver: "sqlite"})
		if second.GetStatus() != "failed" {
			t.Errorf("second status = %q, want failed", second.GetStatus())
		}

		t.Run("retry while still broken", func(t *testing.T) {
			resp, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
			if err != nil {
				t.Fatalf("RetryProvisioning: %v", err)
			}
			got := resp.Msg.GetEnvironment()
			if got.GetStatus() != "failed" || got.GetDatabaseUrl() != "" {
				t.Errorf("after retry = %v, want still failed", got)
			}
			wantSafeMessage(t, env, got.GetStatusMessage())
		})

		repair()

		t.Run("retry once fixed", func(t *testing.T) {
			resp, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
			if err != nil {
				t.Fatalf("RetryProvisioning: %v", err)
			}
			got := resp.Msg.GetEnvironment()
			if got.GetStatus() != "active" || got.GetStatusMessage() != "" || got.GetDatabaseUrl() != "sqlite:"+failed.GetId() || got.GetProvisionTime() == nil {
				t.Errorf("after retry = %v, want active with its database", got)
			}
			wantFile(t, env.SQLitePath(failed.GetId()), true)
			if s := getEnv(t, c, failed.GetId()).GetStatus(); s != "active" {
				t.Errorf("GetEnvironment status = %q, want active", s)
			}
		})

		t.Run("delete a failed environment", func(t *testing.T) {
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: second.GetId()})); err != nil {
				t.Fatalf("DeleteEnvironment: %v", err)
			}
			_, err := c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: second.GetId()}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
			if files := env.EnvFiles(t); len(files) != 1 || files[0] != failed.GetId()+".db" {
				t.Errorf("envs dir holds %q, want the retried environment's database only", files)
			}
		})

		t.Run("retry an active environment", func(t *testing.T) {
			_, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotFailed)
		})
	})
}

// wantSafeMessage fails t unless msg explains a failure without naming a
// path on the server.
func wantSafeMessage(t *testing.T, env *apptest.Env, msg string) {
	t.Helper()
	if msg == "" {
		t.Errorf("status_message is empty, want an explanation")
	}
	if strings.Contains(msg, env.DataDir) || strings.Contains(msg, "/") || strings.Contains(msg, `\`) {
		t.Errorf("status_message %q names a path", msg)
	}
}
