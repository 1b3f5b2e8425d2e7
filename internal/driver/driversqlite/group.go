package driversqlite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/envplane/envplane/internal/driver"
)

// maxGroup bounds the writes one transaction commits together.
const maxGroup = 64

// group commits the single writes (Insert, Update, Delete) that arrive
// while the writer is busy in one transaction (group commit): a commit
// appends the changed pages to the WAL, a quarter of an insert's cost alone,
// and sixteen clients creating records queue behind each other anyway. Each
// write runs between a SAVEPOINT and its RELEASE, so one that fails (a
// taken id, a stale etag) is rolled back alone and answered alone, as if it
// had run by itself; the others commit. A write's caller waits until its
// transaction has committed: an answer is never given for a write that is
// not yet durable, nor an error for one that will be.
//
// Writes run in arrival order, one transaction at a time: a write that
// finds the writer idle yields once (so that writes already on their way
// join it), then runs on its caller's goroutine with what waits (alone, in
// its own implicit transaction, when nothing does); writes that arrive
// meanwhile are run by a goroutine that exists while writes are waiting.
type group struct {
	writer *pool

	mu      sync.Mutex
	pending []*write
	running bool

	commits int // transactions committed with more than one write (for tests)
}

// write is one single write waiting for its turn.
type write struct {
	ctx  context.Context
	run  func(ctx context.Context, q querier) (driver.Record, error)
	rec  driver.Record
	err  error
	done chan struct{}
}

// do runs fn on the writer, grouped with whatever writes wait beside it,
// and returns once its outcome is final.
func (g *group) do(ctx context.Context, fn func(ctx context.Context, q querier) (driver.Record, error)) (driver.Record, error) {
	w := &write{ctx: ctx, run: fn, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, w)
	if g.running {
		g.mu.Unlock()
		// Not abandoned on ctx's end: the write may be committing, and its
		// caller must learn whether it was.
		<-w.done
		return w.rec, w.err
	}
	// The writer is idle: this caller runs the writes waiting (its own
	// first, since nothing waited before it), then hands what arrived
	// meanwhile to a goroutine rather than serve other callers' writes
	// before answering its own.
	g.running = true
	g.mu.Unlock()
	// Writes come in bursts (sixteen clients creating records): yielding
	// once lets the callers already running enqueue theirs, to be committed
	// with this one rather than each alone after it (A/B, 16 clients: +19%
	// creates/s). With nothing else to run, Gosched returns at once.
	runtime.Gosched()
	if g.next() {
		go g.drain()
	}
	return w.rec, w.err
}

// drain runs the waiting writes until none is left.
func (g *group) drain() {
	for g.next() {
	}
}

// next runs up to maxGroup waiting writes and reports whether more wait;
// when none does, the writer is idle again.
func (g *group) next() bool {
	g.mu.Lock()
	n := min(len(g.pending), maxGroup)
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()
	if len(batch) == 1 {
		w := batch[0]
		w.rec, w.err = w.safely(w.ctx, g.writer)
		close(w.done)
	} else if len(batch) > 1 {
		g.commit(batch)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		g.running = false
		return false
	}
	return true
}

// safely runs the write, turning a panic into its error: the writes of
// other callers wait behind it, and the goroutine running them has no
// interceptor to recover it (a panic there would end the process).
func (w *write) safely(ctx context.Context, q querier) (rec driver.Record, err error) {
	defer func() {
		if r := recover(); r != nil {
			rec, err = nil, fmt.Errorf("driversqlite: write panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return w.run(ctx, q)
}

// commit runs batch in one transaction and settles every write in it.
func (g *group) commit(batch []*write) {
	// The transaction is everyone's: no one caller's context may end it.
	ctx := context.Background()
	settle := func(err error) {
		for _, w := range batch {
			if err != nil {
				w.rec, w.err = nil, err
			}
			close(w.done)
		}
	}
	tx, err := g.writer.db.BeginTx(ctx, nil)
	if err != nil {
		settle(mapError(nil, err))
		return
	}
	q := txQuerier{tx: tx, pool: g.writer, missed: new([]string)}
	exec := func(stmts ...string) error {
		for _, stmt := range stmts {
			if _, err := q.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	}
	for _, w := range batch {
		// A caller gone before its turn is not written. One that leaves
		// during its statement is: SQLite answers an interrupted write
		// inside a transaction by rolling the whole transaction back,
		// everyone's writes with it.
		if err := w.ctx.Err(); err != nil {
			w.err = err
			continue
		}
		if err := exec(`SAVEPOINT w`); err != nil {
			_ = tx.Rollback()
			settle(mapError(nil, err))
			return
		}
		w.rec, w.err = w.safely(context.WithoutCancel(w.ctx), q)
		end := []string{`RELEASE w`}
		if w.err != nil {
			end = []string{`ROLLBACK TO w`, `RELEASE w`}
		}
		if err := exec(end...); err != nil {
			_ = tx.Rollback()
			settle(mapError(nil, err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		settle(mapError(nil, fmt.Errorf("group commit: %w", err)))
		return
	}
	q.prepareMissed()
	g.mu.Lock()
	g.commits++
	g.mu.Unlock()
	settle(nil)
}

// txQuerier runs statements in a transaction with the pool's prepared
// statements. One the pool has not prepared yet runs unprepared (preparing
// it would wait for the writer's only connection, which the transaction
// holds) and is prepared after the commit.
type txQuerier struct {
	tx     *sql.Tx
	pool   *pool
	missed *[]string
}

var _ querier = txQuerier{}

func (q txQuerier) stmt(ctx context.Context, query string) *sql.Stmt {
	if s := q.pool.cached(query); s != nil {
		return q.tx.StmtContext(ctx, s)
	}
	if q.missed != nil {
		*q.missed = append(*q.missed, query)
	}
	return nil
}

func (q txQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := q.stmt(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return q.tx.ExecContext(ctx, query, args...)
}

func (q txQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := q.stmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q txQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := q.stmt(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}

// prepareMissed prepares, now that the transaction is over, what ran
// unprepared in it.
func (q txQuerier) prepareMissed() {
	if q.missed == nil {
		return
	}
	for _, query := range *q.missed {
		q.pool.stmt(context.Background(), query)
	}
}
