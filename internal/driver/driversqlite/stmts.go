package driversqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStatements bounds the prepared statements one pool keeps. The
// texts of creates, gets and pages of a list repeat (values are parameters),
// so a few dozen cover an environment's traffic; texts beyond the bound
// (many distinct filters) run unprepared rather than evicting, so a statement
// is never closed while another request is about to use it.
const maxCachedStatements = 128

// pool is a database/sql pool whose statements are prepared once per
// connection and reused: SQLite spends about a tenth of an insert parsing
// and planning its SQL, which modernc's driver would redo on every call.
type pool struct {
	db *sql.DB

	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

var _ querier = (*pool)(nil)

func newPool(db *sql.DB) *pool {
	return &pool{db: db, stmts: make(map[string]*sql.Stmt)}
}

// stmt returns the cached statement of query, preparing it if there is room;
// nil means run query unprepared (the cache is full, or preparing failed —
// the unprepared call then reports the same error in its usual place).
func (p *pool) stmt(ctx context.Context, query string) *sql.Stmt {
	p.mu.Lock()
	s, ok := p.stmts[query]
	full := len(p.stmts) >= maxCachedStatements
	p.mu.Unlock()
	if ok {
		return s
	}
	if full {
		return nil
	}
	// Prepared outside the lock: on the one-connection writer pool,
	// preparing waits for a transaction to finish, and nobody else should.
	s, err := p.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if won, ok := p.stmts[query]; ok {
		_ = s.Close() // another request prepared it first; s was never used
		return won
	}
	if len(p.stmts) >= maxCachedStatements {
		_ = s.Close()
		return nil
	}
	p.stmts[query] = s
	return s
}

// cached returns the statement of query if the pool has prepared it.
func (p *pool) cached(query string) *sql.Stmt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stmts[query]
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := p.stmt(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return p.db.ExecContext(ctx, query, args...)
}

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := p.stmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return p.db.QueryContext(ctx, query, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := p.stmt(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return p.db.QueryRowContext(ctx, query, args...)
}

// close closes the cached statements, then the pool.
func (p *pool) close() error {
	p.mu.Lock()
	for q, s := range p.stmts {
		_ = s.Close()
		delete(p.stmts, q)
	}
	p.mu.Unlock()
	return p.db.Close()
}
