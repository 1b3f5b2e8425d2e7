package server

import (
	"go.uber.org/fx"
)

// Module runs the Server for the lifetime of the fx application. Services
// join by providing a Service into the "services" group (see AsService).
var Module = fx.Module("server",
	fx.Provide(fx.Annotate(New, fx.ParamTags(``, `group:"services"`, ``, ``, ``))),
	fx.Invoke(func(lc fx.Lifecycle, s *Server) {
		lc.Append(fx.Hook{OnStart: s.Start, OnStop: s.Stop})
	}),
)

// AsService annotates a constructor of a Service so its result joins the
// group the Server mounts.
func AsService(constructor any) any {
	return fx.Annotate(constructor, fx.ResultTags(`group:"services"`))
}
