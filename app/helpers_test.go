package app_test

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
)

// client is the EnvironmentService client every test talks through.
type client = environmentv1connect.EnvironmentServiceClient

// portInPath reports whether a hostname with a port can reach
// ResolveHostname over p. Over REST it cannot: the hostname is a path
// segment, and vanguard reads a colon there (even escaped as %3A) as the
// start of a custom verb, so the route does not match
// (https://github.com/connectrpc/vanguard-go/issues/170).
func portInPath(p apptest.Protocol) bool { return p != apptest.REST }

// forEachProtocol runs fn in a parallel subtest per protocol, each against a
// server of its own.
func forEachProtocol(t *testing.T, fn func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client)) {
	t.Helper()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			env := apptest.Start(t)
			fn(t, env, p, env.Client(p))
		})
	}
}

func createOrg(t *testing.T, c client, slug string) *environmentv1.Organization {
	t.Helper()
	resp, err := c.CreateOrganization(t.Context(), connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: slug}))
	if err != nil {
		t.Fatalf("CreateOrganization(%q): %v", slug, err)
	}
	return resp.Msg.GetOrganization()
}

func createEnv(t *testing.T, c client, req *environmentv1.CreateEnvironmentRequest) *environmentv1.Environment {
	t.Helper()
	resp, err := c.CreateEnvironment(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("CreateEnvironment(%q): %v", req.GetSlug(), err)
	}
	return resp.Msg.GetEnvironment()
}

func getEnv(t *testing.T, c client, id string) *environmentv1.Environment {
	t.Helper()
	resp, err := c.GetEnvironment(t.Context(), connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: id}))
	if err != nil {
		t.Fatalf("GetEnvironment(%s): %v", id, err)
	}
	return resp.Msg.GetEnvironment()
}

func updateEnv(t *testing.T, c client, req *environmentv1.UpdateEnvironmentRequest) *environmentv1.Environment {
	t.Helper()
	resp, err := c.UpdateEnvironment(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("UpdateEnvironment(%s): %v", req.GetId(), err)
	}
	return resp.Msg.GetEnvironment()
}

// listEnvs returns every environment of the organization, oldest first.
func listEnvs(t *testing.T, c client, orgID string) []*environmentv1.Environment {
	t.Helper()
	resp, err := c.ListEnvironments(t.Context(), connect.NewRequest(&environmentv1.ListEnvironmentsRequest{
		OrganizationId: orgID, PageSize: 1000,
	}))
	if err != nil {
		t.Fatalf("ListEnvironments(%s): %v", orgID, err)
	}
	if resp.Msg.GetNextPageToken() != "" {
		t.Fatalf("ListEnvironments(%s): more than 1000 environments", orgID)
	}
	return resp.Msg.GetEnvironments()
}

// defaults returns the slugs of the default environments among envs.
func defaults(envs []*environmentv1.Environment) []string {
	var out []string
	for _, e := range envs {
		if e.GetIsDefault() {
			out = append(out, e.GetSlug())
		}
	}
	return out
}

// wantOneDefault fails t unless exactly the environment slug is the
// organization's default.
func wantOneDefault(t *testing.T, c client, orgID, slug string) {
	t.Helper()
	if got := defaults(listEnvs(t, c, orgID)); len(got) != 1 || got[0] != slug {
		t.Errorf("default environments = %q, want exactly [%q]", got, slug)
	}
}

// diffEnv compares environments ignoring update_time, which every write sets.
func diffEnv(want, got *environmentv1.Environment) string {
	return cmp.Diff(want, got, protocmp.Transform(),
		protocmp.IgnoreFields(&environmentv1.Environment{}, "update_time"))
}

func wantFile(t *testing.T, path string, exists bool) {
	t.Helper()
	_, err := os.Stat(path)
	switch {
	case exists && err != nil:
		t.Errorf("%s: %v, want the file to exist", path, err)
	case !exists && err == nil:
		t.Errorf("%s exists, want it gone", path)
	case !exists && !errors.Is(err, fs.ErrNotExist):
		t.Errorf("%s: %v", path, err)
	}
}

func clone[M proto.Message](m M) M { return proto.CloneOf(m) }

// breakSQLiteProvisioning makes provisioning of sqlite environments fail for
// real (the envs directory is a regular file, so creating it fails) until the
// returned repair runs.
func breakSQLiteProvisioning(t *testing.T, env *apptest.Env) (repair func()) {
	t.Helper()
	if err := os.WriteFile(env.EnvsDir(), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(env.EnvsDir()); err != nil {
			t.Fatal(err)
		}
	}
}
