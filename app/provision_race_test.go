package app_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/services/environment"
)

// provisioningRuns counts the provisioning runs the servers logged for an
// environment: each run ends with exactly one of these lines.
func provisioningRuns(id string, servers ...*apptest.Env) (succeeded, failed int) {
	for _, s := range servers {
		succeeded += len(s.Logs.Find(map[string]any{"msg": "environment provisioned", "environment_id": id}))
		failed += len(s.Logs.Find(map[string]any{"msg": "provisioning failed", "environment_id": id}))
	}
	return succeeded, failed
}

// wantRetryWinner fails t unless exactly one retry succeeded, with the
// environment active, and every other one was refused as not failed, having
// found the environment provisioning (the winner at work) or active (done).
func wantRetryWinner(t *testing.T, resps []*environmentv1.Environment, errs []error) {
	t.Helper()
	w := wantOneWinner(t, errs, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotFailed)
	if w >= 0 && resps[w].GetStatus() != "active" {
		t.Errorf("the winning retry answered %v, want an active environment", resps[w])
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		if status := apierr.Info(err).GetMetadata()["status"]; status != "provisioning" && status != "active" {
			t.Errorf("retry %d: ErrorInfo status = %q, want provisioning or active", i, status)
		}
	}
}

// TestRetryProvisioningRace fires concurrent retries at one failed
// environment: exactly one provisions it, the others are refused, and
// provisioning runs once.
func TestRetryProvisioningRace(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, _ apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")
		repair := breakSQLiteProvisioning(t, env)
		failed := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
		if failed.GetStatus() != "failed" {
			t.Fatalf("created = %v, want failed", failed)
		}
		repair()

		resps := make([]*environmentv1.Environment, racers)
		errs := race(func(i int) error {
			resp, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
			if err == nil {
				resps[i] = resp.Msg.GetEnvironment()
			}
			return err
		})
		wantRetryWinner(t, resps, errs)

		if got := getEnv(t, c, failed.GetId()); got.GetStatus() != "active" || got.GetDatabaseUrl() != "sqlite:"+failed.GetId() {
			t.Errorf("after the race = %v, want active with its database", got)
		}
		if succeeded, failures := provisioningRuns(failed.GetId(), env); succeeded != 1 || failures != 1 {
			t.Errorf("provisioning runs logged: %d succeeded, %d failed; want the create's failure and one retry's success", succeeded, failures)
		}
		if files := env.EnvFiles(t); !slices.Equal(files, []string{failed.GetId() + ".db"}) {
			t.Errorf("envs dir holds %q, want the environment's database only", files)
		}
	})
}

// TestRetryProvisioningRaceAcrossReplicas runs the race of
// TestRetryProvisioningRace on two replicas sharing a PostgreSQL control
// plane, with a postgres environment whose cluster a third replica could not
// reach: one retry creates the database and role, and the credential stored
// is the one the role has (two runs would each set a password, and the one
// recorded last need not be the one set last).
func TestRetryProvisioningRaceAcrossReplicas(t *testing.T) {
	t.Parallel()
	flags, _, kr := pgControlPlaneFlags(t)
	adminURL := apptest.PostgresURL(t)
	unreachable := fmt.Sprintf("--postgres-admin-url=postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", apptest.FreePort(t))
	cut := apptest.Start(t, append(slices.Clone(flags), unreachable)...)
	a := apptest.Start(t, flags...)
	b := apptest.Start(t, flags...)
	ctx := t.Context()

	org := createOrg(t, cut.Client(apptest.ConnectProto), "acme")
	failed := createEnv(t, cut.Client(apptest.ConnectProto), &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "postgres"})
	apptest.PostgresEnvironmentCleanup(t, adminURL, failed.GetId())
	if failed.GetStatus() != "failed" {
		t.Fatalf("created with the cluster out of reach = %v, want failed", failed)
	}

	clients := []client{a.ClientWithToken(apptest.ConnectProto, cut.Token), b.ClientWithToken(apptest.GRPC, cut.Token)}
	resps := make([]*environmentv1.Environment, racers)
	errs := race(func(i int) error {
		resp, err := clients[i%2].RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: failed.GetId()}))
		if err == nil {
			resps[i] = resp.Msg.GetEnvironment()
		}
		return err
	})
	wantRetryWinner(t, resps, errs)

	got := getEnv(t, clients[0], failed.GetId())
	if got.GetStatus() != "active" {
		t.Fatalf("after the race = %v, want active", got)
	}
	if succeeded, failures := provisioningRuns(failed.GetId(), cut, a, b); succeeded != 1 || failures != 1 {
		t.Errorf("provisioning runs logged: %d succeeded, %d failed; want the create's failure and one retry's success", succeeded, failures)
	}
	_, secret := apptest.EnvironmentSecret(t, a.ControlPlane(t), kr, failed.GetId())
	pgWantConnects(t, got.GetDatabaseUrl(), secret)
}

// TestRetryProvisioningRacesDelete races a retry and a delete of each of
// several failed environments. Whichever wins, the environment ends deleted
// with nothing left of its database: a retry that provisioned under the
// delete removes what it made.
func TestRetryProvisioningRacesDelete(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	c := env.Client(apptest.ConnectProto)
	ctx := t.Context()
	org := createOrg(t, c, "acme")
	repair := breakSQLiteProvisioning(t, env)
	ids := make([]string, racers/2)
	for i := range ids {
		e := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: fmt.Sprintf("env-%d", i), Driver: "sqlite"})
		if e.GetStatus() != "failed" {
			t.Fatalf("created = %v, want failed", e)
		}
		ids[i] = e.GetId()
	}
	repair()

	// Calls 2k and 2k+1 retry and delete environment k.
	errs := race(func(i int) error {
		id := ids[i/2]
		if i%2 == 0 {
			_, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: id}))
			return err
		}
		_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: id, Force: true}))
		return err
	})
	for i, err := range errs {
		switch {
		case err == nil:
		case i%2 == 1:
			t.Errorf("delete of %s: %v", ids[i/2], err)
		case connect.CodeOf(err) == connect.CodeNotFound:
			// Deleted before the retry read it, or while it provisioned.
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
		default:
			// The delete marked it deleting first.
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotFailed)
		}
	}
	if envs := listEnvs(t, c, org.GetId()); len(envs) != 0 {
		t.Errorf("%d environments left, want none", len(envs))
	}
	if files := env.EnvFiles(t); len(files) != 0 {
		t.Errorf("envs dir holds %q, want nothing: every environment was deleted", files)
	}
}

// TestStatusChangeRacesDelete races status changes of an active environment
// against its deletion, whose removal of the database fails (its file is a
// directory that cannot be removed), so the environment stays deleting: no
// status change may land after the delete marked it so, which would route
// calls to an environment whose database is being removed. The race runs a
// few rounds, each on an environment of its own, as one round may well see
// every change land before the delete.
func TestStatusChangeRacesDelete(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	c := env.Client(apptest.ConnectProto)
	ctx := t.Context()
	org := createOrg(t, c, "acme")
	for round := range 4 {
		dev := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: fmt.Sprintf("dev-%d", round), Driver: "sqlite"})
		path := env.SQLitePath(dev.GetId())
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Join(path, "keep"), 0o700); err != nil {
			t.Fatal(err)
		}

		errs := race(func(i int) error {
			if i == 0 {
				_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId(), Force: true}))
				return err
			}
			status := "suspended"
			if i%2 == 0 {
				status = "active"
			}
			_, err := c.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Status: proto.String(status)}))
			return err
		})
		apptest.WantError(t, errs[0], connect.CodeUnavailable, environment.ReasonDeprovisionFailed)
		for i, err := range errs[1:] {
			if err == nil {
				continue // landed before the delete
			}
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotReady)
			if status := apierr.Info(err).GetMetadata()["status"]; status != "deleting" {
				t.Errorf("round %d, update %d: ErrorInfo status = %q, want deleting", round, i+1, status)
			}
		}
		if got := getEnv(t, c, dev.GetId()); got.GetStatus() != "deleting" {
			t.Errorf("round %d: status after the race = %q, want deleting", round, got.GetStatus())
		}
	}
}
