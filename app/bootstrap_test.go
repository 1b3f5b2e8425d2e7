package app_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/auth"
)

// TestBootstrapToken: a new server writes a working platform-admin token to
// <data-dir>/admin.token (0600); a restart on the same data dir neither
// rewrites the file nor mints another token.
func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, auth.AdminTokenFile)

			first := apptest.StartDir(t, dir)
			info, err := os.Stat(path)
			if err != nil {
				t.Fatalf("admin token file: %v", err)
			}
			if mode := info.Mode(); mode.Perm() != 0o600 || !mode.IsRegular() {
				t.Errorf("%s has mode %v, want a regular file with 0600", path, mode)
			}
			content, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			secret := first.AdminToken()
			if !strings.HasPrefix(secret, auth.SecretPrefix) || string(content) != secret+"\n" {
				t.Errorf("%s holds %d bytes, want one %s… token and a newline", path, len(content), auth.SecretPrefix)
			}
			who := whoAmI(t, first.AccessClient(p, secret))
			if !who.GetPlatformAdmin() || who.GetRole() != auth.RoleAdmin || who.GetOrganizationId() != "" {
				t.Errorf("the bootstrap token's WhoAmI = %v, want a platform admin", who)
			}
			acme := createOrg(t, first.Client(p), "acme")
			created := bootstrapLines(first)
			if len(created) != 1 || created[0]["file"] != path || created[0]["token_id"] != who.GetTokenId() {
				t.Errorf("'created the platform admin token' lines = %v, want one naming %s and token %s", created, path, who.GetTokenId())
			}
			if strings.Contains(first.Logs.String(), secret) {
				t.Errorf("the server log holds the bootstrap token")
			}
			first.Stop(t)

			second := apptest.StartDir(t, dir)
			again, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(content, again) {
				t.Errorf("the restart rewrote %s", path)
			}
			if info2, err := os.Stat(path); err != nil || info2.Mode() != info.Mode() || !info2.ModTime().Equal(info.ModTime()) {
				t.Errorf("after the restart %s: %v, %v; want mode %v and mtime %v unchanged", path, info2, err, info.Mode(), info.ModTime())
			}
			if second.AdminToken() != secret {
				t.Errorf("the restarted server reads another admin token")
			}
			// Not minting, and not for want of the file either: the restart
			// has nothing to say about the admin token.
			if lines := second.Logs.Find(map[string]any{"file": path}); len(lines) != 0 {
				t.Errorf("the restart logged about the admin token file: %v", lines)
			}
			toks := listTokens(t, second.AccessClient(p, secret), "")
			if len(toks) != 1 || toks[0].GetId() != who.GetTokenId() || !toks[0].GetPlatformAdmin() {
				t.Errorf("tokens after the restart = %v, want only the bootstrap token %s", toks, who.GetTokenId())
			}
			if got := orgIDs(listOrgs(t, second.Client(p))); !slices.Equal(got, []string{acme.GetId()}) {
				t.Errorf("organizations after the restart = %q, want acme", got)
			}
		})
	}
}

// bootstrapLines returns the log lines of env announcing a minted bootstrap token.
func bootstrapLines(env *apptest.Env) []map[string]any {
	var out []map[string]any
	for _, rec := range env.Logs.Records() {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "created the platform admin token") {
			out = append(out, rec)
		}
	}
	return out
}

// TestTokenCreateCLI mints tokens with `envplane token create` in the data
// dir of a stopped server, then uses them on the restarted server.
func TestTokenCreateCLI(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build cmd/envplane: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "envplane")
	// Built the way this test binary was (with -race under `go test -race`),
	// the command reuses the packages the test build already compiled.
	args := []string{"build", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	build := exec.CommandContext(t.Context(), goTool, append(args, "github.com/envplane/envplane/cmd/envplane")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/envplane: %v\n%s", err, out)
	}
	// tokenCreate runs the CLI and returns the secret it printed.
	tokenCreate := func(t *testing.T, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, append([]string{"token", "create"}, args...)...)
		cmd.Env = []string{"HOME=" + t.TempDir()} // no ENVPLANE_* of the caller
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("envplane token create %q: %v\n%s", args, err, stderr.String())
		}
		secret := strings.TrimSuffix(stdout.String(), "\n")
		if !strings.HasPrefix(secret, auth.SecretPrefix) || strings.ContainsAny(secret, " \n") {
			t.Fatalf("envplane token create printed %q on stdout, want one token", stdout.String())
		}
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("envplane token create wrote the secret to stderr too")
		}
		return secret
	}

	dir := t.TempDir()
	first := apptest.StartDir(t, dir)
	acme := createOrg(t, first.Client(apptest.ConnectProto), "acme")
	dev := createEnv(t, first.Client(apptest.ConnectProto), &environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "dev", Driver: "memory"})
	adminFile, err := os.ReadFile(filepath.Join(dir, auth.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	first.Stop(t)

	platform := tokenCreate(t, "--data-dir", dir, "--name", "recovery")
	viewer := tokenCreate(t, "--data-dir", dir, "--name", "acme viewer", "--organization", acme.GetId(), "--role", auth.RoleViewer,
		"--environments", dev.GetId())

	second := apptest.StartDir(t, dir)
	if again, err := os.ReadFile(filepath.Join(dir, auth.AdminTokenFile)); err != nil || !bytes.Equal(again, adminFile) {
		t.Errorf("the admin token file changed (%v)", err)
	}
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			if who := whoAmI(t, second.AccessClient(p, platform)); !who.GetPlatformAdmin() || who.GetOrganizationId() != "" {
				t.Errorf("the CLI's platform token: WhoAmI = %v", who)
			}
			if got := orgIDs(listOrgs(t, second.ClientWithToken(p, platform))); !slices.Equal(got, []string{acme.GetId()}) {
				t.Errorf("ListOrganizations with the CLI's platform token = %q", got)
			}
			who := whoAmI(t, second.AccessClient(p, viewer))
			if who.GetPlatformAdmin() || who.GetOrganizationId() != acme.GetId() || who.GetRole() != auth.RoleViewer ||
				!slices.Equal(who.GetEnvironmentIds(), []string{dev.GetId()}) {
				t.Errorf("the CLI's viewer token: WhoAmI = %v", who)
			}
			vc := second.ClientWithToken(p, viewer)
			getEnv(t, vc, dev.GetId())
			_, err := vc.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "mine", Driver: "memory"}))
			apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient)
		})
	}
	toks := listTokens(t, second.AccessClient(apptest.ConnectProto, platform), "")
	var names []string
	for _, tok := range toks {
		names = append(names, tok.GetName())
	}
	slices.Sort(names)
	if want := []string{"acme viewer", "bootstrap platform admin", "recovery"}; !slices.Equal(names, want) {
		t.Errorf("tokens = %q, want %q", names, want)
	}
	for _, s := range []string{platform, viewer} {
		if strings.Contains(second.Logs.String(), s) {
			t.Errorf("the server log holds a CLI token")
		}
	}
}
