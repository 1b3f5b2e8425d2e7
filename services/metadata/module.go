package metadata

import (
	"net/http"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/internal/server"
)

// Module serves MetadataService behind the environment resolver.
var Module = fx.Module("metadata",
	fx.Provide(
		New,
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
