package app_test

import (
	"fmt"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/services/environment"
)

// skippedDeprovision is the log line of a delete that found nothing to
// remove on the engine.
const skippedDeprovision = "no provisioning attempt made anything; the engine is not asked to remove it"

// unreachableAdminFlag is a --postgres-admin-url no cluster listens on.
func unreachableAdminFlag(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("--postgres-admin-url=postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", apptest.FreePort(t))
}

// wantResourcesMayExist fails t unless the control plane's flag for the
// environment is want.
func wantResourcesMayExist(t *testing.T, env *apptest.Env, id string, want bool) {
	t.Helper()
	got, err := env.ControlPlane(t).GetEnvironment(t.Context(), id)
	if err != nil {
		t.Fatalf("read environment %s from the control plane: %v", id, err)
	}
	if got.ResourcesMayExist != want {
		t.Errorf("environment %s: ResourcesMayExist = %v, want %v", id, got.ResourcesMayExist, want)
	}
}

// TestDeleteNeverProvisionedPostgresEnvironment: a postgres environment whose
// cluster was never reached, at create nor at a retry, is deleted without
// reaching it (it is still down), and its slug and hostname are free again.
func TestDeleteNeverProvisionedPostgresEnvironment(t *testing.T) {
	t.Parallel()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			env := apptest.Start(t, unreachableAdminFlag(t))
			c := env.Client(p)
			ctx := t.Context()
			org := createOrg(t, c, "acme")
			req := &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres",
				Hostname: proto.String("dev.acme.test"), IsDefault: proto.Bool(false)}

			failed := createEnv(t, c, req)
			if failed.GetStatus() != "failed" {
				t.Fatalf("created with the cluster out of reach = %v, want failed", failed)
			}
			wantResourcesMayExist(t, env, failed.GetId(), false)
			// A retry that reaches nothing either keeps it so.
			retried, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
			if err != nil || retried.Msg.GetEnvironment().GetStatus() != "failed" {
				t.Fatalf("RetryProvisioning = %v, %v; want failed again", retried, err)
			}
			wantResourcesMayExist(t, env, failed.GetId(), false)

			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: failed.GetId()})); err != nil {
				t.Fatalf("DeleteEnvironment with the cluster still out of reach: %v", err)
			}
			if n := len(env.Logs.Find(map[string]any{"msg": skippedDeprovision, "environment_id": failed.GetId()})); n != 1 {
				t.Errorf("%d log lines that the delete skipped the engine, want 1", n)
			}
			_, err = c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: failed.GetId()}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)

			again := createEnv(t, c, req)
			if again.GetId() == failed.GetId() || again.GetSlug() != "dev" || again.GetHostname() != "dev.acme.test" {
				t.Errorf("created again = %v, want a new environment with the slug and hostname", again)
			}
		})
	}
}

// TestDeletePartlyProvisionedPostgresEnvironment: provisioning through an
// admin without CREATEDB makes the role and fails at the database, so the
// delete must go through the engine and remove the role; a later retry that
// reaches nothing does not make that forgotten.
func TestDeletePartlyProvisionedPostgresEnvironment(t *testing.T) {
	t.Parallel()
	flags, _, _ := pgControlPlaneFlags(t)
	superURL := apptest.PostgresURL(t)
	su := apptest.PostgresPool(t, superURL)
	_, adminURL := pgLimitedAdmin(t, su)
	// Two replicas of one control plane: one reaches the cluster through the
	// limited admin, the other cannot reach it at all.
	limited := apptest.Start(t, append(slices.Clone(flags), "--postgres-admin-url="+adminURL)...)
	cut := apptest.Start(t, append(slices.Clone(flags), unreachableAdminFlag(t))...)
	c := limited.Client(apptest.ConnectProto)
	cc := cut.ClientWithToken(apptest.GRPC, limited.Token)
	ctx := t.Context()
	org := createOrg(t, c, "acme")

	failed := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres", IsDefault: proto.Bool(false)})
	apptest.PostgresEnvironmentCleanup(t, superURL, failed.GetId())
	name := pgName(t, failed.GetId())
	if failed.GetStatus() != "failed" {
		t.Fatalf("created = %v, want failed: the admin cannot create databases", failed)
	}
	if !pgLookupRole(t, su, name).exists {
		t.Fatalf("the failed attempt made no role; the test needs one made")
	}
	wantResourcesMayExist(t, limited, failed.GetId(), true)

	// A retry on the replica that reaches nothing: the role is still there.
	retried, err := cc.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
	if err != nil || retried.Msg.GetEnvironment().GetStatus() != "failed" {
		t.Fatalf("RetryProvisioning on the cut replica = %v, %v; want failed again", retried, err)
	}
	wantResourcesMayExist(t, limited, failed.GetId(), true)
	_, err = cc.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: failed.GetId()}))
	apptest.WantError(t, err, connect.CodeUnavailable, environment.ReasonDeprovisionFailed)
	if !pgLookupRole(t, su, name).exists {
		t.Fatalf("the role is gone, yet the delete failed")
	}

	// The replica that reaches the cluster finishes the delete, role included.
	if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: failed.GetId()})); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	pgWantGone(t, su, failed.GetId())
	for _, s := range []*apptest.Env{limited, cut} {
		if n := len(s.Logs.Find(map[string]any{"msg": skippedDeprovision, "environment_id": failed.GetId()})); n != 0 {
			t.Errorf("a delete skipped the engine for an environment whose role exists")
		}
	}
}
