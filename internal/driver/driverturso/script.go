package driverturso

import (
	"context"
	"database/sql"
	"math"
	"strings"
)

// script is a list of statements, each with its positional arguments, sent
// as one transaction in one call.
//
// libsql-client-go splits the text at the semicolons (with an SQLite
// lexer, so quoted identifiers are safe) and hands each statement the next
// run of arguments, one per ?; more than one statement goes to the server as
// one Hrana batch whose step k runs only if step k-1 succeeded, plus a
// ROLLBACK step that runs only if the last step did not. Framed by BEGIN
// IMMEDIATE and COMMIT, the batch is atomic on every server that runs a
// batch on one connection from start to end, as sqld (Turso's hosted
// service) and tursodb do: a failed statement skips the rest, COMMIT
// included, and the ROLLBACK step ends the transaction before the server
// answers, so no transaction is left open whatever fails. IMMEDIATE takes
// the write lock before the first statement, so the guards' reads and the
// writes after them see one state.
//
// The client reports only the failed step's message, not its position; see
// Batch for how the failed write is found.
type script struct {
	stmts []string
	args  [][]any
}

// add appends a statement and its arguments.
func (s *script) add(stmt string, args ...any) {
	s.stmts = append(s.stmts, stmt)
	s.args = append(s.args, args)
}

func (s *script) len() int { return len(s.stmts) }

// text renders statements [0, n) between open and close.
func (s *script) text(n int, open, close string) (string, []any) {
	var b strings.Builder
	var args []any
	b.WriteString(open)
	for i := range n {
		b.WriteString(";\n")
		b.WriteString(s.stmts[i])
		args = append(args, s.args[i]...)
	}
	b.WriteString(";\n")
	b.WriteString(close)
	return b.String(), args
}

// Framings of a script. A probe runs a prefix of a script and rolls it
// back: it changes nothing whether it succeeds or fails.
const (
	beginWrite = "BEGIN IMMEDIATE"
	commit     = "COMMIT"
	rollback   = "ROLLBACK"
)

// exec runs the first n statements as one transaction ending in end
// (commit, or rollback for a probe).
func (s *script) exec(ctx context.Context, db *sql.DB, n int, end string) error {
	text, args := s.text(n, beginWrite, end)
	_, err := db.ExecContext(ctx, text, args...)
	return err
}

// query runs the whole script as one committed transaction and returns its
// result sets: set 0 is BEGIN's, set i+1 statement i's, then COMMIT's.
func (s *script) query(ctx context.Context, db *sql.DB) (*sql.Rows, error) {
	text, args := s.text(s.len(), beginWrite, commit)
	return db.QueryContext(ctx, text, args...)
}

// overflow is the one integer abs() refuses ("integer overflow"), which
// SQLite documents and tursodb follows. A guard statement evaluates
// abs(CASE WHEN <condition> THEN overflow ELSE 0 END), failing the
// statement, and with it the transaction, exactly when the condition
// holds; SQL has no other way to raise an error outside a trigger. It is
// bound, not written out: the literal -9223372036854775808 reads as a real.
const overflow = int64(math.MinInt64)

// guardFailure reports whether a statement's error is a guard's.
func guardFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "integer overflow")
}
