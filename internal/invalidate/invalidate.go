// Package invalidate carries "this routing fact changed" events from
// control-plane writes to every cache that holds the old fact. The in-process
// Bus serves a single process; a cross-replica transport (PostgreSQL
// LISTEN/NOTIFY) implements the same Publisher and feeds the same subscribers.
package invalidate

import (
	"context"
	"sync"
)

// Kind names what changed.
type Kind string

// Kinds of events. Subscribers that cannot tell what to drop drop everything
// on KindAll.
const (
	KindEnvironment  Kind = "environment"  // row changed: status, default, driver, database
	KindHostname     Kind = "hostname"     // a hostname now routes elsewhere or nowhere
	KindCredential   Kind = "credential"   // the environment's database secret changed
	KindDatabase     Kind = "database"     // the environment's database was (re)provisioned or is going away
	KindToken        Kind = "token"        // a token was revoked or changed
	KindOrganization Kind = "organization" // the organization's default or membership changed
	KindObject       Kind = "object"       // an object definition of an environment changed
	KindAll          Kind = "all"          // notifications may have been missed: drop every cache
)

// Event says which cached facts are stale. Fields not relevant to Kind are empty.
type Event struct {
	Kind           Kind
	EnvironmentID  string
	OrganizationID string
	Hostname       string
	TokenID        string
	Object         string
}

// Publisher is what control-plane writers depend on.
type Publisher interface {
	Publish(ctx context.Context, events ...Event) error
}

// Bus is the in-process Publisher: Publish calls every subscriber
// synchronously, so when a write returns, this process's caches are already
// invalidated.
type Bus struct {
	mu   sync.RWMutex
	next int
	subs map[int]func(Event)
}

// NewBus returns an empty Bus.
func NewBus() *Bus {
	return &Bus{subs: make(map[int]func(Event))}
}

// Publish delivers events to every subscriber in order.
func (b *Bus) Publish(_ context.Context, events ...Event) error {
	b.mu.RLock()
	subs := make([]func(Event), 0, len(b.subs))
	for _, fn := range b.subs {
		subs = append(subs, fn)
	}
	b.mu.RUnlock()
	for _, ev := range events {
		for _, fn := range subs {
			fn(ev)
		}
	}
	return nil
}

// Subscribe registers fn for every future event; the returned func removes it.
// fn must be quick and must not call Publish.
func (b *Bus) Subscribe(fn func(Event)) (cancel func()) {
	b.mu.Lock()
	id := b.next
	b.next++
	b.subs[id] = fn
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.subs, id)
		b.mu.Unlock()
	}
}

// Subscriber is what caches depend on to hear about invalidations.
type Subscriber interface {
	Subscribe(fn func(Event)) (cancel func())
}
