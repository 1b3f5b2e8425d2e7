package cache

import (
	"testing"
	"time"
)

func TestFreshStaleAndInvalidation(t *testing.T) {
	t.Parallel()
	c := New[string, int](10, 20*time.Millisecond, time.Hour)
	c.Add("a", 1)
	c.Add("b", 2)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("fresh Get = %v, %v", v, ok)
	}
	time.Sleep(40 * time.Millisecond)
	if _, ok := c.Get("a"); ok {
		t.Fatal("an expired entry is still fresh")
	}
	if v, ok := c.Stale("a"); !ok || v != 1 {
		t.Fatalf("Stale after expiry = %v, %v; want the last known good", v, ok)
	}
	c.Remove("a")
	if _, ok := c.Stale("a"); ok {
		t.Error("an invalidated entry is served stale")
	}
	c.Purge()
	if _, ok := c.Stale("b"); ok {
		t.Error("a purged entry is served stale")
	}
}

func TestStaleIsBounded(t *testing.T) {
	t.Parallel()
	c := New[string, int](10, time.Millisecond, 10*time.Millisecond)
	c.Add("a", 1)
	time.Sleep(30 * time.Millisecond)
	if _, ok := c.Stale("a"); ok {
		t.Error("an entry older than maxStale is served")
	}
	noStale := New[string, int](10, time.Millisecond, 0)
	noStale.Add("a", 1)
	time.Sleep(5 * time.Millisecond)
	if _, ok := noStale.Stale("a"); ok {
		t.Error("a cache without stale fallback served one")
	}
}
