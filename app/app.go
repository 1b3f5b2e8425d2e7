// Package app composes the envplane binary from fx modules: the control-plane
// store, the provisioners, the invalidation bus, the server and whichever
// services the configuration names. cmd/envplane runs it; tests start the very
// same graph on a loopback port.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/access"
	"github.com/envplane/envplane/services/environment"
)

// Options returns the whole application graph for cfg.
func Options(cfg config.Config, log *slog.Logger) fx.Option {
	opts := []fx.Option{
		fx.Supply(cfg, log),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: log}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		StoreModule,
		ProvisionModule,
		InvalidateModule,
		AuthModule,
		server.Module,
	}
	if cfg.Has(config.ServiceEnvironment) {
		opts = append(opts, environment.Module)
	}
	if cfg.Has(config.ServiceAccess) {
		opts = append(opts, access.Module)
	}
	return fx.Options(opts...)
}

// StoreModule opens the control-plane store, migrating it, and closes it on stop.
var StoreModule = fx.Module("store",
	fx.Provide(func(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (controlplane.Store, error) {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		store, err := controlplane.OpenSQLite(context.Background(), cfg.ControlPlanePath())
		if err != nil {
			return nil, fmt.Errorf("control plane: %w", err)
		}
		log.Info("control plane ready", "store", "sqlite")
		lc.Append(fx.StopHook(store.Close))
		return store, nil
	}),
)

// ProvisionModule provides the provisioners of the drivers this server can
// create environments with.
var ProvisionModule = fx.Module("provision",
	fx.Provide(
		provision.NewMemory,
		func(cfg config.Config) *provision.SQLite { return provision.NewSQLite(cfg.DataDir) },
		func(mem *provision.Memory, lite *provision.SQLite) *provision.Set {
			return provision.NewSet(map[string]provision.Provisioner{
				provision.DriverMemory: mem,
				provision.DriverSQLite: lite,
			})
		},
	),
)

// InvalidateModule provides the in-process invalidation bus as the
// Publisher writers use and the Subscriber caches use.
var InvalidateModule = fx.Module("invalidate",
	fx.Provide(
		invalidate.NewBus,
		func(b *invalidate.Bus) invalidate.Publisher { return b },
		func(b *invalidate.Bus) invalidate.Subscriber { return b },
	),
)

// AuthModule authenticates every call. On a control plane that never had a
// token it first mints the platform-admin token into <data-dir>/admin.token;
// this runs while the graph is built, before the server listens.
var AuthModule = fx.Module("auth",
	fx.Provide(func(store controlplane.Store, events invalidate.Subscriber, log *slog.Logger) *auth.Authenticator {
		return auth.NewAuthenticator(store, events, log)
	}),
	fx.Invoke(func(cfg config.Config, store controlplane.Store, log *slog.Logger) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return auth.Bootstrap(ctx, store, cfg.DataDir, log)
	}),
)
