package provision

import (
	"context"
	"sync"

	"github.com/envplane/envplane/internal/controlplane"
)

// Memory provisions process-local environments: their data lives in this
// process only and is lost on restart, so the driver is for development.
// Memory records which environments exist so the engine can refuse an
// environment this process never provisioned (after a restart, say).
type Memory struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

// NewMemory returns an empty Memory provisioner.
func NewMemory() *Memory {
	return &Memory{ids: make(map[string]struct{})}
}

// Provision registers env in this process.
func (m *Memory) Provision(_ context.Context, env controlplane.Environment) (Result, error) {
	m.mu.Lock()
	m.ids[env.ID] = struct{}{}
	m.mu.Unlock()
	return Result{DatabaseURL: "memory:" + env.ID}, nil
}

// Deprovision forgets env.
func (m *Memory) Deprovision(_ context.Context, env controlplane.Environment) error {
	m.mu.Lock()
	delete(m.ids, env.ID)
	m.mu.Unlock()
	return nil
}

// Has reports whether env was provisioned by this process.
func (m *Memory) Has(environmentID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.ids[environmentID]
	return ok
}
