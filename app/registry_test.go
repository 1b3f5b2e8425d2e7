package app_test

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/services/metadata"
)

// TestRegistryFollowsControlPlane checks, on every engine, that a change of
// an environment's row or credential reaches the very next metadata call:
// the registry drops the driver it holds and the resolver the row it cached.
func TestRegistryFollowsControlPlane(t *testing.T) {
	t.Parallel()
	env, pgURL := metaServer(t)
	admin := env.Client(apptest.ConnectProto)
	for i, engine := range metaEngines {
		p := []apptest.Protocol{apptest.GRPCWeb, apptest.ConnectJSON, apptest.GRPC}[i]
		t.Run(engine+"/"+string(p), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			org := createOrg(t, admin, "reg-"+engine)
			e := metaEnv(t, admin, pgURL, org, "dev", engine)
			id := e.GetId()
			c := env.MetadataClient(p, env.AdminToken())
			_, member := env.MintToken(t, &accessv1.CreateTokenRequest{Name: "member", OrganizationId: org.GetId(), Role: auth.RoleDeveloper})
			mc := env.MetadataClient(p, member)

			fields := []*metadatav1.Field{metaText("f1")}
			version := int64(0)
			// evolve adds a field: a migration, so the call needs the
			// environment's open driver.
			evolve := func(what string) {
				t.Helper()
				fields = append(fields, metaText("f"+string(rune('1'+len(fields)))))
				resp, err := c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "thing", Object: metaObject(fields...)}))
				if err != nil {
					t.Fatalf("%s: PutObject: %v", what, err)
				}
				version++
				if !resp.Msg.GetApplied() || resp.Msg.GetObject().GetVersion() != version {
					t.Errorf("%s: PutObject = applied %v version %d, want version %d", what, resp.Msg.GetApplied(), resp.Msg.GetObject().GetVersion(), version)
				}
				if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != id {
					t.Errorf("%s: X-Environment-Id = %q", what, h)
				}
			}
			// every way of naming the environment, as (client, request
			// header) pairs, for ListObjects.
			type namer struct {
				name   string
				client metaClient
				envID  string
				header map[string]string
			}
			namers := []namer{
				{name: "path", client: c, envID: id},
				{name: "header", client: c, header: map[string]string{apptest.HeaderEnvironmentID: id}},
				{name: "host", client: c, header: map[string]string{"Host": e.GetHostname()}},
				{name: "default", client: mc},
			}
			list := func(n namer) (*connect.Response[metadatav1.ListObjectsResponse], error) {
				req := connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: n.envID})
				for k, v := range n.header {
					req.Header().Set(k, v)
				}
				return n.client.ListObjects(ctx, req)
			}
			wantReachable := func(what string) {
				t.Helper()
				for _, n := range namers {
					resp, err := list(n)
					if err != nil {
						t.Errorf("%s: ListObjects by %s: %v", what, n.name, err)
						continue
					}
					if got := resp.Msg.GetObjects(); len(got) != 1 || got[0].GetName() != "thing" || got[0].GetVersion() != version {
						t.Errorf("%s: ListObjects by %s = %v, want thing at version %d", what, n.name, got, version)
					}
				}
			}

			evolve("first definition")
			evolve("warm driver")
			wantReachable("active")

			if engine == "postgres" {
				t.Run("credential rotated", func(t *testing.T) {
					adminPool := apptest.PostgresPool(t, pgURL)
					role := pgName(t, id)
					before := backendPIDs(t, adminPool, role)
					if len(before) == 0 {
						t.Fatalf("the server holds no connection to the environment's database before the rotation")
					}
					if _, err := admin.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: id})); err != nil {
						t.Fatalf("RotateCredential: %v", err)
					}
					evolve("first call after the rotation")
					wantReachable("after the rotation")
					// The driver opened with the old secret is gone, its
					// connections with it; the call used a new one.
					deadline := time.Now().Add(10 * time.Second)
					for {
						after := backendPIDs(t, adminPool, role)
						old := slices.DeleteFunc(slices.Clone(after), func(pid int32) bool { return !slices.Contains(before, pid) })
						if len(old) == 0 && len(after) > 0 {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("connections of the environment's role: before the rotation %v, after %v; want only new ones", before, after)
						}
						time.Sleep(20 * time.Millisecond)
					}
				})
			}

			// Suspended: the very next call, however it names the environment.
			updateEnv(t, admin, &environmentv1.UpdateEnvironmentRequest{Id: id, Status: proto.String("suspended")})
			for _, n := range namers {
				_, err := list(n)
				if !apptest.WantError(t, err, connect.CodeFailedPrecondition, resolve.ReasonEnvironmentSuspended) {
					t.Logf("ListObjects by %s", n.name)
				}
			}
			_, err := c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "thing", Object: metaObject(fields...)}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, resolve.ReasonEnvironmentSuspended)
			_, err = c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "thing", Force: true}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, resolve.ReasonEnvironmentSuspended)

			// Active again: served again, with the definitions and tables it had.
			updateEnv(t, admin, &environmentv1.UpdateEnvironmentRequest{Id: id, Status: proto.String("active")})
			wantReachable("reactivated")
			evolve("first write after reactivation")

			// Deleted: the next call naming it finds nothing.
			if _, err := admin.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: id, Force: true})); err != nil {
				t.Fatalf("DeleteEnvironment: %v", err)
			}
			for _, n := range namers {
				_, err := list(n)
				switch n.name {
				case "path", "header", "host":
					// Its generated hostname, under the platform's root
					// domain, names a missing environment: never a fall-through.
					if !apptest.WantError(t, err, connect.CodeNotFound, resolve.ReasonEnvironmentNotFound) {
						t.Logf("ListObjects by %s", n.name)
					}
				default:
					// The organization has no environment left.
					if !apptest.WantError(t, err, connect.CodeFailedPrecondition, resolve.ReasonEnvironmentNotResolved) {
						t.Logf("ListObjects by %s", n.name)
					}
				}
			}
			_, err = c.GetObject(ctx, connect.NewRequest(&metadatav1.GetObjectRequest{EnvironmentId: id, Name: "thing"}))
			apptest.WantError(t, err, connect.CodeNotFound, resolve.ReasonEnvironmentNotFound)
			switch engine {
			case "sqlite":
				for _, suffix := range []string{"", "-wal", "-shm"} {
					wantFile(t, env.SQLitePath(id)+suffix, false)
				}
			case "postgres":
				var n int
				if err := apptest.PostgresPool(t, pgURL).QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_database WHERE datname = $1`, pgName(t, id)).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("the database of the deleted environment still exists")
				}
			}

			// Its definitions went with it.
			if defs, err := env.ControlPlane(t).ListObjectDefinitions(ctx, id, controlplane.Page{Limit: 10}); err != nil || len(defs) != 0 {
				t.Errorf("definitions of the deleted environment left in the control plane: %d (%v)", len(defs), err)
			}

			// A new environment of the same name starts empty.
			again := metaEnv(t, admin, pgURL, org, "dev", engine)
			if again.GetHostname() != e.GetHostname() {
				t.Fatalf("re-created hostname = %q, want %q", again.GetHostname(), e.GetHostname())
			}
			for _, n := range namers[2:] { // host and default now name the new one
				resp, err := list(n)
				if err != nil {
					t.Errorf("ListObjects by %s in the re-created environment: %v", n.name, err)
					continue
				}
				if len(resp.Msg.GetObjects()) != 0 || resp.Header().Get(apptest.HeaderEnvironmentID) != again.GetId() {
					t.Errorf("ListObjects by %s in the re-created environment = %v (X-Environment-Id %q)", n.name, resp.Msg.GetObjects(), resp.Header().Get(apptest.HeaderEnvironmentID))
				}
			}
		})
	}
}

// backendPIDs lists the server processes of the cluster connected as role
// to its database.
func backendPIDs(t *testing.T, admin *pgxpool.Pool, role string) []int32 {
	t.Helper()
	rows, err := admin.Query(t.Context(), `SELECT pid FROM pg_catalog.pg_stat_activity WHERE usename = $1 AND datname = $1`, role)
	if err != nil {
		t.Fatalf("list the connections of %s: %v", role, err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatalf("list the connections of %s: %v", role, err)
	}
	return pids
}

// TestRegistryEviction runs with room for one open database and an idle
// time of a few milliseconds: environments are closed and reopened between
// calls all the time, and every call still works, memory environments
// keeping their tables across handles.
func TestRegistryEviction(t *testing.T) {
	t.Parallel()
	flags := []string{"--max-open-environments=1", "--environment-idle-ttl=5ms"}
	pgURL := os.Getenv(apptest.PostgresURLVar)
	if pgURL != "" {
		flags = append(flags, "--postgres-admin-url="+pgURL)
	}
	env := apptest.Start(t, flags...)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "acme")
	var envs []*environmentv1.Environment
	for _, engine := range []string{"memory", "sqlite", "memory", "sqlite"} {
		envs = append(envs, createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: engine + string(rune('a'+len(envs))), Driver: engine,
		}))
	}
	c := env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	var fields []*metadatav1.Field
	for round := range 4 {
		fields = append(fields, metaText("f"+string(rune('a'+round))))
		for _, e := range envs {
			resp, err := c.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{
				EnvironmentId: e.GetId(), Name: "thing", Object: metaObject(fields...),
			}))
			if err != nil {
				t.Fatalf("round %d, %s: PutObject: %v", round, e.GetSlug(), err)
			}
			want := []string{"create_table"}
			if round > 0 {
				want = []string{"add_field " + fields[round].GetName()}
			}
			if got := metaSteps(resp.Msg.GetSteps()); !slices.Equal(got, want) || resp.Msg.GetObject().GetVersion() != int64(round+1) {
				t.Errorf("round %d, %s: steps %q version %d, want %q version %d", round, e.GetSlug(), got, resp.Msg.GetObject().GetVersion(), want, round+1)
			}
		}
		time.Sleep(10 * time.Millisecond) // let the idle ones go
	}
	for _, e := range envs {
		if e.GetDriver() == "sqlite" {
			if got := env.SQLiteColumns(t, e.GetId(), "thing"); !slices.Equal(got, withSystem("fa", "fb", "fc", "fd")) {
				t.Errorf("%s: columns %q", e.GetSlug(), got)
			}
		}
	}
}

// TestRegistrySQLiteFileGone: an environment whose database file went away
// (behind the server's back, before any call opened it) is unavailable; its
// database is not silently created again, empty.
func TestRegistrySQLiteFileGone(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "acme")
	e := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(env.SQLitePath(e.GetId()) + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	c := env.MetadataClient(apptest.REST, env.AdminToken())
	_, err := c.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: e.GetId(), Name: "thing", Object: metaObject(metaText("x"))}))
	apptest.WantError(t, err, connect.CodeUnavailable, metadata.ReasonDatabaseUnavailable)
	wantFile(t, env.SQLitePath(e.GetId()), false)
	metaWantMissing(t, c, e.GetId(), "thing")
}
