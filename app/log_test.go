package app_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/services/environment"
)

var generatedRequestID = regexp.MustCompile(`^[0-9a-f]{24}$`)

// safeID spells p with the characters a request id may hold ([A-Za-z0-9._:-]).
func safeID(p apptest.Protocol) string { return strings.ReplaceAll(string(p), "+", ".") }

func TestRequestLog(t *testing.T) {
	t.Parallel()
	wantProtocol := map[apptest.Protocol]string{
		apptest.ConnectJSON:  connect.ProtocolConnect,
		apptest.ConnectProto: connect.ProtocolConnect,
		apptest.GRPC:         connect.ProtocolGRPC,
		apptest.GRPCWeb:      connect.ProtocolGRPCWeb,
		// REST says so, whichever route (the transcoder or a direct one)
		// served it.
		apptest.REST: "rest",
	}
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()

		// rpcLine returns the one "rpc" line of request id, checking what every such line carries.
		rpcLine := func(t *testing.T, id, procedure, code string) map[string]any {
			t.Helper()
			lines := env.Logs.Find(map[string]any{"msg": "rpc", "request_id": id})
			if len(lines) != 1 {
				t.Fatalf("%d rpc lines with request_id %q, want 1; all rpc lines: %v", len(lines), id, env.Logs.Find(map[string]any{"msg": "rpc"}))
			}
			line := lines[0]
			if line["procedure"] != procedure || line["code"] != code {
				t.Errorf("rpc line = %v, want procedure %s and code %s", line, procedure, code)
			}
			if want, ok := wantProtocol[p]; ok && line["protocol"] != want {
				t.Errorf("rpc line protocol = %v, want %s", line["protocol"], want)
			}
			if _, ok := line["duration_ms"].(float64); !ok {
				t.Errorf("rpc line has no duration_ms: %v", line)
			}
			return line
		}

		t.Run("supplied request id on success", func(t *testing.T) {
			id := "client." + safeID(p) + ".ok"
			req := connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "acme"})
			req.Header().Set("X-Request-Id", id)
			resp, err := c.CreateOrganization(ctx, req)
			if err != nil {
				t.Fatalf("CreateOrganization: %v", err)
			}
			if got := resp.Header().Get("X-Request-Id"); got != id {
				t.Errorf("X-Request-Id response header = %q, want %q", got, id)
			}
			rpcLine(t, id, environmentv1connect.EnvironmentServiceCreateOrganizationProcedure, "ok")
			// The handler's own lines carry the same id.
			if len(env.Logs.Find(map[string]any{"msg": "organization created", "request_id": id})) != 1 {
				t.Errorf("no 'organization created' line with request_id %q", id)
			}
		})

		t.Run("supplied request id on error", func(t *testing.T) {
			id := "client." + safeID(p) + ".err"
			req := connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: uuid.NewString()})
			req.Header().Set("X-Request-Id", id)
			_, err := c.GetOrganization(ctx, req)
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonOrganizationNotFound)
			if ce := new(connect.Error); !errors.As(err, &ce) || ce.Meta().Get("X-Request-Id") != id {
				t.Errorf("error metadata X-Request-Id missing or not %q (error: %v)", id, err)
			}
			line := rpcLine(t, id, environmentv1connect.EnvironmentServiceGetOrganizationProcedure, "not_found")
			if line["reason"] != environment.ReasonOrganizationNotFound || line["level"] != "INFO" {
				t.Errorf("rpc line = %v, want reason %s at INFO", line, environment.ReasonOrganizationNotFound)
			}
		})

		t.Run("generated request id", func(t *testing.T) {
			for _, supplied := range []string{"", "has spaces in it", strings.Repeat("x", 129)} {
				req := connect.NewRequest(&environmentv1.ListOrganizationsRequest{})
				if supplied != "" {
					req.Header().Set("X-Request-Id", supplied)
				}
				resp, err := c.ListOrganizations(ctx, req)
				if err != nil {
					t.Fatalf("ListOrganizations: %v", err)
				}
				id := resp.Header().Get("X-Request-Id")
				if !generatedRequestID.MatchString(id) {
					t.Errorf("supplied %q: X-Request-Id response header = %q, want a generated id", supplied, id)
					continue
				}
				rpcLine(t, id, environmentv1connect.EnvironmentServiceListOrganizationsProcedure, "ok")
			}
		})

		t.Run("no secrets in the log", func(t *testing.T) {
			const secret = "s3cr3t-database-password"
			org := createOrg(t, c, "secretive")
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite", DatabaseSecret: secret, DatabaseUrl: "postgres://u:" + secret + "@db",
			}))
			apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonDatabaseURLNotAllowed)
			if strings.Contains(env.Logs.String(), secret) {
				t.Errorf("the server log holds the database secret")
			}
		})
	})
}
