package cache

import (
	"sync"
	"sync/atomic"
)

// Guard keeps a read that raced an invalidation out of a cache. A read
// from before a write, cached after the write's invalidation dropped the
// old entry, would serve the old fact (a revoked token, a moved hostname,
// an old definition) until its TTL. So a read notes Begin before it reads
// its source and caches what it read through Add, which adds nothing when
// an invalidation happened since. Cache hits touch the Guard not at all.
//
// The zero Guard is ready for use.
type Guard struct {
	mu  sync.Mutex // orders Add's check-and-add with invalidations
	gen atomic.Uint64
}

// Begin returns the generation a read starts at, for Add.
func (g *Guard) Begin() uint64 { return g.gen.Load() }

// Invalidate starts an invalidation: reads begun before it will not be
// cached. It returns holding the guard, so that no Add runs while the
// caller drops the entries the invalidation is about; call done after:
//
//	defer g.Invalidate()()
func (g *Guard) Invalidate() (done func()) {
	g.mu.Lock()
	g.gen.Add(1)
	return g.mu.Unlock
}

// Add runs add, which stores what a read begun at gen found, unless an
// invalidation happened since.
func (g *Guard) Add(gen uint64, add func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gen.Load() == gen {
		add()
	}
}
