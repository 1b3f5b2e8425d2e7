package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/schema"
)

// sizeInterval is how old a measure of an environment's size may be before
// a write measures again: one size query per second at most, however many
// writes arrive.
const sizeInterval = time.Second

// limited is a driver with a storage limit (an environment's
// storage_limit_mb): a write that finds the database at or over the limit
// fails with driver.ErrStorageLimit and changes nothing. The size is the
// engine's own measure (Driver.Size), taken at most once per sizeInterval,
// plus the estimated size of each record written since (driver.RecordSize),
// so the limit holds between two measures without a query per write.
// Deletes, reads and migrations always pass: they are how room is made.
type limited struct {
	driver.Driver
	limit int64

	mu        sync.Mutex
	measured  time.Time
	measuring bool  // one write measures; the others use the last measure
	size      int64 // bytes: the last measure plus the writes since
}

func limit(d driver.Driver, megabytes int64) driver.Driver {
	if megabytes <= 0 {
		return d
	}
	return &limited{Driver: d, limit: megabytes << 20}
}

// room fails with ErrStorageLimit when the database is at its limit, and
// otherwise counts adding bytes to its size. The write that finds the
// measure stale measures, outside the lock; the writes meanwhile count on
// the last measure.
func (l *limited) room(ctx context.Context, adding int64) error {
	l.mu.Lock()
	if !l.measuring && time.Since(l.measured) >= sizeInterval {
		l.measuring = true
		first := l.measured.IsZero()
		l.mu.Unlock()
		n, err := l.Driver.Size(ctx)
		l.mu.Lock()
		l.measuring = false
		if err != nil && first {
			l.mu.Unlock()
			return err
		}
		if err == nil {
			l.size, l.measured = n, time.Now()
		}
	}
	defer l.mu.Unlock()
	if l.size+adding > l.limit {
		return fmt.Errorf("%w: %d of %d bytes used", driver.ErrStorageLimit, l.size, l.limit)
	}
	l.size += adding
	return nil
}

func (l *limited) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := l.room(ctx, driver.RecordSize(rec)); err != nil {
		return err
	}
	return l.Driver.Insert(ctx, obj, rec)
}

func (l *limited) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := l.room(ctx, driver.RecordSize(set)); err != nil {
		return nil, err
	}
	return l.Driver.Update(ctx, obj, id, set, ifETag)
}

func (l *limited) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	var adding int64
	for _, op := range ops {
		if op.Kind != driver.OpDelete {
			adding += driver.RecordSize(op.Record)
		}
	}
	if adding > 0 {
		if err := l.room(ctx, adding); err != nil {
			return nil, err
		}
	}
	return l.Driver.Batch(ctx, ops)
}
