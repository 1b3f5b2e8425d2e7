package app_test

import (
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"go.uber.org/fx"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/envplane/envplane/app"
	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/config"
)

func TestValidateApp(t *testing.T) {
	t.Parallel()
	type graph struct {
		name string
		args []string
	}
	graphs := []graph{
		{name: "default services"},
		{name: "custom root domain and CORS", args: []string{"--root-domain=Envs.Example.", "--cors-origins=https://app.example"}},
	}
	// Each service alone, as a deployment scaling one plane apart would run it.
	for _, s := range config.Implemented {
		graphs = append(graphs, graph{name: s + " only", args: []string{"--services=" + s}})
	}
	for _, tc := range graphs {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := apptest.Config(t, t.TempDir(), tc.args...)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			if err := fx.ValidateApp(app.Options(cfg, log)); err != nil {
				t.Fatalf("fx.ValidateApp: %v", err)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)

	t.Run("grpc.health.v1 over gRPC", func(t *testing.T) {
		t.Parallel()
		client := grpchealth.NewClient(env.H2C, env.URL, connect.WithGRPC())
		for _, service := range []string{"", environmentv1connect.EnvironmentServiceName} {
			resp, err := client.Check(t.Context(), &grpchealth.CheckRequest{Service: service})
			if err != nil {
				t.Fatalf("Check(%q): %v", service, err)
			}
			if resp.Status != grpchealth.StatusServing {
				t.Errorf("Check(%q) = %v, want serving", service, resp.Status)
			}
		}
		_, err := client.Check(t.Context(), &grpchealth.CheckRequest{Service: "no.such.Service"})
		apptest.WantError(t, err, connect.CodeNotFound, "")
	})

	t.Run("grpc.health.v1 over Connect", func(t *testing.T) {
		t.Parallel()
		client := grpchealth.NewClient(env.HTTP1, env.URL)
		resp, err := client.Check(t.Context(), &grpchealth.CheckRequest{})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if resp.Status != grpchealth.StatusServing {
			t.Errorf("Check = %v, want serving", resp.Status)
		}
	})

	t.Run("GET /healthz", func(t *testing.T) {
		t.Parallel()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, env.URL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := env.HTTP1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
			t.Errorf("GET /healthz = %d %q, want 200 ok", resp.StatusCode, body)
		}
	})
}

func TestReflection(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	client := grpcreflect.NewClient(env.H2C, env.URL, connect.WithGRPC())
	stream := client.NewStream(t.Context())
	// Closed before t.Context() is canceled: a stream canceled instead holds
	// the server's graceful shutdown up for a second.
	defer func() { _, _ = stream.Close() }()

	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("ListServices: %v", err)
	}
	var services []string
	for _, n := range names {
		services = append(services, string(n))
	}
	for _, want := range []string{environmentv1connect.EnvironmentServiceName, grpchealth.HealthV1ServiceName} {
		if !slices.Contains(services, want) {
			t.Errorf("ListServices = %q, want %s among them", services, want)
		}
	}

	// The descriptors are served too, so grpcurl can build requests.
	files, err := stream.FileContainingSymbol(environmentv1connect.EnvironmentServiceName)
	if err != nil {
		t.Fatalf("FileContainingSymbol: %v", err)
	}
	if !slices.ContainsFunc(files, func(f *descriptorpb.FileDescriptorProto) bool {
		return f.GetName() == "envplane/environment/v1/environment.proto"
	}) {
		t.Errorf("FileContainingSymbol returned no envplane/environment/v1/environment.proto")
	}
}

// TestCallsNeedAToken checks the harness's premise: every service call but
// health and reflection needs the token, over every protocol, and a refused
// call does nothing.
func TestCallsNeedAToken(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, _ client) {
		for _, tc := range []struct {
			token, reason string
		}{
			{token: "", reason: auth.ReasonTokenMissing},
			{token: "not-a-token", reason: auth.ReasonTokenMalformed},
			{token: auth.SecretPrefix + strings.Repeat("x", 20), reason: ""}, // unknown or malformed, depending on the secret's shape
		} {
			c := env.ClientWithToken(p, tc.token)
			_, err := c.CreateOrganization(t.Context(), connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "acme"}))
			apptest.WantError(t, err, connect.CodeUnauthenticated, tc.reason)
		}
		resp, err := env.Client(p).ListOrganizations(t.Context(), connect.NewRequest(&environmentv1.ListOrganizationsRequest{}))
		if err != nil {
			t.Fatalf("ListOrganizations with the admin token: %v", err)
		}
		if n := len(resp.Msg.GetOrganizations()); n != 0 {
			t.Errorf("%d organizations after refused creates, want 0", n)
		}
	})
}
