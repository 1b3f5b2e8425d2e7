package app_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
)

// benchServer starts a server and an organization for a benchmark, with a
// Connect binary (HTTP/2) client.
func benchServer(b *testing.B) (client, *environmentv1.Organization) {
	b.Helper()
	env := apptest.Start(b)
	c := env.Client(apptest.ConnectProto)
	resp, err := c.CreateOrganization(b.Context(), connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "bench"}))
	if err != nil {
		b.Fatalf("CreateOrganization: %v", err)
	}
	return c, resp.Msg.GetOrganization()
}

func reportOpsPerSecond(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkCreateEnvironmentSQLite measures registering and provisioning a
// SQLite environment (a new database file each) end to end.
func BenchmarkCreateEnvironmentSQLite(b *testing.B) {
	c, org := benchServer(b)
	i := 0
	for b.Loop() {
		i++
		resp, err := c.CreateEnvironment(b.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: fmt.Sprintf("env-%d", i), Driver: "sqlite",
		}))
		if err != nil {
			b.Fatalf("CreateEnvironment: %v", err)
		}
		if s := resp.Msg.GetEnvironment().GetStatus(); s != "active" {
			b.Fatalf("status %q", s)
		}
	}
	reportOpsPerSecond(b)
}

func BenchmarkCreateEnvironmentSQLiteParallel(b *testing.B) {
	c, org := benchServer(b)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := c.CreateEnvironment(b.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: fmt.Sprintf("env-%d", n.Add(1)), Driver: "sqlite",
			}))
			if err != nil {
				b.Errorf("CreateEnvironment: %v", err)
				return
			}
		}
	})
	reportOpsPerSecond(b)
}

// BenchmarkGetEnvironment measures a control-plane read end to end.
func BenchmarkGetEnvironment(b *testing.B) {
	c, org := benchServer(b)
	env := benchEnv(b, c, org)
	req := connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: env.GetId()})
	for b.Loop() {
		if _, err := c.GetEnvironment(b.Context(), req); err != nil {
			b.Fatalf("GetEnvironment: %v", err)
		}
	}
	reportOpsPerSecond(b)
}

func BenchmarkGetEnvironmentParallel(b *testing.B) {
	c, org := benchServer(b)
	env := benchEnv(b, c, org)
	b.RunParallel(func(pb *testing.PB) {
		req := connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: env.GetId()})
		for pb.Next() {
			if _, err := c.GetEnvironment(b.Context(), req); err != nil {
				b.Errorf("GetEnvironment: %v", err)
				return
			}
		}
	})
	reportOpsPerSecond(b)
}

func benchEnv(b *testing.B, c client, org *environmentv1.Organization) *environmentv1.Environment {
	b.Helper()
	resp, err := c.CreateEnvironment(b.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite",
	}))
	if err != nil {
		b.Fatalf("CreateEnvironment: %v", err)
	}
	return resp.Msg.GetEnvironment()
}
