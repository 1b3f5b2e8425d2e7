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

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/server"
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
		server.Module,
	}
	if cfg.Has(config.ServiceEnvironment) {
		opts = append(opts, environment.Module)
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

// InvalidateModule provides the in-process invalidation bus as the Publisher.
var InvalidateModule = fx.Module("invalidate",
	fx.Provide(
		invalidate.NewBus,
		func(b *invalidate.Bus) invalidate.Publisher { return b },
	),
)
