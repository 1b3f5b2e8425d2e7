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
// writes arrive; nearInterval once the size is within a tenth of the
// limit, where estimates would let the most through.
const (
	sizeInterval = time.Second
	nearInterval = 50 * time.Millisecond
)

// maxLimitMB bounds the limits counted: larger ones overflow as bytes and
// are no limit (the API refuses more than 1 PiB, 1<<30 MB, anyway).
const maxLimitMB = 1 << 40

// limited is a driver with a storage limit (an environment's
// storage_limit_mb): a write that finds the database at or over the limit
// fails with driver.ErrStorageLimit and changes nothing. The size is the
// engine's own measure (Driver.Size), taken at most once per sizeInterval,
// plus the estimated size of each record written since (writeSize: the
// record and its index entries), so the limit holds between two measures
// without a query per write. Deletes and reads always pass: they are how
// room is made; a migration passes until the limit is reached (it cannot
// be sized beforehand: an index over a big table).
type limited struct {
	driver.Driver
	limit int64

	mu        sync.Mutex
	measured  time.Time
	measuring bool  // one write measures; the others use the last measure
	size      int64 // bytes: the last measure plus the writes since
}

func limit(d driver.Driver, megabytes int64) driver.Driver {
	if megabytes <= 0 || megabytes > maxLimitMB {
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
	interval := sizeInterval
	if l.size >= l.limit-l.limit/10 {
		interval = nearInterval
	}
	if !l.measuring && time.Since(l.measured) >= interval {
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

// writeSize estimates what writing rec to obj's table takes: the record,
// and each index's entry (its fields' values and the row's id).
func writeSize(obj *schema.Object, rec driver.Record) int64 {
	n := driver.RecordSize(rec)
	for _, idx := range obj.AllIndexes() {
		entry := driver.Record{schema.FieldID: rec[schema.FieldID]}
		for _, f := range idx.Fields {
			entry[f] = rec[f]
		}
		n += driver.RecordSize(entry)
	}
	return n
}

// Migrate passes until the database reaches its limit; repairs and
// changes that only record in the ledger (what reconciling does) always
// pass, so a database at its limit still opens and mends.
func (l *limited) Migrate(ctx context.Context, c driver.Change) error {
	if c.Repair != driver.RepairNone || len(c.Steps) == 0 {
		return l.Driver.Migrate(ctx, c)
	}
	if err := l.room(ctx, 0); err != nil {
		return err
	}
	l.mu.Lock()
	if l.size >= l.limit {
		l.mu.Unlock()
		return fmt.Errorf("%w: %d of %d bytes used", driver.ErrStorageLimit, l.size, l.limit)
	}
	l.mu.Unlock()
	return l.Driver.Migrate(ctx, c)
}

func (l *limited) Insert(ctx context.Context, obj *schema.Object, rec driver.Record) error {
	if err := l.room(ctx, writeSize(obj, rec)); err != nil {
		return err
	}
	return l.Driver.Insert(ctx, obj, rec)
}

func (l *limited) Update(ctx context.Context, obj *schema.Object, id string, set driver.Record, ifETag string) (driver.Record, error) {
	if err := l.room(ctx, writeSize(obj, set)); err != nil {
		return nil, err
	}
	return l.Driver.Update(ctx, obj, id, set, ifETag)
}

func (l *limited) Batch(ctx context.Context, ops []driver.Op) ([]driver.Record, error) {
	var adding int64
	for _, op := range ops {
		if op.Kind != driver.OpDelete {
			adding += writeSize(op.Object, op.Record)
		}
	}
	if adding > 0 {
		if err := l.room(ctx, adding); err != nil {
			return nil, err
		}
	}
	return l.Driver.Batch(ctx, ops)
}
