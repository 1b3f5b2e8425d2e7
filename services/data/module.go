package data

import (
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"go.uber.org/fx"

	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/objects"
	"github.com/envplane/envplane/internal/registry"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/internal/secrets"
	"github.com/envplane/envplane/internal/server"
)

// Module serves DataService behind the environment resolver.
var Module = fx.Module("data",
	fx.Provide(
		func(reg *registry.Registry, defs *objects.Cache, store controlplane.Store, kr *secrets.Keyring, log *slog.Logger) (*Service, error) {
			// Page tokens are signed with a key every replica derives alike.
			return New(reg, defs, store, kr.Derive("page tokens"), log)
		},
		server.AsService(func(s *Service, r *resolve.Resolver) server.Service {
			return server.Service{
				Name: datav1connect.DataServiceName,
				Mount: func(opts ...connect.HandlerOption) (string, http.Handler) {
					return datav1connect.NewDataServiceHandler(s, opts...)
				},
				Interceptors: []connect.Interceptor{r.Interceptor(), conditionals{}},
				// REST answers records as JSON written from the stored
				// values (rest, answer.go); the other protocols as Structs.
				Direct: []server.Method{
					server.Unary(datav1connect.DataServiceCreateRecordProcedure, rest(s.createRecord)),
					server.Unary(datav1connect.DataServiceGetRecordProcedure, rest(s.getRecord)),
					server.Unary(datav1connect.DataServiceListRecordsProcedure, rest(s.listRecords)),
					server.Unary(datav1connect.DataServiceUpdateRecordProcedure, rest(s.updateRecord)),
					server.Unary(datav1connect.DataServiceDeleteRecordProcedure, s.DeleteRecord),
					server.Unary(datav1connect.DataServiceBatchWriteRecordsProcedure, s.BatchWriteRecords),
				},
			}
		}),
	),
)
