package environment

import (
	"context"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/ownership"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/secrets"
	"github.com/envplane/envplane/internal/server"
)

// Module serves EnvironmentService.
var Module = fx.Module("environment",
	fx.Provide(
		func(cfg config.Config, store controlplane.Store, p *provision.Set, kr *secrets.Keyring, events invalidate.Publisher, log *slog.Logger) *Service {
			return New(store, p, kr, events, cfg.RootDomain, HostnameChecks{
				Checker: &ownership.Checker{
					DNSResolver: cfg.HostnameChecks.DNSResolver, HTTPPort: cfg.HostnameChecks.HTTPPort,
					AllowPrivate: cfg.HostnameChecks.AllowPrivate,
				},
				Interval:     cfg.HostnameChecks.Interval,
				Grace:        cfg.HostnameChecks.Grace,
				APIHostnames: cfg.APIHostnames,
			}, log)
		},
		server.AsService(func(s *Service) server.Service {
			return server.Service{
				Name: environmentv1connect.EnvironmentServiceName,
				Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
					return environmentv1connect.NewEnvironmentServiceHandler(s, opts...)
				},
			}
		}),
	),
	fx.Invoke(func(lc fx.Lifecycle, s *Service) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		lc.Append(fx.Hook{
			OnStart: func(context.Context) error {
				go func() {
					defer close(done)
					s.SweepPlatformNamespace(ctx)
					s.RunHostnameChecks(ctx)
				}()
				return nil
			},
			OnStop: func(stop context.Context) error {
				cancel()
				select {
				case <-done:
				case <-stop.Done():
				}
				return nil
			},
		})
	}),
)
