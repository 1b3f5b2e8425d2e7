package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
)

// connectJSON calls a unary RPC over Connect JSON with an explicit Host, the
// way a browser on an environment's hostname would, and returns the HTTP
// status and the environment the server resolved.
func connectJSON(t *testing.T, base, host, token, procedure string, body any) (int, string, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+procedure, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Environment-Id"), raw
}

// waitUntil polls cond for at most 3 s and returns how long it took.
func waitUntil(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("%s: not within 3 s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// TestReplicasInvalidateEachOther runs two servers on one PostgreSQL control
// plane: routing facts changed through A must take effect on B, whose caches
// were warm, through LISTEN/NOTIFY rather than a TTL.
func TestReplicasInvalidateEachOther(t *testing.T) {
	t.Parallel()
	flags, _, _ := pgControlPlaneFlags(t)
	a := apptest.Start(t, flags...)
	b := apptest.Start(t, flags...)
	token := a.Token
	ca := a.Client(apptest.ConnectProto)
	ctx := t.Context()

	org, err := ca.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(slug, host string) *environmentv1.Environment {
		resp, err := ca.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.Msg.GetOrganization().GetId(), Slug: slug, Driver: "sqlite", Hostname: proto.String(host),
		}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetEnvironment()
	}
	dev := mk("dev", "dev.acme.test")
	stg := mk("staging", "staging.acme.test")

	list := "/envplane.metadata.v1.MetadataService/ListObjects"
	resolvedOnB := func(host string) (int, string) {
		code, env, _ := connectJSON(t, b.URL, host, token, list, map[string]any{})
		return code, env
	}
	// Warm B's caches: the hostname routes to dev.
	if code, env := resolvedOnB("dev.acme.test"); code != http.StatusOK || env != dev.GetId() {
		t.Fatalf("B before the move: %d %s, want dev", code, env)
	}

	// Move dev's hostname on A; B routes the new name to dev and the old one nowhere.
	if _, err := ca.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("dev2.acme.test")})); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	// The new name is no cached fact: B may resolve it from the store before
	// the notification forgetting the old one arrives (it did, 2 ms after
	// the move, once in CI). Only the old name shows the notification.
	delay := waitUntil(t, "hostname move on B", func() bool {
		_, newEnv := resolvedOnB("dev2.acme.test")
		_, oldEnv := resolvedOnB("dev.acme.test")
		return newEnv == dev.GetId() && oldEnv != dev.GetId()
	})
	t.Logf("hostname move seen on B after %v", delay)
	if time.Since(moved) > 2*time.Second {
		t.Errorf("the move took %v to reach B; a TTL, not a notification, did it", time.Since(moved))
	}

	// Suspension on A: B refuses the very environment it had cached.
	if code, _ := resolvedOnB("staging.acme.test"); code != http.StatusOK {
		t.Fatalf("B staging before suspension: %d", code)
	}
	if _, err := ca.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: stg.GetId(), Status: proto.String("suspended")})); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "suspension on B", func() bool { code, _ := resolvedOnB("staging.acme.test"); return code == http.StatusBadRequest })

	// Revocation on A: the token stops working on B.
	_, secret := a.MintToken(t, &accessv1.CreateTokenRequest{Name: "short", OrganizationId: org.Msg.GetOrganization().GetId(), Role: "viewer"})
	whoami := func(base string) int {
		code, _, _ := connectJSON(t, base, "localhost", secret, "/envplane.access.v1.AccessService/WhoAmI", map[string]any{})
		return code
	}
	if whoami(b.URL) != http.StatusOK {
		t.Fatal("new token refused on B")
	}
	tok, err := a.AccessClient(apptest.ConnectProto, secret).WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AccessClient(apptest.ConnectProto, token).RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tok.Msg.GetTokenId()})); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "revocation on B", func() bool { return whoami(b.URL) == http.StatusUnauthorized })
}
