package access

import (
	"net/http"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/gen/envplane/access/v1/accessv1connect"
	"github.com/envplane/envplane/internal/server"
)

// Module serves AccessService.
var Module = fx.Module("access",
	fx.Provide(
		New,
		server.AsService(func(s *Service) server.Service {
			return server.Service{
				Name: accessv1connect.AccessServiceName,
				Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
					return accessv1connect.NewAccessServiceHandler(s, opts...)
				},
			}
		}),
	),
)
