package cache_test

import (
	"sync"
	"testing"

	"github.com/envplane/envplane/internal/cache"
)

// TestGuard: what a read begun before an invalidation found is not cached;
// what one begun after found is; concurrent reads and invalidations never
// leave a value read before the last invalidation in the cache.
func TestGuard(t *testing.T) {
	t.Parallel()
	var g cache.Guard
	added := 0
	stale := g.Begin()
	func() { defer g.Invalidate()() }()
	g.Add(stale, func() { added++ })
	if added != 0 {
		t.Fatal("a read begun before an invalidation was cached")
	}
	fresh := g.Begin()
	g.Add(fresh, func() { added++ })
	if added != 1 {
		t.Fatal("a read begun after the last invalidation was not cached")
	}

	// Under the race detector: the source holds a version, invalidations
	// move it on; a cached version is never older than the source's was
	// when the invalidation that followed it ended.
	var (
		mu      sync.Mutex
		source  int
		cached  = -1
		wg      sync.WaitGroup
		readers = 8
	)
	for range readers {
		wg.Go(func() {
			for range 2000 {
				gen := g.Begin()
				mu.Lock()
				v := source
				mu.Unlock()
				g.Add(gen, func() { cached = v })
			}
		})
	}
	wg.Go(func() {
		for range 2000 {
			mu.Lock()
			source++
			mu.Unlock()
			func() {
				defer g.Invalidate()()
				mu.Lock()
				defer mu.Unlock()
				if cached != -1 && cached < source {
					cached = -1 // the invalidation drops the entry
				}
			}()
		}
	})
	wg.Wait()
	func() {
		defer g.Invalidate()()
		mu.Lock()
		defer mu.Unlock()
		if cached != -1 && cached < source {
			t.Errorf("cached %d after the invalidation of %d", cached, source)
		}
	}()
}
