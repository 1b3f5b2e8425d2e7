package resolve_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/resolve"
)

type fixture struct {
	store    *controlplane.SQLite
	bus      *invalidate.Bus
	r        *resolve.Resolver
	org      controlplane.Organization
	dev, stg controlplane.Environment
	other    controlplane.Environment // of another organization
}

func setup(tb testing.TB) *fixture {
	tb.Helper()
	ctx := context.Background()
	store, err := controlplane.OpenSQLite(ctx, filepath.Join(tb.TempDir(), "cp.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	now := time.Now().UTC()
	mkOrg := func(slug string) controlplane.Organization {
		o, _, err := store.CreateOrganization(ctx, controlplane.Organization{ID: uuid.Must(uuid.NewV7()).String(), Slug: slug, DisplayName: slug, CreateTime: now, UpdateTime: now})
		if err != nil {
			tb.Fatal(err)
		}
		return o
	}
	mkEnv := func(org controlplane.Organization, slug string, mode controlplane.DefaultMode) controlplane.Environment {
		e, _, err := store.CreateEnvironment(ctx, controlplane.Environment{
			ID: uuid.Must(uuid.NewV7()).String(), OrganizationID: org.ID, Slug: slug, DisplayName: slug,
			Type: "development", Driver: "memory", Status: controlplane.StatusActive,
			Hostname: org.Slug + "-" + slug + ".localhost", CreateTime: now, UpdateTime: now,
		}, mode)
		if err != nil {
			tb.Fatal(err)
		}
		return e
	}
	f := &fixture{store: store, bus: invalidate.NewBus()}
	f.org = mkOrg("acme")
	f.dev = mkEnv(f.org, "dev", controlplane.DefaultYes)
	f.stg = mkEnv(f.org, "staging", controlplane.DefaultNo)
	f.other = mkEnv(mkOrg("globex"), "dev", controlplane.DefaultYes)
	f.r = resolve.New(store, f.bus, resolve.Options{RootDomain: "localhost"}, slog.New(slog.DiscardHandler))
	return f
}

func TestPrecedenceAndErrors(t *testing.T) {
	t.Parallel()
	f := setup(t)
	member := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}
	for _, c := range []struct {
		name   string
		hints  resolve.Hints
		p      *auth.Principal
		want   string
		code   connect.Code
		reason string
	}{
		{name: "request id", hints: resolve.Hints{EnvironmentID: f.stg.ID}, p: member, want: f.stg.ID},
		{name: "request id, host and header agreeing", hints: resolve.Hints{EnvironmentID: f.stg.ID, Host: f.stg.Hostname, Header: f.stg.ID}, p: member, want: f.stg.ID},
		{name: "request id and host disagreeing", hints: resolve.Hints{EnvironmentID: f.stg.ID, Host: f.dev.Hostname}, p: member, code: connect.CodeInvalidArgument, reason: resolve.ReasonEnvironmentHintsConflict},
		{name: "request id and header disagreeing", hints: resolve.Hints{EnvironmentID: f.stg.ID, Header: f.dev.ID}, p: member, code: connect.CodeInvalidArgument, reason: resolve.ReasonEnvironmentHintsConflict},
		{name: "host", hints: resolve.Hints{Host: "ACME-STAGING.localhost.:8080"}, p: member, want: f.stg.ID},
		{name: "host and header disagreeing", hints: resolve.Hints{Host: f.stg.Hostname, Header: f.dev.ID}, p: member, code: connect.CodeInvalidArgument, reason: resolve.ReasonEnvironmentHintsConflict},
		{name: "host and header agreeing", hints: resolve.Hints{Host: f.stg.Hostname, Header: f.stg.ID}, p: member, want: f.stg.ID},
		{name: "unknown host under the root domain does not fall through", hints: resolve.Hints{Host: "acme-gone.localhost", Header: f.stg.ID}, p: member, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound},
		{name: "another organization's host under the root domain looks missing", hints: resolve.Hints{Host: f.other.Hostname, Header: f.stg.ID}, p: member, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound},
		{name: "localhost is no hint", hints: resolve.Hints{Host: "LOCALHOST.", Header: f.stg.ID}, p: member, want: f.stg.ID},
		{name: "unregistered host is no hint", hints: resolve.Hints{Host: "localhost:8080", Header: f.stg.ID}, p: member, want: f.stg.ID},
		{name: "IPv6 host is no hint", hints: resolve.Hints{Host: "[::1]:8080"}, p: member, want: f.dev.ID},
		{name: "header", hints: resolve.Hints{Header: f.stg.ID}, p: member, want: f.stg.ID},
		{name: "organization default", p: member, want: f.dev.ID},
		{name: "unknown request id does not fall through", hints: resolve.Hints{EnvironmentID: uuid.NewString(), Header: f.dev.ID}, p: member, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound},
		{name: "unknown header does not fall through", hints: resolve.Hints{Header: uuid.NewString()}, p: member, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound},
		{name: "another organization's environment is not found", hints: resolve.Hints{Header: f.other.ID}, p: member, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound},
		{name: "another organization's host is not found", hints: resolve.Hints{Host: f.other.Hostname}, p: member, code: connect.CodeNotFound, reason: resolve.ReasonEnvironmentNotFound},
		{name: "limited token", hints: resolve.Hints{Header: f.stg.ID}, p: &auth.Principal{OrganizationID: f.org.ID, Role: auth.RoleEditor, EnvironmentIDs: []string{f.dev.ID}}, code: connect.CodePermissionDenied, reason: auth.ReasonEnvironmentNotAllowed},
		{name: "platform token resolves nothing by itself", p: &auth.Principal{TokenID: "p", PlatformAdmin: true, Role: auth.RoleAdmin}, code: connect.CodeFailedPrecondition, reason: resolve.ReasonEnvironmentNotResolved},
	} {
		t.Run(c.name, func(t *testing.T) {
			env, err := f.r.Resolve(t.Context(), c.hints, c.p)
			if c.code != 0 {
				if connect.CodeOf(err) != c.code || apierr.Reason(err) != c.reason {
					t.Fatalf("got %v (%s), want %v %s", err, apierr.Reason(err), c.code, c.reason)
				}
				return
			}
			if err != nil || env.ID != c.want {
				t.Fatalf("got %s, %v; want %s", env.ID, err, c.want)
			}
		})
	}
}

func TestOnlyEnvironmentAndSuspensionAndInvalidation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	member := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}

	// No default: two environments resolve nothing; after deleting one, the only one.
	no := false
	if _, err := f.store.UpdateEnvironment(ctx, f.dev.ID, controlplane.EnvironmentPatch{IsDefault: &no}); err != nil {
		t.Fatal(err)
	}
	_ = f.bus.Publish(ctx, invalidate.Event{Kind: invalidate.KindOrganization, OrganizationID: f.org.ID})
	if _, err := f.r.Resolve(ctx, resolve.Hints{}, member); apierr.Reason(err) != resolve.ReasonEnvironmentNotResolved {
		t.Fatalf("two environments, no default: %v", err)
	}
	if err := f.store.DeleteEnvironment(ctx, f.stg.ID); err != nil {
		t.Fatal(err)
	}
	_ = f.bus.Publish(ctx, invalidate.Event{Kind: invalidate.KindOrganization, OrganizationID: f.org.ID})
	env, err := f.r.Resolve(ctx, resolve.Hints{}, member)
	if err != nil || env.ID != f.dev.ID {
		t.Fatalf("only environment: %s, %v", env.ID, err)
	}

	// Suspension shows on the next call after its event.
	suspended := controlplane.StatusSuspended
	if _, err := f.store.UpdateEnvironment(ctx, f.dev.ID, controlplane.EnvironmentPatch{Status: &suspended}); err != nil {
		t.Fatal(err)
	}
	_ = f.bus.Publish(ctx, invalidate.Event{Kind: invalidate.KindEnvironment, EnvironmentID: f.dev.ID, OrganizationID: f.org.ID})
	if _, err := f.r.Resolve(ctx, resolve.Hints{Header: f.dev.ID}, member); apierr.Reason(err) != resolve.ReasonEnvironmentSuspended {
		t.Fatalf("suspended: %v", err)
	}

	// A hostname moved: the old one stops routing, the new one routes.
	moved := "moved.example"
	active := controlplane.StatusActive
	if _, err := f.store.UpdateEnvironment(ctx, f.dev.ID, controlplane.EnvironmentPatch{Hostname: &moved, Status: &active}); err != nil {
		t.Fatal(err)
	}
	_ = f.bus.Publish(ctx,
		invalidate.Event{Kind: invalidate.KindEnvironment, EnvironmentID: f.dev.ID},
		invalidate.Event{Kind: invalidate.KindHostname, Hostname: f.dev.Hostname},
		invalidate.Event{Kind: invalidate.KindHostname, Hostname: moved})
	if env, err := f.r.Resolve(ctx, resolve.Hints{Host: moved}, member); err != nil || env.ID != f.dev.ID {
		t.Fatalf("new hostname: %v", err)
	}
	if _, err := f.r.Resolve(ctx, resolve.Hints{Host: f.dev.Hostname, Header: uuid.NewString()}, member); apierr.Reason(err) != resolve.ReasonEnvironmentNotFound {
		t.Fatalf("old hostname still routes: %v", err)
	}
}

func TestSession(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	tok, _, err := f.store.CreateToken(ctx, controlplane.Token{ID: uuid.Must(uuid.NewV7()).String(), Name: "s", OrganizationID: f.org.ID,
		Role: auth.RoleViewer, SecretHash: []byte(uuid.NewString()), CreateTime: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	p := &auth.Principal{TokenID: tok.ID, OrganizationID: f.org.ID, Role: auth.RoleViewer}
	if env, _ := f.r.Resolve(ctx, resolve.Hints{}, p); env.ID != f.dev.ID {
		t.Fatalf("before activation: %s, want the default", env.ID)
	}
	if err := f.store.SetActiveEnvironment(ctx, tok.ID, f.stg.ID); err != nil {
		t.Fatal(err)
	}
	_ = f.bus.Publish(ctx, invalidate.Event{Kind: invalidate.KindToken, TokenID: tok.ID})
	if env, _ := f.r.Resolve(ctx, resolve.Hints{}, p); env.ID != f.stg.ID {
		t.Fatalf("session beats default: got %s", env.ID)
	}
	if env, _ := f.r.Resolve(ctx, resolve.Hints{Header: f.dev.ID}, p); env.ID != f.dev.ID {
		t.Fatalf("header beats session: got %s", env.ID)
	}
}

func BenchmarkResolveCacheHit(b *testing.B) {
	f := setup(b)
	p := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}
	ctx := context.Background()
	h := resolve.Hints{Host: f.stg.Hostname + ":8080"}
	if _, err := f.r.Resolve(ctx, h, p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.r.Resolve(ctx, h, p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestControlPlaneDown(t *testing.T) {
	t.Parallel()
	f := setup(t)
	member := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}
	if _, err := f.r.Resolve(t.Context(), resolve.Hints{Host: f.dev.Hostname}, member); err != nil {
		t.Fatal(err)
	}
	f.store.Close()
	// Known environments keep routing; anything new is UNAVAILABLE, never a wrong environment.
	if env, err := f.r.Resolve(t.Context(), resolve.Hints{Host: f.dev.Hostname}, member); err != nil || env.ID != f.dev.ID {
		t.Fatalf("cached environment while the control plane is down: %s, %v", env.ID, err)
	}
	_, err := f.r.Resolve(t.Context(), resolve.Hints{Host: f.stg.Hostname}, member)
	if connect.CodeOf(err) != connect.CodeUnavailable || apierr.Reason(err) != apierr.ReasonControlPlaneUnavailable {
		t.Fatalf("uncached environment while the control plane is down: %v", err)
	}
}

// TestCustomHostnames: a custom hostname routes only while verified, a
// pending one answers HOSTNAME_NOT_VERIFIED to its own organization and is no
// hint to any other, another organization's verified hostname is no hint, and
// a reserved name bound before the rules existed never routes.
func TestCustomHostnames(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	set := func(id, name string, state string) {
		t.Helper()
		proof := controlplane.HostnameProof{State: state, Token: "tok"}
		if _, err := f.store.UpdateEnvironment(ctx, id, controlplane.EnvironmentPatch{Hostname: &name, Proof: &proof}); err != nil {
			t.Fatal(err)
		}
	}
	set(f.stg.ID, "shop.acme.test", controlplane.HostnamePending)
	set(f.other.ID, "www.globex.test", controlplane.HostnameVerified)
	member := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}
	globex := &auth.Principal{TokenID: "g", OrganizationID: f.other.OrganizationID, Role: auth.RoleViewer}
	admin := &auth.Principal{TokenID: "p", PlatformAdmin: true, Role: auth.RoleAdmin}
	for _, c := range []struct {
		name   string
		hints  resolve.Hints
		p      *auth.Principal
		want   string
		reason string
	}{
		{name: "pending, own organization", hints: resolve.Hints{Host: "Shop.Acme.Test:443"}, p: member, reason: resolve.ReasonHostnameNotVerified},
		{name: "pending, own organization, with a header", hints: resolve.Hints{Host: "shop.acme.test", Header: f.dev.ID}, p: member, reason: resolve.ReasonHostnameNotVerified},
		{name: "pending, platform admin", hints: resolve.Hints{Host: "shop.acme.test", Header: f.dev.ID}, p: admin, reason: resolve.ReasonHostnameNotVerified},
		{name: "pending, another organization: no hint", hints: resolve.Hints{Host: "shop.acme.test"}, p: globex, want: f.other.ID},
		{name: "verified", hints: resolve.Hints{Host: "www.globex.test"}, p: globex, want: f.other.ID},
		{name: "verified, another organization: no hint", hints: resolve.Hints{Host: "www.globex.test", Header: f.dev.ID}, p: member, want: f.dev.ID},
		{name: "verified, platform admin with a disagreeing header", hints: resolve.Hints{Host: "www.globex.test", Header: f.dev.ID}, p: admin, reason: resolve.ReasonEnvironmentHintsConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			env, err := f.r.Resolve(ctx, c.hints, c.p)
			if c.reason != "" {
				if apierr.Reason(err) != c.reason {
					t.Fatalf("got %s, %v (%s); want %s", env.ID, err, apierr.Reason(err), c.reason)
				}
				return
			}
			if err != nil || env.ID != c.want {
				t.Fatalf("got %s, %v; want %s", env.ID, err, c.want)
			}
		})
	}

	// A reserved name a control plane from before the rules holds verified.
	set(f.dev.ID, "localhost", controlplane.HostnameVerified)
	if env, err := f.r.Resolve(ctx, resolve.Hints{Host: "localhost:8080", Header: f.stg.ID}, member); err != nil || env.ID != f.stg.ID {
		t.Fatalf("Host localhost bound to dev by an old control plane: %s, %v; want the header's %s", env.ID, err, f.stg.ID)
	}
}

// TestHostCrossCheck: a replica whose hostname entry is older than its
// reading of the environment (the environment moved to a new hostname, the
// notification not yet heard) never routes the old hostname to it.
func TestHostCrossCheck(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	member := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}
	old, moved := "a.acme.test", "b.acme.test"
	proof := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedOperator}
	if _, err := f.store.UpdateEnvironment(ctx, f.stg.ID, controlplane.EnvironmentPatch{Hostname: &old, Proof: &proof}); err != nil {
		t.Fatal(err)
	}
	if env, err := f.r.Resolve(ctx, resolve.Hints{Host: old}, member); err != nil || env.ID != f.stg.ID {
		t.Fatalf("warm %s: %s, %v", old, env.ID, err)
	}
	// The move, with no notification: the resolver reads the new hostname
	// (and the environment with it) from the store.
	if _, err := f.store.UpdateEnvironment(ctx, f.stg.ID, controlplane.EnvironmentPatch{Hostname: &moved}); err != nil {
		t.Fatal(err)
	}
	if env, err := f.r.Resolve(ctx, resolve.Hints{Host: moved}, member); err != nil || env.ID != f.stg.ID {
		t.Fatalf("%s after the move: %s, %v", moved, env.ID, err)
	}
	env, err := f.r.Resolve(ctx, resolve.Hints{Host: old}, member)
	if err == nil && env.ID == f.stg.ID {
		t.Fatalf("the old hostname %s still routes to the moved environment", old)
	}
	if env.ID != f.dev.ID || err != nil {
		t.Fatalf("the old hostname: %s, %v; want no hint, so the default %s", env.ID, err, f.dev.ID)
	}
}
