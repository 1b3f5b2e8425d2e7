// Package cache is the cache every control-plane lookup goes through: a
// bounded TTL cache whose entries, once expired, stay available for a while
// as the last known good value, to be served only when the control plane
// cannot be reached (stale-while-error). An explicit invalidation removes
// both: a fact known to have changed is never served again.
package cache

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
)

type item[V any] struct {
	value V
	at    time.Time
}

// Cache maps K to V with a TTL and a stale fallback.
type Cache[K comparable, V any] struct {
	fresh    *expirable.LRU[K, V]
	stale    *lru.Cache[K, item[V]]
	maxStale time.Duration
}

// New returns a cache of at most size entries, fresh for ttl, served stale
// for at most maxStale after they were loaded (0: never stale).
func New[K comparable, V any](size int, ttl, maxStale time.Duration) *Cache[K, V] {
	c := &Cache[K, V]{fresh: expirable.NewLRU[K, V](size, nil, ttl), maxStale: maxStale}
	if maxStale > 0 {
		c.stale, _ = lru.New[K, item[V]](size)
	}
	return c
}

// Get returns a fresh value.
func (c *Cache[K, V]) Get(k K) (V, bool) { return c.fresh.Get(k) }

// Peek returns a fresh value without touching its recency.
func (c *Cache[K, V]) Peek(k K) (V, bool) { return c.fresh.Peek(k) }

// Add stores a value just loaded from the source.
func (c *Cache[K, V]) Add(k K, v V) {
	c.fresh.Add(k, v)
	if c.stale != nil {
		c.stale.Add(k, item[V]{value: v, at: time.Now()})
	}
}

// Stale returns the last value loaded for k, if it is not older than the
// cache's bound. Only for when the source cannot answer.
func (c *Cache[K, V]) Stale(k K) (V, bool) {
	var zero V
	if c.stale == nil {
		return zero, false
	}
	it, ok := c.stale.Get(k)
	if !ok || time.Since(it.at) > c.maxStale {
		return zero, false
	}
	return it.value, true
}

// Remove forgets k, fresh and stale.
func (c *Cache[K, V]) Remove(k K) {
	c.fresh.Remove(k)
	if c.stale != nil {
		c.stale.Remove(k)
	}
}

// Purge forgets everything.
func (c *Cache[K, V]) Purge() {
	c.fresh.Purge()
	if c.stale != nil {
		c.stale.Purge()
	}
}

// Keys lists every key that has a value, fresh or stale, so invalidations
// that match on values can find them all.
func (c *Cache[K, V]) Keys() []K {
	keys := c.fresh.Keys()
	if c.stale == nil {
		return keys
	}
	seen := make(map[K]bool, len(keys))
	for _, k := range keys {
		seen[k] = true
	}
	for _, k := range c.stale.Keys() {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	return keys
}

// PeekAny returns k's value, fresh or stale, for invalidations that match
// on values.
func (c *Cache[K, V]) PeekAny(k K) (V, bool) {
	if v, ok := c.fresh.Peek(k); ok {
		return v, true
	}
	if c.stale != nil {
		if it, ok := c.stale.Peek(k); ok {
			return it.value, true
		}
	}
	var zero V
	return zero, false
}
