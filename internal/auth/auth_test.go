package auth_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
)

func openStore(t *testing.T) *controlplane.SQLite {
	t.Helper()
	store, err := controlplane.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func TestParseAuthorization(t *testing.T) {
	t.Parallel()
	good, _ := auth.NewSecret()
	for _, c := range []struct {
		header           string
		present, wellFmt bool
	}{
		{"", false, false},
		{"Bearer " + good, true, true},
		{"bearer " + good, true, true},
		{"Basic " + good, true, false},
		{"Bearer", true, false},
		{"Bearer envp_short", true, false},
		{"Bearer " + strings.Replace(good, "envp_", "xxxx_", 1), true, false},
		{"Bearer " + good[:len(good)-1] + "!", true, false},
		{good, true, false},
	} {
		secret, present, ok := auth.ParseAuthorization(c.header)
		if present != c.present || ok != c.wellFmt {
			t.Errorf("ParseAuthorization(%q) = present %v ok %v, want %v %v", c.header, present, ok, c.present, c.wellFmt)
		}
		if ok && secret != good {
			t.Errorf("ParseAuthorization(%q) secret = %q", c.header, secret)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	good, _ := auth.NewSecret()
	for _, s := range []string{"", "Bearer " + good, "Bearer", "Basic x", "bearer  " + good + " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		secret, present, ok := auth.ParseAuthorization(header)
		if present != (header != "") {
			t.Fatalf("present = %v for %q", present, header)
		}
		if ok && (!strings.HasPrefix(secret, auth.SecretPrefix) || !strings.Contains(header, secret)) {
			t.Fatalf("accepted %q from %q", secret, header)
		}
	})
}

func TestPrincipalRules(t *testing.T) {
	t.Parallel()
	admin := &auth.Principal{OrganizationID: "o1", Role: auth.RoleAdmin}
	viewer := &auth.Principal{OrganizationID: "o1", Role: auth.RoleViewer}
	limited := &auth.Principal{OrganizationID: "o1", Role: auth.RoleEditor, EnvironmentIDs: []string{"e1"}}
	platform := &auth.Principal{Role: auth.RoleAdmin, PlatformAdmin: true}
	var anonymous *auth.Principal

	if !admin.InOrganization("o1") || admin.InOrganization("o2") || !platform.InOrganization("o2") || anonymous.InOrganization("o1") {
		t.Error("InOrganization")
	}
	if (&auth.Principal{Role: auth.RoleAdmin}).InOrganization("") {
		t.Error("a token without organization sees the empty organization")
	}
	if !viewer.HasRole(auth.RoleViewer) || viewer.HasRole(auth.RoleEditor) || !admin.HasRole(auth.RoleDeveloper) || anonymous.HasRole(auth.RoleViewer) {
		t.Error("HasRole")
	}
	if !limited.AllowsEnvironment("e1") || limited.AllowsEnvironment("e2") || !admin.AllowsEnvironment("e2") || anonymous.AllowsEnvironment("e1") {
		t.Error("AllowsEnvironment")
	}
	for _, c := range []struct {
		err    error
		code   connect.Code
		reason string
	}{
		{viewer.RequireRole(auth.RoleEditor), connect.CodePermissionDenied, auth.ReasonRoleInsufficient},
		{admin.RequirePlatformAdmin(), connect.CodePermissionDenied, auth.ReasonPlatformAdminRequired},
		{limited.RequireEnvironment("e2"), connect.CodePermissionDenied, auth.ReasonEnvironmentNotAllowed},
		{limited.RequireUnlimited(), connect.CodePermissionDenied, auth.ReasonTokenLimited},
	} {
		if connect.CodeOf(c.err) != c.code || apierr.Reason(c.err) != c.reason {
			t.Errorf("got %v (%s), want %v %s", connect.CodeOf(c.err), apierr.Reason(c.err), c.code, c.reason)
		}
	}
	if admin.RequireRole(auth.RoleAdmin) != nil || platform.RequirePlatformAdmin() != nil || limited.RequireEnvironment("e1") != nil {
		t.Error("an allowed action was refused")
	}
}

func TestBootstrapWritesOnceAndNeverOverwrites(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := auth.Bootstrap(t.Context(), store, dir, log); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, auth.AdminTokenFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("admin token file mode = %v, want 0600", info.Mode().Perm())
	}
	first, _ := os.ReadFile(path)
	secret := strings.TrimSpace(string(first))
	tok, err := store.GetTokenBySecretHash(t.Context(), auth.HashSecret(secret))
	if err != nil || !tok.PlatformAdmin || tok.Role != auth.RoleAdmin {
		t.Fatalf("bootstrap token = %+v, %v; want a platform admin", tok, err)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the log holds the token secret")
	}
	if !strings.Contains(logs.String(), path) {
		t.Error("the log does not name the token file")
	}

	// A second start: tokens exist, nothing changes.
	if err := auth.Bootstrap(t.Context(), store, dir, log); err != nil {
		t.Fatal(err)
	}
	// A fresh control plane but an existing file: the file is not overwritten
	// and no token is minted.
	other := openStore(t)
	if err := auth.Bootstrap(t.Context(), other, dir, log); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(path)
	if !bytes.Equal(first, again) {
		t.Error("bootstrap overwrote the admin token file")
	}
	if n, _ := store.CountTokens(t.Context()); n != 1 {
		t.Errorf("store has %d tokens after restart, want 1", n)
	}
	if n, _ := other.CountTokens(t.Context()); n != 0 {
		t.Errorf("a token was minted although its file could not be written (%d)", n)
	}
}

func TestAuthenticator(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	bus := invalidate.NewBus()
	a := auth.NewAuthenticator(store, bus, slog.New(slog.DiscardHandler))
	ctx := t.Context()
	mint := func(spec controlplane.Token) string {
		t.Helper()
		_, secret, _, err := auth.Mint(ctx, store, spec)
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	live := mint(controlplane.Token{Name: "live", Role: auth.RoleAdmin, PlatformAdmin: true})
	expired := mint(controlplane.Token{Name: "expired", Role: auth.RoleAdmin, PlatformAdmin: true, ExpireTime: time.Now().Add(-time.Second)})
	unknown, _ := auth.NewSecret()

	p, err := a.Authenticate(ctx, "Bearer "+live)
	if err != nil || !p.PlatformAdmin || p.Name != "live" {
		t.Fatalf("Authenticate(live) = %+v, %v", p, err)
	}
	for _, c := range []struct{ header, reason string }{
		{"", auth.ReasonTokenMissing},
		{"Bearer nope", auth.ReasonTokenMalformed},
		{"Bearer " + unknown, auth.ReasonTokenUnknown},
		{"Bearer " + unknown, auth.ReasonTokenUnknown}, // now from the negative cache
		{"Bearer " + expired, auth.ReasonTokenExpired},
	} {
		_, err := a.Authenticate(ctx, c.header)
		if connect.CodeOf(err) != connect.CodeUnauthenticated || apierr.Reason(err) != c.reason {
			t.Errorf("Authenticate(%.20q) = %v (%s), want UNAUTHENTICATED %s", c.header, err, apierr.Reason(err), c.reason)
		}
	}

	// Revocation reaches the cached entry through the bus: the very next call fails.
	tok, _ := store.GetTokenBySecretHash(ctx, auth.HashSecret(live))
	if _, err := store.RevokeToken(ctx, tok.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, invalidate.Event{Kind: invalidate.KindToken, TokenID: tok.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(ctx, "Bearer "+live)
	if apierr.Reason(err) != auth.ReasonTokenRevoked {
		t.Errorf("after revocation: %v, want %s", err, auth.ReasonTokenRevoked)
	}
}

func TestAuthenticatorStoreDown(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	a := auth.NewAuthenticator(store, invalidate.NewBus(), slog.New(slog.DiscardHandler))
	secret, _ := auth.NewSecret()
	store.Close()
	_, err := a.Authenticate(context.WithoutCancel(t.Context()), "Bearer "+secret)
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("store closed: %v, want UNAVAILABLE", err)
	}
	var ce *connect.Error
	if errors.As(err, &ce) && strings.Contains(ce.Message(), "sql") {
		t.Errorf("error leaks store details: %q", ce.Message())
	}
}
