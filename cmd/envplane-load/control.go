package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
)

// controlPlane is what the control-plane scenarios created.
type controlPlane struct {
	mu   sync.Mutex
	envs []string
}

func (cp *controlPlane) cleanup(cl *clients, concurrency int) {
	deleteEnvironments(cl, cp.envs, concurrency)
}

// runControlPlane runs the control-plane scenarios over Connect in an
// organization of their own: CreateEnvironment (sqlite, at most
// --max-creates), then GetEnvironment and ResolveHostname over the
// environments it created, round-robin.
func runControlPlane(ctx context.Context, cl *clients, o options) (*controlPlane, error) {
	org, err := cl.env.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{
		Slug: fmt.Sprintf("load-cp-%d", time.Now().UnixNano()%1e9), DisplayName: "envplane-load control plane",
	}))
	if err != nil {
		return nil, fmt.Errorf("create organization: %w", err)
	}
	orgID := org.Msg.GetOrganization().GetId()
	cp := &controlPlane{}

	var envs []*environmentv1.Environment
	create := measure(ctx, "CreateEnvironment", o.duration, o.concurrency, o.maxCreates, func(ctx context.Context, i int64) error {
		resp, err := cl.env.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: orgID, Slug: fmt.Sprintf("env-%d", i), Driver: "sqlite",
		}))
		if err != nil {
			return err
		}
		cp.mu.Lock()
		defer cp.mu.Unlock()
		cp.envs = append(cp.envs, resp.Msg.GetEnvironment().GetId())
		if len(envs) < 1000 {
			envs = append(envs, resp.Msg.GetEnvironment())
		}
		return nil
	})
	printRow(protoConnect, "CreateEnvironment", "-", create)
	if len(envs) == 0 {
		return cp, fmt.Errorf("CreateEnvironment created nothing: %v", create.firstErr)
	}

	n := int64(len(envs))
	get := measure(ctx, "GetEnvironment", o.duration, o.concurrency, o.maxOps, func(ctx context.Context, i int64) error {
		_, err := cl.env.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: envs[i%n].GetId()}))
		return err
	})
	printRow(protoConnect, "GetEnvironment", fmt.Sprint(n), get)
	resolve := measure(ctx, "ResolveHostname", o.duration, o.concurrency, o.maxOps, func(ctx context.Context, i int64) error {
		_, err := cl.env.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: envs[i%n].GetHostname()}))
		return err
	})
	printRow(protoConnect, "ResolveHostname", fmt.Sprint(n), resolve)
	return cp, nil
}
