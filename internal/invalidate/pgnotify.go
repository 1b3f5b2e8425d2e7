package invalidate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultChannel is the PostgreSQL notification channel replicas share unless
// WithChannel names another, so every replica of one control plane hears the
// others without configuration.
const DefaultChannel = "envplane_invalidate"

// maxPayload is the largest NOTIFY payload PostgreSQL accepts in its default
// configuration ("shorter than 8000 bytes"); payloads are packed up to it.
const maxPayload = 7999

// maxChannelLen is PostgreSQL's identifier limit (NAMEDATALEN-1). LISTEN
// silently truncates a longer name while pg_notify rejects it, so a longer
// channel would never deliver anything; NewPG refuses it instead.
const maxChannelLen = 63

// Timings of the listening connection. Tests shorten the backoff and ping
// interval through the PG fields of the same names.
const (
	defaultMinBackoff   = 50 * time.Millisecond
	defaultMaxBackoff   = 5 * time.Second
	defaultPingInterval = 30 * time.Second // an idle listener checks its connection this often
	pingTimeout         = 5 * time.Second
	listenTimeout       = 10 * time.Second // bounds one connect + LISTEN attempt
	closeTimeout        = time.Second
)

// publishPoolConns bounds the connections Publish uses: each NOTIFY is one
// short statement, so a couple serve bursts of writes without crowding the
// control plane's connection limit.
const publishPoolConns = 2

var (
	errNotStarted = errors.New("invalidate: listener not started")
	errClosed     = errors.New("invalidate: listener closed")
)

// PGOption configures NewPG.
type PGOption func(*PG)

// WithChannel makes PG notify and listen on channel instead of DefaultChannel,
// so separate control planes (or parallel tests) sharing one PostgreSQL
// server do not invalidate each other's caches.
func WithChannel(channel string) PGOption {
	return func(p *PG) { p.channel = channel }
}

// PG carries invalidations between the replicas of one control plane through
// PostgreSQL LISTEN/NOTIFY, because caches are per process and a write on one
// replica must reach the caches of all the others. It is both the Publisher
// the writers use and the Subscriber the caches use: Publish invalidates this
// process's caches synchronously, then notifies the other replicas; a
// dedicated listening connection delivers their events here.
//
// A replica that loses its listening connection reconnects with backoff and
// then delivers Event{Kind: KindAll}, since it cannot know what it missed.
type PG struct {
	channel string
	// origin identifies this PG in every payload so it can skip its own
	// notifications when they come back; a process runs one PG, which makes
	// this the per-process id.
	origin string
	log    *slog.Logger
	local  *Bus
	pool   *pgxpool.Pool

	// Set by NewPG; tests replace them before Start.
	minBackoff   time.Duration
	maxBackoff   time.Duration
	pingInterval time.Duration
	connect      func(context.Context) (*pgx.Conn, error)

	mu      sync.Mutex
	started bool
	closed  bool
	ready   bool
	lastErr error
	pid     uint32 // backend pid of the listening connection, while ready
	stop    context.CancelFunc
	done    chan struct{}
}

var (
	_ Publisher  = (*PG)(nil)
	_ Subscriber = (*PG)(nil)
)

// NewPG returns a PG on the control-plane database at url. It opens no
// connection yet: Start begins listening, and Publish uses a small pool that
// connects on first use.
func NewPG(url string, log *slog.Logger, opts ...PGOption) (*PG, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &PG{
		channel:      DefaultChannel,
		origin:       rand.Text(),
		log:          log,
		local:        NewBus(),
		minBackoff:   defaultMinBackoff,
		maxBackoff:   defaultMaxBackoff,
		pingInterval: defaultPingInterval,
	}
	for _, opt := range opts {
		opt(p)
	}
	if p.channel == "" || len(p.channel) > maxChannelLen {
		return nil, fmt.Errorf("invalidate: channel name %q must be 1 to %d bytes", p.channel, maxChannelLen)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("invalidate: parse the PostgreSQL URL: %w", err)
	}
	cfg.MaxConns = publishPoolConns
	listenCfg := cfg.ConnConfig.Copy()
	p.connect = func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, listenCfg) }
	p.pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("invalidate: create the notify pool: %w", err)
	}
	return p, nil
}

// Start opens the listening connection and keeps it open, reconnecting as
// needed, until Close. It fails if the first connection fails, so a replica
// that cannot hear the others does not start serving; ctx bounds only that
// first attempt. Start it before caches fill, since events sent earlier are
// not heard.
func (p *PG) Start(ctx context.Context) error {
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return errClosed
	case p.started:
		p.mu.Unlock()
		return errors.New("invalidate: listener already started")
	}
	p.started = true
	p.mu.Unlock()

	conn, err := p.listen(ctx)
	if err != nil {
		p.mu.Lock()
		p.started = false // a later Start may try again
		p.lastErr = err
		p.mu.Unlock()
		return fmt.Errorf("invalidate: listen on channel %q: %w", p.channel, err)
	}

	loopCtx, stop := context.WithCancel(context.Background())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		stop()
		closeConn(conn)
		return errClosed
	}
	p.stop, p.done = stop, make(chan struct{})
	p.setReadyLocked(conn)
	p.mu.Unlock()
	p.log.Info("listening for cache invalidations", "channel", p.channel, "origin", p.origin, "pid", conn.PgConn().PID())
	go p.run(loopCtx, conn)
	return nil
}

// Close stops the listener, waits for its goroutine to end and closes the
// pool. Later Publish calls fail. Close may be called more than once.
func (p *PG) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.ready = false
	p.pid = 0
	stop, done := p.stop, p.done
	p.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	p.pool.Close()
	return nil
}

// Ready reports whether the listening connection is up, i.e. whether this
// replica currently hears the others' invalidations; readiness checks use it.
func (p *PG) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready
}

// LastError says why the listener is not ready (the connection error that
// took it down or keeps it from reconnecting, or that it is not started or
// closed), so a readiness check can report it. It is nil while Ready.
func (p *PG) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.ready:
		return nil
	case p.closed:
		return errClosed
	case p.lastErr != nil:
		return p.lastErr
	default:
		return errNotStarted
	}
}

// Subscribe registers fn for events published by this process and, while
// listening, by every other replica; the returned func removes it. fn must be
// quick and must not call Publish; it runs on the publishing goroutine for
// this process's events and on the listener's goroutine for the others', so
// it may run concurrently with itself.
func (p *PG) Subscribe(fn func(Event)) (cancel func()) {
	return p.local.Subscribe(fn)
}

// Publish delivers events to this process's subscribers synchronously, so
// its caches are invalidated before Publish returns even if PostgreSQL is
// slow or down, and then notifies the other replicas, packing as many events
// into each notification as fit. An error means the other replicas may not
// have heard; their caches then stay stale until their TTL.
func (p *PG) Publish(ctx context.Context, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	_ = p.local.Publish(ctx, events...)

	payloads, oversized := encodePayloads(p.origin, events)
	if oversized > 0 {
		p.log.Warn("invalidation too large for one notification; other replicas drop every cache instead",
			"channel", p.channel, "events", oversized)
	}
	// One batch: one round trip and one implicit transaction, so the
	// notifications arrive together and in order.
	batch := &pgx.Batch{}
	for _, payload := range payloads {
		batch.Queue("SELECT pg_notify($1, $2)", p.channel, payload)
	}
	if err := p.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("invalidate: notify other replicas of %d event(s): %w", len(events), err)
	}
	return nil
}

// run owns the listening connection until ctx ends: it delivers
// notifications and, when the connection fails, reconnects and delivers
// KindAll for whatever was missed meanwhile.
func (p *PG) run(ctx context.Context, conn *pgx.Conn) {
	defer close(p.done)
	for {
		err := p.receive(ctx, conn)
		closeConn(conn)
		if ctx.Err() != nil {
			return
		}
		p.setDown(err)
		p.log.Warn("cache invalidation listener lost its connection; reconnecting",
			"channel", p.channel, "error", err)
		down := time.Now()

		conn = p.reconnect(ctx)
		if conn == nil {
			return
		}
		// LISTEN is in place, so anything sent from now on is heard; what was
		// sent while disconnected is not, so drop everything. Only then report
		// ready: the caches are consistent again.
		_ = p.local.Publish(ctx, Event{Kind: KindAll})
		p.mu.Lock()
		p.setReadyLocked(conn)
		p.mu.Unlock()
		p.log.Info("cache invalidation listener reconnected; dropped every cache",
			"channel", p.channel, "down_for", time.Since(down), "pid", conn.PgConn().PID())
	}
}

// receive delivers notifications from conn until it fails or ctx ends. When
// idle it pings the server now and then, because a connection that died
// silently (a partitioned network, a vanished host) would otherwise leave the
// listener deaf while still reporting ready.
func (p *PG) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		waitCtx, cancel := context.WithTimeout(ctx, p.pingInterval)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		if n != nil {
			p.deliver(n.Payload)
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case pgconn.Timeout(err): // idle for pingInterval; the connection stays usable
			pingCtx, cancel := context.WithTimeout(ctx, pingTimeout)
			err = conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping the listening connection: %w", err)
			}
		default:
			return err
		}
	}
}

// reconnect tries to listen again until it succeeds or ctx ends (then it
// returns nil). It waits before every attempt, doubling the wait from
// minBackoff up to maxBackoff, with jitter so replicas that lost the server
// together do not all return at the same instant.
func (p *PG) reconnect(ctx context.Context) *pgx.Conn {
	backoff := p.minBackoff
	for {
		timer := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		conn, err := p.listen(ctx)
		if err == nil {
			return conn
		}
		if ctx.Err() != nil {
			return nil
		}
		p.setDown(err)
		p.log.Debug("cache invalidation listener could not reconnect", "channel", p.channel, "error", err, "retry_in", backoff)
		backoff = min(2*backoff, p.maxBackoff)
	}
}

// listen opens a connection and subscribes it to the channel.
func (p *PG) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, listenTimeout)
	defer cancel()
	conn, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{p.channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("LISTEN: %w", err)
	}
	return conn, nil
}

// deliver passes a received payload's events to the subscribers, unless
// this PG sent it (Publish delivered those already). A payload it cannot
// decode came from an incompatible sender; dropping every cache is the only
// safe reading of it.
func (p *PG) deliver(payload string) {
	origin, events, err := decodePayload(payload)
	if err != nil {
		p.log.Warn("undecodable cache invalidation; dropping every cache", "channel", p.channel, "error", err)
		events = []Event{{Kind: KindAll}}
	} else if origin == p.origin {
		return
	}
	_ = p.local.Publish(context.Background(), events...)
}

// setReadyLocked records that conn listens; once closed, PG stays not ready.
func (p *PG) setReadyLocked(conn *pgx.Conn) {
	if p.closed {
		return
	}
	p.ready = true
	p.lastErr = nil
	p.pid = conn.PgConn().PID()
}

func (p *PG) setDown(err error) {
	p.mu.Lock()
	p.ready = false
	p.lastErr = err
	p.pid = 0
	p.mu.Unlock()
}

// listenerPID returns the backend pid of the listening connection, 0 while
// down; tests use it to kill exactly that connection.
func (p *PG) listenerPID() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// closeConn closes conn without letting a dead server hold up the caller.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// jitter returns a random duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + mathrand.N(d/2)
}

// payload is the JSON carried by one notification:
//
//	{"origin":"<sender id>","events":[{"kind":"hostname","hostname":"a.example","environment_id":"e1"}]}
//
// Empty event fields are left out to keep notifications small.
type payload struct {
	Origin string      `json:"origin"`
	Events []wireEvent `json:"events"`
}

// wireEvent is Event as it travels between replicas.
type wireEvent struct {
	Kind           Kind   `json:"kind"`
	EnvironmentID  string `json:"environment_id,omitempty"`
	OrganizationID string `json:"organization_id,omitempty"`
	Hostname       string `json:"hostname,omitempty"`
	TokenID        string `json:"token_id,omitempty"`
	Object         string `json:"object,omitempty"`
}

// encodePayloads packs events, in order, into as few payloads of at most
// maxPayload bytes as it can. An event too large for any payload travels as
// KindAll instead, which is coarser but still correct; oversized counts them.
func encodePayloads(origin string, events []Event) (payloads []string, oversized int) {
	originJSON, _ := json.Marshal(origin)
	head := `{"origin":` + string(originJSON) + `,"events":[`
	const tail = `]}`
	var buf []byte
	for _, ev := range events {
		item, _ := json.Marshal(wireEvent(ev)) // strings only: cannot fail
		if len(head)+len(item)+len(tail) > maxPayload {
			oversized++
			item, _ = json.Marshal(wireEvent{Kind: KindAll})
		}
		if buf != nil && len(buf)+1+len(item)+len(tail) > maxPayload {
			payloads = append(payloads, string(buf)+tail)
			buf = nil
		}
		if buf == nil {
			buf = append([]byte(head), item...)
		} else {
			buf = append(append(buf, ','), item...)
		}
	}
	if buf != nil {
		payloads = append(payloads, string(buf)+tail)
	}
	return payloads, oversized
}

// decodePayload reverses encodePayloads.
func decodePayload(s string) (origin string, events []Event, err error) {
	var msg payload
	if err := json.Unmarshal([]byte(s), &msg); err != nil {
		return "", nil, err
	}
	if msg.Origin == "" {
		return "", nil, errors.New("payload has no origin")
	}
	events = make([]Event, len(msg.Events))
	for i, ev := range msg.Events {
		events[i] = Event(ev)
	}
	return msg.Origin, events, nil
}
