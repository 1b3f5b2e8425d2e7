package registry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/drivermem"
	"github.com/envplane/envplane/internal/registry"
)

// counted wraps a real memory driver to observe when the registry closes it.
type counted struct {
	driver.Driver
	closed atomic.Bool
	inUse  atomic.Int64 // calls the test pretends are running on it
}

func (c *counted) Close() error {
	if c.inUse.Load() != 0 {
		panic("driver closed under an in-flight call")
	}
	c.closed.Store(true)
	return c.Driver.Close()
}

type opener struct {
	mu     sync.Mutex
	opens  map[string]int
	latest map[string]*counted
	delay  time.Duration
	fail   error
}

func newOpener() *opener {
	return &opener{opens: map[string]int{}, latest: map[string]*counted{}}
}

func (o *opener) open(ctx context.Context, id string) (driver.Driver, error) {
	if o.delay > 0 {
		time.Sleep(o.delay)
	}
	if o.fail != nil {
		return nil, o.fail
	}
	d := &counted{Driver: drivermem.New()}
	o.mu.Lock()
	o.opens[id]++
	o.latest[id] = d
	o.mu.Unlock()
	return d, nil
}

func (o *opener) count(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.opens[id]
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestSingleflightUnderAThousandFirstCalls(t *testing.T) {
	t.Parallel()
	o := newOpener()
	o.delay = 20 * time.Millisecond
	r := registry.New(o.open, registry.Options{MaxOpen: 10}, quiet())
	defer r.Close()
	var wg sync.WaitGroup
	leases := make([]*registry.Lease, 1000)
	errs := make([]error, 1000)
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = r.Acquire(t.Context(), "env-1")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if leases[i].Driver != leases[0].Driver {
			t.Fatalf("call %d got another driver", i)
		}
		leases[i].Release()
	}
	if n := o.count("env-1"); n != 1 {
		t.Errorf("opened %d times, want 1", n)
	}
}

func TestLRUEvictionClosesDrivers(t *testing.T) {
	t.Parallel()
	o := newOpener()
	r := registry.New(o.open, registry.Options{MaxOpen: 2}, quiet())
	defer r.Close()
	for _, id := range []string{"a", "b", "a", "c"} { // "b" is least recently used when "c" arrives
		l, err := r.Acquire(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	if r.Len() != 2 {
		t.Errorf("Len = %d, want 2", r.Len())
	}
	if !o.latest["b"].closed.Load() {
		t.Error("evicted driver b was not closed")
	}
	if o.latest["a"].closed.Load() || o.latest["c"].closed.Load() {
		t.Error("a recently used driver was closed")
	}
	l, _ := r.Acquire(t.Context(), "b")
	l.Release()
	if o.count("b") != 2 {
		t.Errorf("b opened %d times, want a reopen after eviction", o.count("b"))
	}
}

func TestInvalidateReopensAndNeverClosesUnderACall(t *testing.T) {
	t.Parallel()
	o := newOpener()
	r := registry.New(o.open, registry.Options{MaxOpen: 1}, quiet())
	defer r.Close()

	held, err := r.Acquire(t.Context(), "env")
	if err != nil {
		t.Fatal(err)
	}
	first := o.latest["env"]
	first.inUse.Add(1) // a call is running on held

	r.Invalidate("env")
	// Eviction pressure too: another environment pushes the held one out.
	other, _ := r.Acquire(t.Context(), "other")
	other.Release()

	if first.closed.Load() {
		t.Fatal("driver closed while a call held it")
	}
	next, err := r.Acquire(t.Context(), "env")
	if err != nil {
		t.Fatal(err)
	}
	if next.Driver == held.Driver {
		t.Error("Acquire after Invalidate returned the invalidated driver")
	}
	next.Release()

	first.inUse.Add(-1)
	held.Release()
	if !first.closed.Load() {
		t.Error("invalidated driver not closed after its last release")
	}
}

func TestInvalidateDuringOpenDiscardsTheStaleDriver(t *testing.T) {
	t.Parallel()
	o := newOpener()
	o.delay = 50 * time.Millisecond
	r := registry.New(o.open, registry.Options{MaxOpen: 10}, quiet())
	defer r.Close()
	done := make(chan *registry.Lease)
	go func() {
		l, err := r.Acquire(context.Background(), "env")
		if err != nil {
			t.Error(err)
		}
		done <- l
	}()
	time.Sleep(10 * time.Millisecond) // the open is in flight
	r.Invalidate("env")
	l := <-done
	defer l.Release()
	if o.count("env") != 2 {
		t.Errorf("opened %d times; an open that raced an invalidation must be redone", o.count("env"))
	}
	if l.Driver.(*counted).closed.Load() {
		t.Error("Acquire returned a closed driver")
	}
}

func TestIdleTTLClosesUnusedDrivers(t *testing.T) {
	t.Parallel()
	o := newOpener()
	r := registry.New(o.open, registry.Options{MaxOpen: 10, IdleTTL: 30 * time.Millisecond}, quiet())
	defer r.Close()
	l, _ := r.Acquire(t.Context(), "idle")
	l.Release()
	deadline := time.Now().Add(2 * time.Second)
	for !o.latest["idle"].closed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("idle driver never closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.Len() != 0 {
		t.Errorf("Len = %d after idle eviction", r.Len())
	}
}

func TestOpenErrorsAreNotCached(t *testing.T) {
	t.Parallel()
	o := newOpener()
	o.fail = errors.New("database down")
	r := registry.New(o.open, registry.Options{}, quiet())
	defer r.Close()
	if _, err := r.Acquire(t.Context(), "env"); err == nil {
		t.Fatal("want the open error")
	}
	o.fail = nil
	l, err := r.Acquire(t.Context(), "env")
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	l.Release()
}

func TestCloseClosesEverythingAndRefusesMore(t *testing.T) {
	t.Parallel()
	o := newOpener()
	r := registry.New(o.open, registry.Options{IdleTTL: time.Minute}, quiet())
	for i := range 5 {
		l, _ := r.Acquire(t.Context(), fmt.Sprint(i))
		l.Release()
	}
	held, _ := r.Acquire(t.Context(), "held")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if !o.latest[fmt.Sprint(i)].closed.Load() {
			t.Errorf("driver %d not closed", i)
		}
	}
	if o.latest["held"].closed.Load() {
		t.Error("held driver closed under its call")
	}
	held.Release()
	if !o.latest["held"].closed.Load() {
		t.Error("held driver not closed on release after Close")
	}
	if _, err := r.Acquire(t.Context(), "x"); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
}

func TestConcurrentAcquireReleaseInvalidate(t *testing.T) {
	t.Parallel()
	o := newOpener()
	r := registry.New(o.open, registry.Options{MaxOpen: 3, IdleTTL: 5 * time.Millisecond}, quiet())
	defer r.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				id := fmt.Sprint((w + i) % 5)
				if i%17 == 0 {
					r.Invalidate(id)
					continue
				}
				l, err := r.Acquire(t.Context(), id)
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.Driver.Ping(t.Context()); err != nil {
					t.Errorf("a closed driver was handed out: %v", err)
				}
				l.Release()
			}
		}()
	}
	wg.Wait()
}

func BenchmarkAcquireHit(b *testing.B) {
	o := newOpener()
	r := registry.New(o.open, registry.Options{}, quiet())
	defer r.Close()
	l, _ := r.Acquire(context.Background(), "env")
	l.Release()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, _ := r.Acquire(ctx, "env")
		l.Release()
	}
}
