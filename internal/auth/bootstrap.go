package auth

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
)

// AdminTokenFile is where the bootstrap platform-admin token is written,
// inside the data dir.
const AdminTokenFile = "admin.token"

// TokenCreator is what minting tokens needs of the control plane.
type TokenCreator interface {
	CreateToken(ctx context.Context, t controlplane.Token) (controlplane.Token, bool, error)
	CountTokens(ctx context.Context) (int, error)
}

// Mint creates a token from spec (its ID, hash, prefix and create time are
// filled in) and returns it with its secret, which is nowhere else.
func Mint(ctx context.Context, store TokenCreator, spec controlplane.Token) (controlplane.Token, string, bool, error) {
	secret, hash := NewSecret()
	spec.ID = uuid.Must(uuid.NewV7()).String()
	spec.SecretHash = hash
	spec.SecretPrefix = DisplayPrefix(secret)
	spec.CreateTime = time.Now().UTC()
	tok, created, err := store.CreateToken(ctx, spec)
	if err != nil {
		return controlplane.Token{}, "", false, err
	}
	if !created {
		// An idempotent retry: the first call's secret is not kept anywhere.
		return tok, "", false, nil
	}
	return tok, secret, true, nil
}

// Bootstrap gives a new installation its first platform-admin token: when the
// control plane has never had a token, it mints one and writes the secret to
// <dataDir>/admin.token (mode 0600). The file is created exclusively and never
// overwritten; the log names the file, never the token.
func Bootstrap(ctx context.Context, store TokenCreator, dataDir string, log *slog.Logger) error {
	n, err := store.CountTokens(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: count tokens: %w", err)
	}
	if n > 0 {
		return nil
	}
	path := filepath.Join(dataDir, AdminTokenFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		log.Warn("the control plane has no token but the admin token file exists; not overwriting it. "+
			"Move the file away and restart to mint a new one, or use `envplane token create`", "file", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	tok, secret, _, err := Mint(ctx, store, controlplane.Token{
		Name: "bootstrap platform admin", Role: RoleAdmin, PlatformAdmin: true,
	})
	if err == nil {
		_, err = f.WriteString(secret + "\n")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("bootstrap: %w", err)
	}
	log.Info("created the platform admin token; read it from the file", "file", path, "token_id", tok.ID)
	return nil
}
