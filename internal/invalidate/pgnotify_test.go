package invalidate

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/envplane/envplane/internal/pgtest"
)

// deliveryTimeout bounds how long a notification may take to reach another
// replica; generous, since this asserts delivery, not speed.
const deliveryTimeout = 2 * time.Second

// testChannel returns a channel no other test (or test process) uses.
func testChannel() string {
	return "envplane_invalidate_test_" + strings.ToLower(rand.Text())
}

// newReplica returns a PG on channel, not yet started, closed when t ends.
func newReplica(t *testing.T, url, channel string) *PG {
	t.Helper()
	p, err := NewPG(url, nil, WithChannel(channel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// startReplica is newReplica, started.
func startReplica(t *testing.T, url, channel string) *PG {
	t.Helper()
	p := newReplica(t, url, channel)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return p
}

// recorder is a subscriber that keeps every event and lets a test wait for one.
type recorder struct {
	mu     sync.Mutex
	events []Event
	ch     chan Event
}

func record(s Subscriber) *recorder {
	r := &recorder{ch: make(chan Event, 1024)}
	s.Subscribe(func(e Event) {
		r.mu.Lock()
		r.events = append(r.events, e)
		r.mu.Unlock()
		r.ch <- e
	})
	return r
}

func (r *recorder) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor waits for want, failing t on any other event first or on timeout,
// and returns how long it waited.
func (r *recorder) waitFor(t *testing.T, want Event) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(deliveryTimeout)
	for {
		select {
		case e := <-r.ch:
			if e != want {
				t.Fatalf("got %+v while waiting for %+v", e, want)
			}
			return time.Since(start)
		case <-timeout:
			t.Fatalf("%+v did not arrive within %v", want, deliveryTimeout)
		}
	}
}

// eventually polls cond until it holds or 2 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(deliveryTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, deliveryTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// terminate kills the backend with pid from a separate connection.
func terminate(t *testing.T, url string, pid uint32) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ok bool
	if err := conn.QueryRow(t.Context(), "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate backend %d: %v, %v", pid, ok, err)
	}
}

func TestPGDeliversAcrossReplicasAndSkipsItsOwnEcho(t *testing.T) {
	t.Parallel()
	url, channel := pgtest.URL(t), testChannel()
	a, b := startReplica(t, url, channel), startReplica(t, url, channel)
	recA, recB := record(a), record(b)

	ev := Event{Kind: KindHostname, Hostname: "acme-dev.localhost", EnvironmentID: "e1"}
	start := time.Now()
	if err := a.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if got := recA.got(); !slices.Equal(got, []Event{ev}) {
		t.Fatalf("when Publish returned, A's subscriber had %+v, want exactly %+v", got, ev)
	}
	recB.waitFor(t, ev)
	t.Logf("A→B delivery took %v after Publish was called", time.Since(start))

	// Notifications reach every listener in commit order, so once A hears
	// B's marker it has also processed the echo of its own event.
	marker := Event{Kind: KindToken, TokenID: "t1"}
	start = time.Now()
	if err := b.Publish(t.Context(), marker); err != nil {
		t.Fatal(err)
	}
	<-recA.ch // ev, delivered synchronously above
	recA.waitFor(t, marker)
	t.Logf("B→A delivery took %v after Publish was called", time.Since(start))
	if got := recA.got(); !slices.Equal(got, []Event{ev, marker}) {
		t.Errorf("A's subscriber got %+v, want %+v then %+v (its own event once, not again from the echo)", got, ev, marker)
	}
	if got := recB.got(); !slices.Equal(got, []Event{ev, marker}) {
		t.Errorf("B's subscriber got %+v, want %+v then %+v", got, ev, marker)
	}
}

func TestPGBatchesBurstsAcrossReplicas(t *testing.T) {
	t.Parallel()
	url, channel := pgtest.URL(t), testChannel()
	a, b := startReplica(t, url, channel), startReplica(t, url, channel)
	recB := record(b)

	var events []Event
	for i := range 300 {
		events = append(events, Event{Kind: KindHostname, EnvironmentID: fmt.Sprintf("env-%03d", i),
			Hostname: fmt.Sprintf("environment-%03d.organization-with-a-long-name.example.com", i)})
	}
	if payloads, _ := encodePayloads(a.origin, events); len(payloads) < 2 {
		t.Fatalf("want the burst to need several notifications, got %d", len(payloads))
	}
	if err := a.Publish(t.Context(), events...); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		recB.waitFor(t, ev)
	}
}

func TestPGReconnectsAndDropsEverythingAfterListenerKilled(t *testing.T) {
	t.Parallel()
	url, channel := pgtest.URL(t), testChannel()
	a := startReplica(t, url, channel)
	b := newReplica(t, url, channel)
	b.maxBackoff = 200 * time.Millisecond
	// While unreachable is set, B's reconnect attempts fail, holding it down
	// long enough to observe.
	var unreachable atomic.Bool
	connect := b.connect
	b.connect = func(ctx context.Context) (*pgx.Conn, error) {
		if unreachable.Load() {
			return nil, errors.New("test: control plane unreachable")
		}
		return connect(ctx)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	recB := record(b)
	if !b.Ready() || b.LastError() != nil {
		t.Fatalf("after Start: Ready %v, LastError %v; want true, nil", b.Ready(), b.LastError())
	}

	unreachable.Store(true)
	pid := b.listenerPID()
	terminate(t, url, pid)
	eventually(t, "B not ready after its listener was killed", func() bool { return !b.Ready() })
	if err := b.LastError(); err == nil {
		t.Error("LastError is nil while B is down")
	} else {
		t.Logf("while down, LastError: %v", err)
	}
	missed := Event{Kind: KindEnvironment, EnvironmentID: "missed"}
	if err := a.Publish(t.Context(), missed); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // a few failed reconnect attempts
	if b.Ready() {
		t.Fatal("B ready while its connections fail")
	}

	unreachable.Store(false)
	delay := recB.waitFor(t, Event{Kind: KindAll})
	t.Logf("KindAll arrived %v after connections were allowed again", delay)
	eventually(t, "B ready after reconnecting", b.Ready)
	if err := b.LastError(); err != nil {
		t.Errorf("LastError after reconnecting: %v", err)
	}
	if b.listenerPID() == pid {
		t.Errorf("listener pid still %d after reconnecting", pid)
	}

	after := Event{Kind: KindObject, EnvironmentID: "e1", Object: "orders"}
	start := time.Now()
	if err := a.Publish(t.Context(), after); err != nil {
		t.Fatal(err)
	}
	recB.waitFor(t, after)
	t.Logf("A→B delivery after reconnecting took %v after Publish was called", time.Since(start))
	if got, want := recB.got(), []Event{{Kind: KindAll}, after}; !slices.Equal(got, want) {
		t.Errorf("B's subscriber got %+v, want %+v", got, want)
	}
}

func TestPGIdlePingsKeepTheListener(t *testing.T) {
	t.Parallel()
	url, channel := pgtest.URL(t), testChannel()
	a := startReplica(t, url, channel)
	b := newReplica(t, url, channel)
	b.pingInterval = 20 * time.Millisecond
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	recB := record(b)
	pid := b.listenerPID()
	time.Sleep(200 * time.Millisecond) // several idle timeouts and pings

	ev := Event{Kind: KindCredential, EnvironmentID: "e1"}
	if err := a.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	recB.waitFor(t, ev)
	if !b.Ready() || b.listenerPID() != pid {
		t.Errorf("after idling: Ready %v, pid %d (was %d); want the same connection", b.Ready(), b.listenerPID(), pid)
	}
	if got := recB.got(); !slices.Equal(got, []Event{ev}) {
		t.Errorf("B's subscriber got %+v, want only %+v", got, ev)
	}
}

// TestPGCloseStopsEverything is not parallel: it compares goroutine counts,
// which only holds while no other test runs.
func TestPGCloseStopsEverything(t *testing.T) {
	url := pgtest.URL(t)
	before := runtime.NumGoroutine()

	channel := testChannel()
	a, b := startReplica(t, url, channel), startReplica(t, url, channel)
	recB := record(b)
	ev := Event{Kind: KindOrganization, OrganizationID: "o1"}
	if err := a.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	recB.waitFor(t, ev)
	terminate(t, url, b.listenerPID()) // leave B reconnecting, or about to
	for _, p := range []*PG{a, b} {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if p.Ready() || !errors.Is(p.LastError(), errClosed) {
			t.Errorf("after Close: Ready %v, LastError %v", p.Ready(), p.LastError())
		}
	}
	if err := a.Publish(t.Context(), ev); err == nil {
		t.Error("Publish after Close succeeded")
	}
	if err := a.Start(t.Context()); !errors.Is(err, errClosed) {
		t.Errorf("Start after Close: %v, want %v", err, errClosed)
	}

	deadline := time.Now().Add(deliveryTimeout)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPGStartFailsWithoutServer(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback refuses connections at once.
	p, err := NewPG("postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !errors.Is(p.LastError(), errNotStarted) {
		t.Errorf("before Start, LastError %v, want %v", p.LastError(), errNotStarted)
	}
	if err := p.Start(t.Context()); err == nil {
		t.Fatal("Start succeeded without a server")
	}
	if p.Ready() || p.LastError() == nil {
		t.Errorf("after failed Start: Ready %v, LastError %v", p.Ready(), p.LastError())
	}
	// Local subscribers still hear Publish even though notifying fails.
	rec := record(p)
	ev := Event{Kind: KindToken, TokenID: "t1"}
	if err := p.Publish(t.Context(), ev); err == nil {
		t.Error("Publish without a server reported success")
	}
	if got := rec.got(); !slices.Equal(got, []Event{ev}) {
		t.Errorf("local subscriber got %+v, want %+v", got, ev)
	}
}

func TestNewPGRejectsUnusableChannel(t *testing.T) {
	t.Parallel()
	for _, channel := range []string{"", strings.Repeat("c", maxChannelLen+1)} {
		if _, err := NewPG("postgres://127.0.0.1/x", nil, WithChannel(channel)); err == nil {
			t.Errorf("NewPG accepted channel %q", channel)
		}
	}
}

func TestEncodePayloadsPacksInOrderUnderTheLimit(t *testing.T) {
	t.Parallel()
	origin := rand.Text()
	var events []Event
	for i := range 500 {
		events = append(events, Event{Kind: KindObject, EnvironmentID: fmt.Sprintf("env-%d", i), Object: strings.Repeat("o", i%40)})
	}
	huge := Event{Kind: KindHostname, Hostname: strings.Repeat("h", maxPayload)}
	events = append(events, huge, Event{Kind: KindAll})

	payloads, oversized := encodePayloads(origin, events)
	if oversized != 1 {
		t.Errorf("oversized = %d, want 1", oversized)
	}
	if len(payloads) < 2 {
		t.Fatalf("%d payloads, want several", len(payloads))
	}
	var got []Event
	for i, s := range payloads {
		if len(s) > maxPayload {
			t.Errorf("payload %d is %d bytes, over %d", i, len(s), maxPayload)
		}
		o, evs, err := decodePayload(s)
		if err != nil || o != origin {
			t.Fatalf("payload %d: origin %q, err %v", i, o, err)
		}
		got = append(got, evs...)
	}
	want := slices.Clone(events)
	want[len(want)-2] = Event{Kind: KindAll} // the huge one travels as KindAll
	if !slices.Equal(got, want) {
		t.Errorf("decoded %d events, want the %d sent, in order", len(got), len(want))
	}
	// Each payload but the last is full: the next event would not have fit.
	for i := range len(payloads) - 1 {
		if len(payloads[i]) < maxPayload-200 {
			t.Errorf("payload %d is only %d bytes", i, len(payloads[i]))
		}
	}
}

func TestPGDeliverDropsEverythingOnUndecodablePayload(t *testing.T) {
	t.Parallel()
	p, err := NewPG("postgres://127.0.0.1/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rec := record(p)
	p.deliver("not json")
	own, _ := encodePayloads(p.origin, []Event{{Kind: KindToken, TokenID: "t1"}})
	p.deliver(own[0])
	if got := rec.got(); !slices.Equal(got, []Event{{Kind: KindAll}}) {
		t.Errorf("got %+v, want only KindAll (garbage) and nothing for its own payload", got)
	}
}
