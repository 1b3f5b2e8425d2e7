// Package registry keeps one open Driver per environment: a bounded LRU with
// an idle TTL, one open per environment however many calls arrive at once
// (singleflight), and drivers closed only after their last in-flight call
// has released them. It knows drivers and environments, never HTTP.
package registry

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/envplane/envplane/internal/driver"
)

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("registry: closed")

// OpenFunc opens the driver of an environment. The registry calls it at most
// once at a time per environment.
type OpenFunc func(ctx context.Context, environmentID string) (driver.Driver, error)

// Options bound the registry.
type Options struct {
	// MaxOpen is how many environments may hold an open driver at once.
	MaxOpen int
	// IdleTTL closes drivers unused for this long (0: never).
	IdleTTL time.Duration
}

// Registry maps environment ids to open drivers.
type Registry struct {
	open    OpenFunc
	opts    Options
	log     *slog.Logger
	group   singleflight.Group
	mu      sync.Mutex
	entries map[string]*Lease
	lru     *list.List // front: most recently used; values are *Lease
	gen     map[string]uint64
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

// Lease is an acquired driver. Release it when the call is done; the driver
// stays open at least until then.
type Lease struct {
	Driver driver.Driver
	id     string
	reg    *Registry
	elem   *list.Element
	refs   int
	used   time.Time
	// gone is set once the lease left the map (evicted or invalidated): the
	// last Release closes the driver.
	gone bool
}

// New returns a registry opening drivers with open.
func New(open OpenFunc, opts Options, log *slog.Logger) *Registry {
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = 1000
	}
	r := &Registry{
		open:    open,
		opts:    opts,
		log:     log.With("component", "registry"),
		entries: make(map[string]*Lease),
		lru:     list.New(),
		gen:     make(map[string]uint64),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if opts.IdleTTL > 0 {
		go r.janitor()
	} else {
		close(r.done)
	}
	return r
}

// Acquire returns the environment's driver, opening it if needed. On a cache
// hit it takes a lock, a map lookup and a list move: no allocation.
func (r *Registry) Acquire(ctx context.Context, environmentID string) (*Lease, error) {
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		if l, ok := r.entries[environmentID]; ok {
			l.refs++
			l.used = time.Now()
			r.lru.MoveToFront(l.elem)
			r.mu.Unlock()
			return l, nil
		}
		r.mu.Unlock()

		// The first caller opens and inserts; every caller of the same flight
		// gets the inserted lease and takes its reference below.
		flight := r.group.DoChan(environmentID, func() (any, error) {
			r.mu.Lock()
			// A flight that ended between this caller's miss and its Do
			// inserted the driver already: opening another would replace
			// that entry and leave two drivers open for one environment.
			if l, ok := r.entries[environmentID]; ok {
				r.mu.Unlock()
				return l, nil
			}
			gen := r.gen[environmentID]
			r.mu.Unlock()
			d, err := r.open(context.WithoutCancel(ctx), environmentID)
			if err != nil {
				return nil, err
			}
			return r.insert(environmentID, d, gen), nil
		})
		// A caller that gives up stops waiting; the open goes on for the
		// others (and the next call), uncanceled.
		var v any
		select {
		case res := <-flight:
			if res.Err != nil {
				return nil, res.Err
			}
			v = res.Val
		case <-ctx.Done():
			return nil, fmt.Errorf("registry: gave up waiting for the database to open: %w", ctx.Err())
		}
		if l, _ := v.(*Lease); l != nil {
			r.mu.Lock()
			if !l.gone {
				l.refs++
				l.used = time.Now()
				r.mu.Unlock()
				return l, nil
			}
			r.mu.Unlock()
		}
		// Evicted or invalidated between the open and now: open again.
		if attempt >= 10 {
			return nil, errors.New("registry: environment kept changing while its database was opened")
		}
	}
}

// insert stores a freshly opened driver with no reference yet, unless the
// environment was invalidated while it was being opened: then the driver may
// hold a stale credential, so it is closed and nil returned.
func (r *Registry) insert(id string, d driver.Driver, gen uint64) *Lease {
	r.mu.Lock()
	if r.closed || r.gen[id] != gen {
		r.mu.Unlock()
		r.closeDriver(id, d)
		return nil
	}
	l := &Lease{Driver: d, id: id, reg: r, used: time.Now()}
	l.elem = r.lru.PushFront(l)
	r.entries[id] = l
	var evicted []*Lease
	for r.lru.Len() > r.opts.MaxOpen {
		victim := r.lru.Back().Value.(*Lease)
		if victim == l {
			break
		}
		if v := r.removeLocked(victim); v != nil {
			evicted = append(evicted, v)
		}
	}
	r.mu.Unlock()
	for _, v := range evicted {
		r.closeDriver(v.id, v.Driver)
	}
	return l
}

// Release ends the caller's use of the driver.
func (l *Lease) Release() {
	r := l.reg
	r.mu.Lock()
	l.refs--
	closeNow := l.gone && l.refs == 0
	r.mu.Unlock()
	if closeNow {
		r.closeDriver(l.id, l.Driver)
	}
}

// removeLocked takes l out of the map and LRU; it returns l when it can be
// closed now (no call holds it), nil when the last Release will close it.
func (r *Registry) removeLocked(l *Lease) *Lease {
	delete(r.entries, l.id)
	r.lru.Remove(l.elem)
	l.gone = true
	if l.refs == 0 {
		return l
	}
	return nil
}

// Invalidate drops the environment's driver: the next Acquire opens a new
// one (with the current row and credential), and the old one closes once its
// in-flight calls release it. An open in progress is not used.
func (r *Registry) Invalidate(environmentID string) {
	r.mu.Lock()
	r.gen[environmentID]++
	var victim *Lease
	if l, ok := r.entries[environmentID]; ok {
		victim = r.removeLocked(l)
	}
	r.mu.Unlock()
	if victim != nil {
		r.closeDriver(victim.id, victim.Driver)
	}
}

// InvalidateAll drops every driver (after missed invalidations).
func (r *Registry) InvalidateAll() {
	r.mu.Lock()
	var victims []*Lease
	for id, l := range r.entries {
		r.gen[id]++
		if v := r.removeLocked(l); v != nil {
			victims = append(victims, v)
		}
	}
	r.mu.Unlock()
	for _, v := range victims {
		r.closeDriver(v.id, v.Driver)
	}
}

// Len is the number of open drivers in the cache.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// Close closes every driver no call holds and refuses new acquisitions;
// drivers still held close on their last Release.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var victims []*Lease
	for _, l := range r.entries {
		if v := r.removeLocked(l); v != nil {
			victims = append(victims, v)
		}
	}
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	for _, v := range victims {
		r.closeDriver(v.id, v.Driver)
	}
	return nil
}

func (r *Registry) janitor() {
	defer close(r.done)
	tick := time.NewTicker(max(r.opts.IdleTTL/2, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-tick.C:
			r.evictIdle(now)
		}
	}
}

func (r *Registry) evictIdle(now time.Time) {
	r.mu.Lock()
	var victims []*Lease
	for e := r.lru.Back(); e != nil; {
		l := e.Value.(*Lease)
		prev := e.Prev()
		if l.refs == 0 && now.Sub(l.used) >= r.opts.IdleTTL {
			if v := r.removeLocked(l); v != nil {
				victims = append(victims, v)
			}
		}
		e = prev
	}
	r.mu.Unlock()
	for _, v := range victims {
		r.closeDriver(v.id, v.Driver)
	}
}

func (r *Registry) closeDriver(id string, d driver.Driver) {
	if err := d.Close(); err != nil {
		r.log.Warn("closing an environment's database failed", "environment_id", id, "error", err)
	}
}
