package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
)

const tokenUsage = `Usage:
  envplane token create [flags]   mint a token directly in the local control plane

Without --organization the token is a platform admin, for an operator who lost
the bootstrap token. The secret is printed once on standard output.
`

// tokenCommand runs `envplane token …` against the local control-plane store,
// without a running server: the way back in for an operator without a token.
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprint(stderr, tokenUsage)
		return flag.ErrHelp
	}
	env := func(name, def string) string {
		if v := getenv("ENVPLANE_" + name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("envplane token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", env("DATA_DIR", "./.envplane"), "data directory of the server (ENVPLANE_DATA_DIR)")
	cp := fs.String("control-plane", env("CONTROL_PLANE", ""), "control-plane SQLite file (default <data-dir>/controlplane.db) or postgres:// URL (ENVPLANE_CONTROL_PLANE)")
	name := fs.String("name", "cli admin", "name of the token")
	org := fs.String("organization", "", "organization id; empty mints a platform admin token")
	role := fs.String("role", auth.RoleAdmin, "admin, developer, editor or viewer")
	envs := fs.String("environments", "", "comma-separated environment ids the token is limited to")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (0: never expires)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch *role {
	case auth.RoleAdmin, auth.RoleDeveloper, auth.RoleEditor, auth.RoleViewer:
	default:
		return fmt.Errorf("--role: want admin, developer, editor or viewer, got %q", *role)
	}
	spec := controlplane.Token{Name: *name, OrganizationID: *org, Role: *role}
	if *org == "" {
		if *role != auth.RoleAdmin || *envs != "" {
			return fmt.Errorf("a platform token (no --organization) has role admin and no --environments")
		}
		spec.PlatformAdmin = true
	}
	for _, id := range strings.Split(*envs, ",") {
		if id = strings.TrimSpace(id); id != "" {
			spec.EnvironmentIDs = append(spec.EnvironmentIDs, id)
		}
	}
	if *expires > 0 {
		spec.ExpireTime = time.Now().UTC().Add(*expires)
	}
	var err error
	path := *cp
	if path == "" {
		path = filepath.Join(*dataDir, "controlplane.db")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var store controlplane.Store
	if strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://") {
		store, err = controlplane.OpenPostgres(ctx, path)
	} else {
		store, err = controlplane.OpenSQLite(ctx, strings.TrimPrefix(strings.TrimPrefix(path, "sqlite://"), "sqlite:"))
	}
	if err != nil {
		return err
	}
	defer store.Close()
	tok, secret, _, err := auth.Mint(ctx, store, spec)
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	fmt.Fprintf(stderr, "created token %s (%s)\n", tok.ID, tok.Name)
	fmt.Fprintln(stdout, secret)
	return nil
}
