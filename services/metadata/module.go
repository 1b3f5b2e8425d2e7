package metadata

import (
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/registry"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/internal/server"
)

// Module serves MetadataService behind the environment resolver.
var Module = fx.Module("metadata",
	fx.Provide(
		func(store controlplane.Store, reg *registry.Registry, cache *objects.Cache, events invalidate.Publisher, log *slog.Logger) *Service {
			return New(store, store, reg, cache, events, log)
		},
		server.AsService(func(s *Service, r *resolve.Resolver) server.Service {
			return server.Service{
				Name: metadatav1connect.MetadataServiceName,
				Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
					return metadatav1connect.NewMetadataServiceHandler(s, opts...)
				},
				// The resolver runs innermost, after authentication and validation.
				Interceptors: []connect.Interceptor{r.Interceptor()},
			}
		}),
	),
)
