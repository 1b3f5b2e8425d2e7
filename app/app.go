// Package app composes the envplane binary from fx modules: the control-plane
// store, the provisioners, the invalidation bus, the server and whichever
// services the configuration names. cmd/envplane runs it; tests start the very
// same graph on a loopback port.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/engine"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/registry"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/internal/secrets"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/access"
	"github.com/envplane/envplane/services/data"
	"github.com/envplane/envplane/services/environment"
	"github.com/envplane/envplane/services/metadata"
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
	if cfg.Has(config.ServiceMetadata) || cfg.Has(config.ServiceData) {
		opts = append(opts, RoutingModule)
	}
	if cfg.Has(config.ServiceMetadata) {
		opts = append(opts, metadata.Module)
	}
	if cfg.Has(config.ServiceData) {
		opts = append(opts, data.Module)
	}
	return fx.Options(opts...)
}

// StoreModule opens the control-plane store (SQLite in the data dir, or
// PostgreSQL for several replicas), migrating it, and closes it on stop. It
// also provides the keyring that encrypts credentials at rest.
var StoreModule = fx.Module("store",
	fx.Provide(
		func(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (controlplane.Store, error) {
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				return nil, fmt.Errorf("data dir: %w", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var store controlplane.Store
			var err error
			kind := "sqlite"
			if cfg.ControlPlaneIsPostgres() {
				kind = "postgres"
				store, err = controlplane.OpenPostgres(ctx, cfg.ControlPlane)
			} else {
				store, err = controlplane.OpenSQLite(ctx, cfg.ControlPlanePath())
			}
			if err != nil {
				// The error may quote the URL; say which store without it.
				log.Debug("control plane open failed", "error", err)
				return nil, fmt.Errorf("control plane (%s): cannot open or migrate the store; run with --log-level=debug for the cause", kind)
			}
			log.Info("control plane ready", "store", kind)
			lc.Append(fx.StopHook(store.Close))
			return store, nil
		},
		func(store controlplane.Store, l listener) server.Readiness { return readiness{store, l} },
		func(cfg config.Config, log *slog.Logger) (*secrets.Keyring, error) {
			if cfg.MasterKey != "" {
				kr, err := secrets.ParseKeys(cfg.MasterKey)
				if err != nil {
					return nil, fmt.Errorf("ENVPLANE_MASTER_KEY: %w", err)
				}
				return kr, nil
			}
			kr, created, err := secrets.LoadOrCreateKeyFile(cfg.MasterKeyPath())
			if err != nil {
				return nil, fmt.Errorf("master key: %w", err)
			}
			if created {
				log.Info("created the master key that encrypts credentials; back it up", "file", cfg.MasterKeyPath())
				if cfg.ControlPlaneIsPostgres() {
					log.Warn("a new master key was created for a PostgreSQL control plane: every replica must use this same key file")
				}
			}
			return kr, nil
		},
	),
)

// ProvisionModule provides the provisioners of the drivers this server can
// create environments with: memory and sqlite always, postgres when an
// admin URL is configured.
var ProvisionModule = fx.Module("provision",
	fx.Provide(
		engine.NewMemory,
		func(cfg config.Config) *provision.SQLite { return provision.NewSQLite(cfg.DataDir) },
		func(lc fx.Lifecycle, cfg config.Config, mem *engine.Memory, lite *provision.SQLite) (*provision.Set, error) {
			byDriver := map[string]provision.Provisioner{
				provision.DriverMemory: mem,
				provision.DriverSQLite: lite,
			}
			if cfg.PostgresAdminURL != "" {
				pg, err := provision.NewPostgres(cfg.PostgresAdminURL)
				if err != nil {
					return nil, fmt.Errorf("--postgres-admin-url: not a valid postgres:// URL")
				}
				lc.Append(fx.StopHook(pg.Close))
				byDriver[provision.DriverPostgres] = pg
			}
			if cfg.TursoOrganization != "" && cfg.TursoAPIToken != "" {
				turso, err := provision.NewTurso(provision.TursoConfig{
					Organization: cfg.TursoOrganization, Group: cfg.TursoGroup, APIToken: cfg.TursoAPIToken,
					APIURL: cfg.TursoAPIURL, URLScheme: cfg.TursoScheme,
				})
				if err != nil {
					return nil, fmt.Errorf("turso: %w", err)
				}
				byDriver[provision.DriverTurso] = turso
			}
			set := provision.NewSet(byDriver)
			if cfg.ControlPlaneIsPostgres() {
				set.Refuse(provision.DriverMemory, "several replicas would each hold a different copy")
			}
			return set, nil
		},
	),
)

// InvalidateModule provides the invalidation transport as the Publisher
// writers use and the Subscriber caches use: in-process with an embedded
// control plane; PostgreSQL LISTEN/NOTIFY with a PostgreSQL one, so a write on
// one replica drops the stale caches of every replica.
var InvalidateModule = fx.Module("invalidate",
	fx.Provide(
		func(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (invalidate.Publisher, invalidate.Subscriber, listener, error) {
			if !cfg.ControlPlaneIsPostgres() {
				bus := invalidate.NewBus()
				return bus, bus, nil, nil
			}
			pg, err := invalidate.NewPG(cfg.ControlPlane, log)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("invalidation listener: %w", err)
			}
			lc.Append(fx.Hook{OnStart: pg.Start, OnStop: func(context.Context) error { return pg.Close() }})
			return pg, pg, pg, nil
		},
	),
)

// listener is the cross-replica invalidation listener, nil when there is
// only one process.
type listener interface{ Ready() bool }

// readiness is ready while the control plane answers and, with several
// replicas, while this replica hears the others' invalidations.
type readiness struct {
	store    controlplane.Store
	listener listener
}

func (r readiness) Ready(ctx context.Context) error {
	if err := r.store.Ping(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	if r.listener != nil && !r.listener.Ready() {
		return errors.New("the invalidation listener is reconnecting")
	}
	return nil
}

// RoutingModule takes environment-scoped calls to their environment's own
// database: the resolver, the engine opener, the driver registry (dropping a
// driver whenever its environment's row or credential changes) and the
// metadata cache of the data plane.
var RoutingModule = fx.Module("routing",
	fx.Provide(
		func(cfg config.Config, store controlplane.Store, events invalidate.Subscriber, log *slog.Logger) *resolve.Resolver {
			return resolve.New(store, events, resolve.Options{RootDomain: cfg.RootDomain, APIHostnames: cfg.APIHostnames}, log)
		},
		func(store controlplane.Store, kr *secrets.Keyring, lite *provision.SQLite, mem *engine.Memory, events invalidate.Publisher, log *slog.Logger) *engine.Opener {
			o := engine.New(store, kr, lite, mem)
			// Every database is reconciled with the control plane's
			// definitions as it opens: a crash between migrating a
			// database and storing its definition converges there.
			o.Reconcile = metadata.NewReconciler(store, events, log).Reconcile
			return o
		},
		func(lc fx.Lifecycle, cfg config.Config, o *engine.Opener, events invalidate.Subscriber, log *slog.Logger) *registry.Registry {
			r := registry.New(o.Open, registry.Options{MaxOpen: cfg.MaxOpenEnvironments, IdleTTL: cfg.IdleTTL}, log)
			cancel := events.Subscribe(func(ev invalidate.Event) {
				switch ev.Kind {
				// Only changes to the database itself close a driver: routing
				// changes (hostname, default, status) are the resolver's, and
				// reopening pools on every one of them churned connections.
				case invalidate.KindDatabase, invalidate.KindCredential:
					r.Invalidate(ev.EnvironmentID)
				case invalidate.KindAll:
					r.InvalidateAll()
				}
			})
			lc.Append(fx.StopHook(func() error {
				cancel()
				return r.Close()
			}))
			return r
		},
		func(store controlplane.Store, events invalidate.Subscriber) *objects.Cache {
			return objects.NewCache(store, events)
		},
		func(store controlplane.Store) controlplane.ObjectStore { return store },
	),
	fx.Invoke(func(lc fx.Lifecycle, store controlplane.Store, log *slog.Logger) {
		ctx, cancel := context.WithCancel(context.Background())
		lc.Append(fx.Hook{
			OnStart: func(context.Context) error { go warnMemoryEnvironments(ctx, store, log); return nil },
			OnStop:  func(context.Context) error { cancel(); return nil },
		})
	}),
)

// warnMemoryEnvironments says at start which memory environments lost
// their records with the process that held them: they come back empty,
// their objects re-created from the definitions at first use.
func warnMemoryEnvironments(ctx context.Context, store controlplane.Store, log *slog.Logger) {
	var ids []string
	err := controlplane.EachEnvironment(ctx, store, func(_ controlplane.Organization, env controlplane.Environment) bool {
		if env.Driver == provision.DriverMemory && env.Status == controlplane.StatusActive {
			ids = append(ids, env.ID)
		}
		return true
	})
	if err != nil {
		log.Debug("listing memory environments at start failed", "error", err)
		return
	}
	if len(ids) > 0 {
		log.Warn("memory environments come back empty after a restart: their records are gone, their objects are re-created from their definitions",
			"environments", strings.Join(ids, ","), "count", len(ids))
	}
}

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
