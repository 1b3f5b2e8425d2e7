// Package driverturso is the driver.Driver on a libSQL database per
// environment: a database of Turso's hosted service, or any server that
// answers Hrana over HTTP (sqld, tursodb --sync-server), reached through
// libsql-client-go's database/sql driver.
//
// Hrana over HTTP has no session a client can count on: tursodb hands out
// no stream baton, so a BEGIN sent on its own would stay open on the
// server's shared connection and swallow every later request. The driver
// therefore never sends a lone BEGIN and never uses database/sql
// transactions. Every write that must be atomic (Migrate, Batch) is one
// script "BEGIN IMMEDIATE; s1; s2; …; COMMIT" sent with a single call:
// libsql-client-go splits it client-side and sends one Hrana batch in which
// each step runs only if the step before it succeeded, followed by a
// ROLLBACK step that runs when COMMIT did not. The server runs the batch
// from start to end within one request on one connection, so either every
// statement commits or the transaction is rolled back before the answer
// leaves the server; nothing stays open after a failure. See script.
//
// The server reports neither rows affected nor last insert ids here, so
// writes learn what they touched through RETURNING, and Ping runs SELECT 1
// (database/sql's Ping never reaches the server). Every call runs under a
// deadline (WithTimeout), and a server that cannot be reached, answers with
// a 5xx or takes longer than the deadline is driver.ErrUnavailable.
package driverturso

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tursodatabase/libsql-client-go/libsql"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/driver/driversql"
	"github.com/envplane/envplane/internal/driver/sqlitedialect"
	"github.com/envplane/envplane/internal/schema"
)

// Driver is one environment's libSQL database.
type Driver struct {
	db      *sql.DB
	timeout time.Duration
	closed  atomic.Bool
}

var _ driver.Driver = (*Driver)(nil)

// DefaultTimeout bounds every call of a Driver unless WithTimeout sets
// another bound.
const DefaultTimeout = 10 * time.Second

// Pool limits. A connection of libsql-client-go is a Hrana stream: cheap
// on the client (HTTP requests share http.DefaultClient's keep-alive
// connections) but held open by a hosted server until it expires, so idle
// ones are let go before the server's stream expiry would make the next
// request fail and be retried.
const (
	maxOpenConns    = 16
	maxIdleConns    = 4
	idleConnTimeout = 5 * time.Second
)

// Option configures Open.
type Option func(*options)

type options struct {
	timeout time.Duration
}

// WithTimeout sets the deadline of every call (Open's check included); d
// must be positive. A call whose context has an earlier deadline keeps it.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// Open opens the database at dbURL, a libsql://, https:// or http:// URL,
// and checks it answers. token is the database's auth token ("" for a
// server that needs none); it may instead be the URL's authToken query
// parameter, but not both. Errors never quote the URL or the token.
func Open(ctx context.Context, dbURL, token string, opts ...Option) (*Driver, error) {
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		return nil, errors.New("driverturso: open: the timeout must be positive")
	}
	base, urlToken, err := parseURL(dbURL)
	if err != nil {
		return nil, fmt.Errorf("driverturso: open: %w", err)
	}
	switch {
	case token != "" && urlToken != "":
		return nil, errors.New("driverturso: open: the auth token is both in the URL and given")
	case token == "":
		token = urlToken
	}
	var copts []libsql.Option
	if token != "" {
		copts = append(copts, libsql.WithAuthToken(token))
	}
	connector, err := libsql.NewConnector(base, copts...)
	if err != nil {
		// The client's messages may quote the URL.
		return nil, errors.New("driverturso: open: libsql-client-go refuses the database URL")
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxIdleConns)
	db.SetConnMaxIdleTime(idleConnTimeout)
	d := &Driver{db: db, timeout: o.timeout}
	if err := d.ping(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("driverturso: open: %w", err)
	}
	return d, nil
}

// parseURL checks dbURL's scheme and takes the auth token out of its query,
// where libsql-client-go's connector refuses it; any other query parameter
// is an error, as it is for the client.
func parseURL(dbURL string) (base, token string, err error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", "", errors.New("the database URL does not parse")
	}
	switch u.Scheme {
	case "libsql", "https", "http":
	default:
		return "", "", fmt.Errorf("the database URL must be libsql://, https:// or http://, not %q", u.Scheme)
	}
	if u.Host == "" {
		return "", "", errors.New("the database URL has no host")
	}
	if u.User != nil {
		return "", "", errors.New("the database URL must not carry user information; pass the auth token")
	}
	q := u.Query()
	for name := range q {
		if name != "authToken" {
			return "", "", fmt.Errorf("the database URL has the unknown query parameter %q", name)
		}
	}
	token = q.Get("authToken")
	u.RawQuery = ""
	return u.String(), token, nil
}

// Size is the bytes of the pages the database uses.
func (d *Driver) Size(ctx context.Context) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	ctx, cancel := d.call(ctx)
	defer cancel()
	var n int64
	if err := d.db.QueryRowContext(ctx, sqlitedialect.SizeQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("driverturso: size: %w", mapError(ctx, nil, err))
	}
	return n, nil
}

// Ping checks the database answers a query.
func (d *Driver) Ping(ctx context.Context) error {
	if err := d.check(); err != nil {
		return err
	}
	if err := d.ping(ctx); err != nil {
		return fmt.Errorf("driverturso: ping: %w", err)
	}
	return nil
}

// ping runs SELECT 1 itself: database/sql's Ping asks a connection only
// through driver.Pinger, whose signature the Ping methods of
// libsql-client-go's HTTP connection do not have, so it never reaches the
// server and always succeeds.
func (d *Driver) ping(ctx context.Context) error {
	ctx, cancel := d.call(ctx)
	defer cancel()
	var one int64
	if err := d.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return mapError(ctx, nil, err)
	}
	if one != 1 {
		return fmt.Errorf("SELECT 1 answered %d", one)
	}
	return nil
}

// Close closes the pool; calls after Close fail with ErrUnavailable, so a
// request that raced a registry eviction is retried on a fresh driver.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	return d.db.Close()
}

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("driverturso: %w: driver closed", driver.ErrUnavailable)

func (d *Driver) check() error {
	if d.closed.Load() {
		return errClosed
	}
	return nil
}

// call bounds one call of the driver, every round trip it makes included.
func (d *Driver) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d.timeout, errCallTimeout)
}

// errCallTimeout is the cause of a call that ran out of the driver's own
// time, as opposed to the caller's.
var errCallTimeout = fmt.Errorf("%w: no answer within the driver's timeout", driver.ErrUnavailable)

// httpStatus matches libsql-client-go's error for a response that is not
// 200 OK: "error code 503: …".
var httpStatus = regexp.MustCompile(`^error code (\d{3})\b`)

// mapError turns libsql errors into the driver's: a taken id is
// ErrAlreadyExists, a unique index violation a *UniqueViolationError (obj
// may be nil where none can happen), an unreachable or overloaded server or
// a timeout ErrUnavailable. ctx is the call's context: running out of the
// driver's own time is ErrUnavailable only (the caller's deadline did not
// pass), the caller's deadline ErrUnavailable and context.DeadlineExceeded,
// and a canceled context stays as it is (the error wraps context.Canceled).
func mapError(ctx context.Context, obj *schema.Object, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if transportError(err) {
		if errors.Is(err, driver.ErrUnavailable) {
			return err // the HTTP client reports the driver's timeout as its cause
		}
		if cause := context.Cause(ctx); errors.Is(cause, errCallTimeout) {
			return fmt.Errorf("%w: %w", cause, err)
		}
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	if fields := uniqueColumns(err.Error()); fields != nil {
		if len(fields) == 1 && fields[0] == schema.FieldID {
			return fmt.Errorf("%w: %w", driver.ErrAlreadyExists, err)
		}
		if obj != nil {
			return uniqueViolation(obj, fields)
		}
	}
	if strings.Contains(err.Error(), "database or disk is full") {
		return fmt.Errorf("%w: %w", driver.ErrStorageFull, err)
	}
	return sqlitedialect.MapSchemaError(obj, err)
}

// transportError reports whether err means the request did not get a
// statement's answer from the server: a network failure, a deadline, a
// stream the server dropped (database/sql gave up retrying), or an HTTP
// status that says the server cannot serve now. Everything else is the
// server's verdict on a statement.
func transportError(err error) bool {
	var ne net.Error // *url.Error, the HTTP client's errors, is one
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne), errors.Is(err, sqldriver.ErrBadConn):
		return true
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "failed to execute SQL:\n")
	if m := httpStatus.FindStringSubmatch(msg); m != nil {
		code, _ := strconv.Atoi(m[1])
		return code >= 500 || code == 408 || code == 429
	}
	return false
}

// uniqueViolation maps the columns of a unique violation to the object's
// index over them, so the fields come in the index's order.
func uniqueViolation(obj *schema.Object, cols []string) error {
	for _, idx := range obj.AllIndexes() {
		if sameSet(idx.Fields, cols) {
			return driversql.UniqueViolation(obj, idx.Fields)
		}
	}
	return driversql.UniqueViolation(obj, cols)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[string]bool, len(a))
	for _, s := range a {
		seen[s] = true
	}
	for _, s := range b {
		if !seen[s] {
			return false
		}
	}
	return true
}

// uniqueColumns extracts the columns from the server's "UNIQUE constraint
// failed: …" message; the server names the columns, not the index. SQLite
// (and so sqld) lists them as "t.a, t.b", tursodb as "t.(a, b)" and appends
// the error code, " (19)". It returns nil when the message has another
// form.
func uniqueColumns(msg string) []string {
	const marker = "UNIQUE constraint failed: "
	i := strings.Index(msg, marker)
	if i < 0 {
		return nil
	}
	list := msg[i+len(marker):]
	if j := strings.IndexByte(list, '\n'); j >= 0 {
		list = list[:j]
	}
	list = errorCode.ReplaceAllString(strings.TrimSpace(list), "")
	if open := strings.Index(list, ".("); open >= 0 && strings.HasSuffix(list, ")") {
		return strings.Split(list[open+2:len(list)-1], ", ")
	}
	var cols []string
	for _, c := range strings.Split(list, ", ") {
		dot := strings.LastIndexByte(c, '.')
		if dot < 0 {
			return nil
		}
		cols = append(cols, c[dot+1:])
	}
	return cols
}

// errorCode matches the code a message may end with: " (19)", " (2067)".
var errorCode = regexp.MustCompile(`\s*\(\d+\)$`)
