package app_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/services/data"
	"github.com/envplane/envplane/services/metadata"
)

// rpMaxDelay is how long a change made through one replica may take to
// reach another: a notification takes milliseconds, a TTL 10 s. The load
// test allows rpLoadDelay, below the TTL but with room for a listener
// starved by the whole race-enabled suite running on two cores: what it must
// never see is another environment's records, which it checks exactly.
const (
	rpMaxDelay  = 2 * time.Second
	rpLoadDelay = 8 * time.Second
)

// rpObject is the object every environment of these tests holds, with one
// text field.
const rpObject = "notes"

// rpRead is what a ListRecords call on a replica answered: the environment
// it resolved (X-Environment-Id) and the titles of the records, or the error.
type rpRead struct {
	env    string
	titles []string
	err    error
}

func (r rpRead) String() string {
	if r.err != nil {
		return fmt.Sprintf("error %s %s", connect.CodeOf(r.err), apierr.Reason(r.err))
	}
	return fmt.Sprintf("environment %s, records %q", r.env, r.titles)
}

// rpList lists the records of rpObject on p with token, naming the
// environment by host (when not empty) and by id (when not empty) only.
func rpList(ctx context.Context, p *apptest.Process, token, host, environmentID string) rpRead {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req := connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: environmentID, Object: rpObject, OrderBy: "title"})
	if host != "" {
		req.Header().Set("Host", host)
	}
	resp, err := p.DataClient(apptest.ConnectProto, token).ListRecords(ctx, req)
	if err != nil {
		return rpRead{err: err}
	}
	r := rpRead{env: resp.Header().Get(apptest.HeaderEnvironmentID)}
	for _, rec := range resp.Msg.GetRecords() {
		r.titles = append(r.titles, rec.GetFields()["title"].GetStringValue())
	}
	return r
}

// rpCreate creates a record of rpObject titled title on p, naming the
// environment by host or by id.
func rpCreate(ctx context.Context, p *apptest.Process, token, host, environmentID, title string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req := connect.NewRequest(&datav1.CreateRecordRequest{
		EnvironmentId: environmentID, Object: rpObject,
		Record: &structpb.Struct{Fields: map[string]*structpb.Value{"title": structpb.NewStringValue(title)}},
	})
	if host != "" {
		req.Header().Set("Host", host)
	}
	_, err := p.DataClient(apptest.ConnectProto, token).CreateRecord(ctx, req)
	return err
}

// rpDefine defines rpObject in an environment through p.
func rpDefine(t *testing.T, p *apptest.Process, environmentID string) {
	t.Helper()
	_, err := p.MetadataClient(apptest.ConnectProto, p.Token).PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{
		EnvironmentId: environmentID, Name: rpObject,
		Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{{Name: "title", Type: "text"}}},
	}))
	if err != nil {
		t.Fatalf("PutObject in %s: %v", environmentID, err)
	}
}

// rpEnv creates a postgres environment with a hostname, the object and one
// record titled slug, through p.
func rpEnv(t *testing.T, p *apptest.Process, orgID, slug, host string) *environmentv1.Environment {
	t.Helper()
	e := createEnv(t, p.Client(apptest.ConnectProto), &environmentv1.CreateEnvironmentRequest{
		OrganizationId: orgID, Slug: slug, Driver: "postgres", Hostname: proto.String(host),
	})
	if e.GetStatus() != "active" {
		t.Fatalf("created %s = %v, want active", slug, e)
	}
	rpDefine(t, p, e.GetId())
	if err := rpCreate(t.Context(), p, p.Token, "", e.GetId(), slug); err != nil {
		t.Fatalf("create a record in %s: %v", slug, err)
	}
	return e
}

// rpWait polls cond every 2 ms for at most limit and returns how long it
// took until it held, failing t when it did not.
func rpWait(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// rpSeen waits for a change made on one replica to show on another, logs
// the delay and fails t when it took longer than rpMaxDelay.
func rpSeen(t *testing.T, what string, cond func() bool) {
	t.Helper()
	d := rpWait(t, what, 3*time.Second, cond)
	t.Logf("%s: seen after %v", what, d)
	if d > rpMaxDelay {
		t.Errorf("%s took %v, more than %v: a TTL, not a notification, did it", what, d, rpMaxDelay)
	}
}

// rpControlPlane creates a fresh control-plane database on the cluster of
// adminURL and a master key file, and returns the serve flags of replicas
// sharing them.
func rpControlPlane(t *testing.T, adminURL string) (flags []string, dbName string) {
	t.Helper()
	dbName, dbURL := apptest.CreatePostgresDatabase(t, adminURL)
	keyFile, _ := apptest.WriteMasterKeyFile(t, t.TempDir())
	return []string{"--control-plane=" + dbURL, "--master-key-file=" + keyFile}, dbName
}

// rpExec runs statements on the cluster of adminURL.
func rpExec(t *testing.T, adminURL, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestReplicaProcessInvalidation runs two envplane processes on one
// PostgreSQL control plane, their environments' databases on a cluster that
// checks passwords: every routing fact changed through A takes effect on B,
// whose caches were warm, within milliseconds of the notification.
func TestReplicaProcessInvalidation(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	envCluster := apptest.StartPasswordCluster(t) // before the processes, so they stop first
	flags, _ := rpControlPlane(t, adminURL)
	flags = append(flags, "--postgres-admin-url="+envCluster)
	a := apptest.StartProcess(t, flags...)
	b := apptest.StartProcess(t, flags...)
	if a.Token == "" || b.Token != "" {
		t.Fatalf("A minted token %q, B %q: want A only (one control plane)", a.Token, b.Token)
	}
	b.Token = a.Token
	ctx := t.Context()
	ca := a.Client(apptest.ConnectProto)
	org := createOrg(t, ca, "acme")
	dev := rpEnv(t, a, org.GetId(), "dev", "dev.acme.test")
	stg := rpEnv(t, a, org.GetId(), "stg", "stg.acme.test")
	if !dev.GetIsDefault() {
		t.Fatalf("dev = %v, want the default", dev)
	}
	tok := a.Token
	onB := func(host string) rpRead { return rpList(ctx, b, tok, host, "") }
	want := func(r rpRead, env *environmentv1.Environment) bool {
		return r.err == nil && r.env == env.GetId() && slices.Equal(r.titles, []string{env.GetSlug()})
	}

	// Warm B: each hostname routes to its environment's records.
	if r := onB("dev.acme.test"); !want(r, dev) {
		t.Fatalf("B, dev.acme.test: %v, want dev's records", r)
	}
	if r := onB("stg.acme.test"); !want(r, stg) {
		t.Fatalf("B, stg.acme.test: %v, want stg's records", r)
	}

	// Hostname move.
	updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("dev2.acme.test")})
	rpSeen(t, "hostname move", func() bool { return want(onB("dev2.acme.test"), dev) })
	if r := onB("dev.acme.test"); r.err == nil || r.env == dev.GetId() {
		t.Errorf("B, old hostname dev.acme.test: %v, want an error", r)
	} else {
		apptest.WantError(t, r.err, connect.CodeFailedPrecondition, resolve.ReasonEnvironmentNotResolved)
	}

	// Suspension, and back.
	updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: stg.GetId(), Status: proto.String("suspended")})
	rpSeen(t, "suspension", func() bool {
		r := onB("stg.acme.test")
		return r.err != nil && apierr.Reason(r.err) == resolve.ReasonEnvironmentSuspended
	})
	updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: stg.GetId(), Status: proto.String("active")})
	rpSeen(t, "reactivation", func() bool { return want(onB("stg.acme.test"), stg) })

	// Rotation: A sets a new password; once the old sessions are gone, only
	// a B that reopened dev's database with the new secret can reach it.
	if _, err := ca.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: dev.GetId()})); err != nil {
		t.Fatalf("RotateCredential: %v", err)
	}
	devDB, err := provision.PostgresName(dev.GetId())
	if err != nil {
		t.Fatal(err)
	}
	rpExec(t, envCluster, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", devDB)
	rpSeen(t, "rotation (read)", func() bool { return want(onB("dev2.acme.test"), dev) })
	if err := rpCreate(ctx, b, tok, "dev2.acme.test", "", "dev-2"); err != nil {
		t.Fatalf("B writes to dev after the rotation: %v", err)
	}
	if r := rpList(ctx, a, tok, "dev2.acme.test", ""); r.err != nil || !slices.Equal(r.titles, []string{"dev", "dev-2"}) {
		t.Errorf("A reads dev after B's write: %v, want dev and dev-2", r)
	}

	// Default change: a call naming no environment follows the default.
	_, orgToken := a.MintToken(t, &accessv1.CreateTokenRequest{Name: "org", OrganizationId: org.GetId(), Role: "admin"})
	noHint := func() rpRead { return rpList(ctx, b, orgToken, "", "") }
	if r := noHint(); r.err != nil || r.env != dev.GetId() {
		t.Fatalf("B, no hint: %v, want dev (the default)", r)
	}
	updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: stg.GetId(), IsDefault: proto.Bool(true)})
	rpSeen(t, "default change", func() bool { return want(noHint(), stg) })

	// Deletion: neither the hostname nor the id reaches dev on B any more.
	if r := onB("dev2.acme.test"); r.env != dev.GetId() {
		t.Fatalf("B before the deletion: %v, want dev", r)
	}
	if _, err := ca.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId()})); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	rpSeen(t, "deletion", func() bool { r := onB("dev2.acme.test"); return r.err != nil })
	if r := onB("dev2.acme.test"); r.err == nil || r.env == dev.GetId() {
		t.Errorf("B, deleted dev's hostname: %v, want an error", r)
	}
	if r := rpList(ctx, b, tok, "", dev.GetId()); r.err == nil {
		t.Errorf("B, deleted dev by id: %v, want an error", r)
	} else if code := connect.CodeOf(r.err); code != connect.CodeNotFound && code != connect.CodeFailedPrecondition {
		t.Errorf("B, deleted dev by id: %v, want NOT_FOUND (or FAILED_PRECONDITION while deleting)", r)
	}
}

// TestReplicaProcessListenerReconnect ends B's listening connection and keeps
// it from reconnecting for a moment: B turns unready, a change made on A
// meanwhile (whose notification B cannot hear) is seen by B once it is
// back, because it drops every cache on reconnecting.
func TestReplicaProcessListenerReconnect(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	flags, cpDB := rpControlPlane(t, adminURL)
	flags = append(flags, "--postgres-admin-url="+adminURL)
	// Connections are allowed again before the database is dropped, even
	// when the test fails half way.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, adminURL); err == nil {
			_, _ = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{cpDB}.Sanitize()+" ALLOW_CONNECTIONS true")
			_ = conn.Close(ctx)
		}
	})
	a := apptest.StartProcess(t, flags...)
	b := apptest.StartProcess(t, flags...)
	b.Token = a.Token
	ctx := t.Context()
	ca := a.Client(apptest.ConnectProto)
	org := createOrg(t, ca, "acme")
	dev := rpEnv(t, a, org.GetId(), "dev", "dev.acme.test")
	apptest.PostgresEnvironmentCleanup(t, adminURL, dev.GetId())
	tok := a.Token
	if r := rpList(ctx, b, tok, "dev.acme.test", ""); r.env != dev.GetId() {
		t.Fatalf("B, dev.acme.test: %v, want dev", r)
	}
	if code := b.Ready(ctx); code != http.StatusOK {
		t.Fatalf("B /readyz = %d before the kill", code)
	}

	// B logs the backend pid of its listening connection; check that
	// pg_stat_activity knows it as the LISTEN.
	var pid float64
	for _, rec := range b.Logs.Find(map[string]any{"msg": "listening for cache invalidations"}) {
		pid, _ = rec["pid"].(float64)
	}
	if pid == 0 {
		t.Fatalf("B logged no listener pid:\n%s", b.Logs)
	}
	pool := apptest.PostgresPool(t, adminURL)
	var query string
	if err := pool.QueryRow(ctx, "SELECT query FROM pg_stat_activity WHERE pid = $1 AND datname = $2", int(pid), cpDB).Scan(&query); err != nil {
		t.Fatalf("B's listener (pid %v) in pg_stat_activity: %v", pid, err)
	}
	t.Logf("pg_stat_activity of B's listener: %q", query)
	var listeners int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'", cpDB).Scan(&listeners); err != nil || listeners != 2 {
		t.Errorf("LISTEN sessions on the control plane: %d, %v; want 2 (A and B)", listeners, err)
	}

	// No new connection to the control plane for now; then kill B's listener.
	rpExec(t, adminURL, "ALTER DATABASE "+pgx.Identifier{cpDB}.Sanitize()+" ALLOW_CONNECTIONS false")
	killed := time.Now()
	rpExec(t, adminURL, "SELECT pg_terminate_backend($1)", int(pid))
	d := rpWait(t, "B unready", 3*time.Second, func() bool { return b.Ready(ctx) == http.StatusServiceUnavailable })
	t.Logf("B /readyz 503 after %v", d)

	// A change on A that B cannot hear (A's pools keep their connections).
	updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("dev2.acme.test")})
	time.Sleep(100 * time.Millisecond)
	if code := b.Ready(ctx); code != http.StatusServiceUnavailable {
		t.Errorf("B /readyz = %d while it cannot listen, want 503", code)
	}
	rpExec(t, adminURL, "ALTER DATABASE "+pgx.Identifier{cpDB}.Sanitize()+" ALLOW_CONNECTIONS true")
	reopened := time.Now()
	d = rpWait(t, "B ready again", 10*time.Second, func() bool { return b.Ready(ctx) == http.StatusOK })
	t.Logf("B /readyz 200 again %v after connections were allowed (%v after the kill)", d, time.Since(killed))
	rpSeen(t, "change made while B was deaf", func() bool {
		r := rpList(ctx, b, tok, "dev2.acme.test", "")
		return r.err == nil && r.env == dev.GetId()
	})
	t.Logf("B routes the new hostname %v after connections were allowed", time.Since(reopened))
	if r := rpList(ctx, b, tok, "dev.acme.test", ""); r.err == nil || r.env == dev.GetId() {
		t.Errorf("B, old hostname: %v, want an error", r)
	}
	if got := b.Logs.Find(map[string]any{"msg": "cache invalidation listener reconnected; dropped every cache"}); len(got) != 1 {
		t.Errorf("B logged %d reconnections, want 1", len(got))
	}
	// And B hears A again.
	updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("dev3.acme.test")})
	rpSeen(t, "change after the reconnection", func() bool {
		r := rpList(ctx, b, tok, "dev3.acme.test", "")
		return r.err == nil && r.env == dev.GetId()
	})
}

// TestReplicaProcessControlPlaneOutage stops the control plane of a process
// for a moment: what it has cached keeps serving (reads and writes on the
// environment's own database, which stays up), what it has not fails
// UNAVAILABLE CONTROL_PLANE_UNAVAILABLE, /readyz says 503, and once the
// control plane is back everything works without a restart.
func TestReplicaProcessControlPlaneOutage(t *testing.T) {
	t.Parallel()
	mainURL := apptest.PostgresURL(t)
	cp := apptest.StartCluster(t)
	flags, _ := rpControlPlane(t, cp.AdminURL)
	flags = append(flags, "--postgres-admin-url="+mainURL)
	p := apptest.StartProcess(t, flags...)
	ctx := t.Context()
	c := p.Client(apptest.ConnectProto)
	org := createOrg(t, c, "acme")
	x := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "x", Driver: "postgres", Hostname: proto.String("x.acme.test")})
	apptest.PostgresEnvironmentCleanup(t, mainURL, x.GetId())
	y := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "y", Driver: "postgres", Hostname: proto.String("y.acme.test")})
	apptest.PostgresEnvironmentCleanup(t, mainURL, y.GetId())
	tok := p.Token

	// Warm the caches of x, by its hostname only.
	meta := p.MetadataClient(apptest.ConnectProto, tok, apptest.WithHost("x.acme.test"))
	if _, err := meta.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
		Name: rpObject, Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{{Name: "title", Type: "text"}}},
	})); err != nil {
		t.Fatalf("PutObject on x: %v", err)
	}
	if err := rpCreate(ctx, p, tok, "x.acme.test", "", "x-1"); err != nil {
		t.Fatalf("create in x: %v", err)
	}
	if r := rpList(ctx, p, tok, "x.acme.test", ""); r.err != nil || r.env != x.GetId() {
		t.Fatalf("list x: %v", r)
	}

	cp.Stop(t)
	stopped := time.Now()
	if r := rpList(ctx, p, tok, "x.acme.test", ""); r.err != nil || r.env != x.GetId() || !slices.Equal(r.titles, []string{"x-1"}) {
		t.Errorf("read x with the control plane down: %v, want x-1", r)
	}
	if err := rpCreate(ctx, p, tok, "x.acme.test", "", "x-2"); err != nil {
		t.Errorf("write x with the control plane down: %v", err)
	}
	if r := rpList(ctx, p, tok, "x.acme.test", ""); r.err != nil || !slices.Equal(r.titles, []string{"x-1", "x-2"}) {
		t.Errorf("read x after the write with the control plane down: %v, want x-1 and x-2", r)
	}
	ymeta := p.MetadataClient(apptest.ConnectProto, tok, apptest.WithHost("y.acme.test"))
	_, err := ymeta.ListObjects(ctx, connect.NewRequest(&metadatav1.ListObjectsRequest{}))
	apptest.WantError(t, err, connect.CodeUnavailable, apierr.ReasonControlPlaneUnavailable)
	d := rpWait(t, "/readyz 503 with the control plane down", 5*time.Second, func() bool { return p.Ready(ctx) == http.StatusServiceUnavailable })
	t.Logf("/readyz 503 %v after the control plane stopped", d)
	if time.Since(stopped) > 9*time.Second {
		t.Errorf("the outage checks took %v: x's cache entries may have expired (TTL 10 s) before they were checked", time.Since(stopped))
	}

	cp.Start(t)
	started := time.Now()
	d = rpWait(t, "/readyz 200 with the control plane back", 15*time.Second, func() bool { return p.Ready(ctx) == http.StatusOK })
	t.Logf("/readyz 200 %v after the control plane started (outage %v)", d, started.Sub(stopped))
	if _, err := ymeta.ListObjects(ctx, connect.NewRequest(&metadatav1.ListObjectsRequest{})); err != nil {
		t.Errorf("y with the control plane back: %v", err)
	}
	if r := rpList(ctx, p, tok, "x.acme.test", ""); r.err != nil || r.env != x.GetId() || len(r.titles) != 2 {
		t.Errorf("x with the control plane back: %v", r)
	}
}

// TestReplicaProcessHostnameSwapLoad reads two environments by hostname on
// both replicas while A swaps their hostnames over and over: an answer
// names the environment whose records it holds and that the Host named at
// some point during the call (allowing rpMaxDelay for a notification), or
// fails cleanly; never the records of the other environment.
func TestReplicaProcessHostnameSwapLoad(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	flags, _ := rpControlPlane(t, adminURL)
	flags = append(flags, "--postgres-admin-url="+adminURL)
	a := apptest.StartProcess(t, flags...)
	b := apptest.StartProcess(t, flags...)
	b.Token = a.Token
	rpLogCauses(t, a, b)
	t.Logf("A on %s, B on %s", a.Addr, b.Addr)
	testStart := time.Now()
	ca := a.Client(apptest.ConnectProto)
	org := createOrg(t, ca, "acme")
	e1 := rpEnv(t, a, org.GetId(), "one", "h1.acme.test")
	apptest.PostgresEnvironmentCleanup(t, adminURL, e1.GetId())
	e2 := rpEnv(t, a, org.GetId(), "two", "h2.acme.test")
	apptest.PostgresEnvironmentCleanup(t, adminURL, e2.GetId())
	slugOf := map[string]string{e1.GetId(): "one", e2.GetId(): "two"}
	tok := a.Token

	// history holds every mapping of h1 and h2 with the span it may have
	// held in: from before the update that set it began until the update
	// that replaced it returned.
	type version struct {
		from, until time.Time
		h1, h2      string // environment ids, "" for none
	}
	var mu sync.Mutex
	history := []*version{{from: time.Now().Add(-time.Hour), h1: e1.GetId(), h2: e2.GetId()}}
	held := func(host, env string, start, end time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range history {
			if !v.until.IsZero() && v.until.Before(start.Add(-rpLoadDelay)) || v.from.After(end) {
				continue
			}
			if host == "h1.acme.test" && v.h1 == env || host == "h2.acme.test" && v.h2 == env {
				return true
			}
		}
		return false
	}
	set := func(id, host, h1, h2 string) {
		// The new mapping is recorded before the update starts: a replica
		// may serve it as soon as the server commits, before this goroutine
		// hears back. Until the update returns, both mappings are valid.
		mu.Lock()
		prev := history[len(history)-1]
		history = append(history, &version{from: time.Now(), h1: h1, h2: h2})
		mu.Unlock()
		updateEnv(t, ca, &environmentv1.UpdateEnvironmentRequest{Id: id, Hostname: proto.String(host)})
		mu.Lock()
		prev.until = time.Now()
		mu.Unlock()
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var calls, failures, unavailable atomic.Int64
	var wg sync.WaitGroup
	for _, p := range []*apptest.Process{a, b} {
		for g := range 4 {
			wg.Go(func() {
				hosts := []string{"h1.acme.test", "h2.acme.test"}
				for i := g; ctx.Err() == nil; i++ {
					host := hosts[i%2]
					start := time.Now()
					r := rpList(t.Context(), p, tok, host, "")
					end := time.Now()
					calls.Add(1)
					if r.err != nil {
						failures.Add(1)
						switch code := connect.CodeOf(r.err); {
						case code == connect.CodeFailedPrecondition || code == connect.CodeNotFound: // the host named nothing
						case apierr.Reason(r.err) == data.ReasonDatabaseUnavailable:
							// Every hostname change drops the environment's driver on
							// every replica; changes every few milliseconds can keep
							// the registry from reopening it (it gives up after 10
							// attempts): a clean, retryable failure.
							unavailable.Add(1)
						default:
							t.Errorf("%s on %s: %v, want success or a clean error", host, p.Addr, r)
						}
						continue
					}
					slug, ok := slugOf[r.env]
					if !ok || !slices.Equal(r.titles, []string{slug}) {
						t.Errorf("%s on %s: %v: the records are not the named environment's", host, p.Addr, r)
						continue
					}
					if !held(host, r.env, start, end) {
						t.Errorf("%s on %s: %v, but %s never named %s during the call (started %v, ended %v into the test)", host, p.Addr, r, host, slug, start.Sub(testStart), end.Sub(testStart))
					}
				}
			})
		}
	}
	swaps := 0
	for ctx.Err() == nil {
		// h1 ↔ h2 in three steps, since hostnames are unique.
		set(e1.GetId(), "tmp.acme.test", "", e2.GetId())
		set(e2.GetId(), "h1.acme.test", e2.GetId(), "")
		set(e1.GetId(), "h2.acme.test", e2.GetId(), e1.GetId())
		set(e1.GetId(), "tmp.acme.test", e2.GetId(), "")
		set(e2.GetId(), "h2.acme.test", "", e2.GetId())
		set(e1.GetId(), "h1.acme.test", e1.GetId(), e2.GetId())
		swaps += 2
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d calls (%d clean failures, %d of them DATABASE_UNAVAILABLE) during %d hostname swaps", calls.Load(), failures.Load(), unavailable.Load(), swaps)
	if calls.Load()-failures.Load() == 0 {
		t.Error("no call succeeded")
	}
}

// rpLogCauses logs, when t has failed, why the processes' environment
// databases failed (debug lines a client never sees).
func rpLogCauses(t *testing.T, ps ...*apptest.Process) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range ps {
			for i, rec := range p.Logs.Find(map[string]any{"msg": "environment database failure cause"}) {
				if i == 5 {
					break
				}
				t.Logf("%s: %v", p.Addr, rec["error"])
			}
		}
	})
}

// TestReplicaProcessHostnameTransfer moves a verified hostname from one
// organization to another across two server processes: organization Y
// proves ownership (DNS) through A of a hostname X holds, and B routes it to
// Y's environment within the notification's delay, never to X's again.
func TestReplicaProcessHostnameTransfer(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	envCluster := apptest.StartPasswordCluster(t) // before the processes, so they stop first
	dnsSrv := apptest.StartDNS(t)
	flags, _ := rpControlPlane(t, adminURL)
	flags = append(flags, "--postgres-admin-url="+envCluster, "--dns-resolver="+dnsSrv.Addr)
	a := apptest.StartProcess(t, flags...)
	b := apptest.StartProcess(t, flags...)
	b.Token = a.Token
	ctx := t.Context()
	ca := a.Client(apptest.ConnectProto)
	orgX, orgY := createOrg(t, ca, "orgx"), createOrg(t, ca, "orgy")
	const host = "shop.transfer.test"
	x := rpEnv(t, a, orgX.GetId(), "shop", host) // set by the platform admin: verified at once
	y := rpEnv(t, a, orgY.GetId(), "shop", "shop-y.transfer.test")
	tok := a.Token
	onB := func() rpRead { return rpList(ctx, b, tok, host, "") }
	if r := onB(); r.err != nil || r.env != x.GetId() {
		t.Fatalf("B before the transfer: %v, want X's environment", r)
	}

	// Y claims the hostname with its own token: pending, X keeps routing.
	_, yToken := a.MintToken(t, &accessv1.CreateTokenRequest{Name: "y", OrganizationId: orgY.GetId(), Role: "admin"})
	cy := a.ClientWithToken(apptest.ConnectProto, yToken)
	claimed := updateEnv(t, cy, &environmentv1.UpdateEnvironmentRequest{Id: y.GetId(), Hostname: proto.String(host)})
	v := claimed.GetHostnameVerification()
	if v.GetState() != "pending" || v.GetToken() == "" {
		t.Fatalf("Y's claim = %v, want pending with a token", v)
	}
	if r := onB(); r.err != nil || r.env != x.GetId() {
		t.Fatalf("B while Y's claim is pending: %v, want X's environment", r)
	}

	// Y proves it through A: B follows.
	dnsSrv.SetTXT(v.GetDnsName(), v.GetToken())
	resp, err := cy.VerifyHostname(ctx, connect.NewRequest(&environmentv1.VerifyHostnameRequest{Id: y.GetId()}))
	if err != nil || resp.Msg.GetEnvironment().GetHostnameVerification().GetState() != "verified" {
		t.Fatalf("VerifyHostname: %v, %v", resp, err)
	}
	rpSeen(t, "transfer", func() bool { r := onB(); return r.err == nil && r.env == y.GetId() })
	for range 50 {
		if r := onB(); r.env == x.GetId() {
			t.Fatalf("B routed the transferred hostname to X again: %v", r)
		}
	}
	if r := rpList(ctx, a, tok, host, ""); r.env != y.GetId() {
		t.Errorf("A after the transfer: %v, want Y's environment", r)
	}
	// X's environment shows it lost the hostname (on either replica).
	got := getEnv(t, b.Client(apptest.ConnectProto), x.GetId())
	if got.GetHostnameVerification().GetState() == "verified" && got.GetHostname() == host {
		t.Errorf("X after the transfer = %v, want its claim demoted", got.GetHostnameVerification())
	}
}

// TestReplicaProcessHostnameChecksOneAtATime runs the background hostname
// checks of two server processes on one control plane: their rounds never
// overlap (the PostgreSQL control plane's advisory lock), which the DNS
// server sees as never more than one query in flight, each answer taking
// long enough that two rounds at once would overlap.
func TestReplicaProcessHostnameChecksOneAtATime(t *testing.T) {
	t.Parallel()
	adminURL := apptest.PostgresURL(t)
	dnsSrv := apptest.StartDNS(t)
	flags, _ := rpControlPlane(t, adminURL)
	flags = append(flags, "--dns-resolver="+dnsSrv.Addr, "--hostname-check-interval=100ms", "--hostname-grace=1h")
	a := apptest.StartProcess(t, flags...)
	b := apptest.StartProcess(t, flags...)
	b.Token = a.Token
	ctx := t.Context()
	ca := a.Client(apptest.ConnectProto)
	org := createOrg(t, ca, "checks")
	_, orgToken := a.MintToken(t, &accessv1.CreateTokenRequest{Name: "org", OrganizationId: org.GetId(), Role: "admin"})
	co := a.ClientWithToken(apptest.ConnectProto, orgToken)
	for i := range 4 {
		e := createEnv(t, ca, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: fmt.Sprintf("e%d", i)})
		claimed := updateEnv(t, co, &environmentv1.UpdateEnvironmentRequest{Id: e.GetId(), Hostname: proto.String(fmt.Sprintf("h%d.checks.test", i))})
		v := claimed.GetHostnameVerification()
		dnsSrv.SetTXT(v.GetDnsName(), v.GetToken())
		if _, err := co.VerifyHostname(ctx, connect.NewRequest(&environmentv1.VerifyHostnameRequest{Id: e.GetId()})); err != nil {
			t.Fatalf("VerifyHostname(%d): %v", i, err)
		}
	}
	// Every verified hostname is due every 100 ms and each answer takes
	// 80 ms: a round takes longer than the interval, so two processes'
	// rounds would overlap at once without the lock.
	dnsSrv.SetDelay(80 * time.Millisecond)
	dnsSrv.ResetStats()
	time.Sleep(2500 * time.Millisecond)
	queries, most := dnsSrv.Stats()
	t.Logf("%d queries in 2.5 s, at most %d in flight", queries, most)
	if queries < 10 {
		t.Errorf("%d queries in 2.5 s: the background checks did not run", queries)
	}
	if most > 1 {
		t.Errorf("%d queries in flight at once: two processes checked at the same time", most)
	}
}

// TestReplicaProcessChangeCutShortElsewhere: replica A migrates an
// environment's database and is killed before it stores the definition;
// replica B, whose driver was opened (and reconciled) before the change,
// finds the table changed under it on its next call, reopens the database,
// whose reconcile stores A's change, and runs the call again: B's caller
// never sees the change's window.
func TestReplicaProcessChangeCutShortElsewhere(t *testing.T) {
	t.Parallel()
	r := rpPostgresPair(t, "cutshort")
	a, b, id, envCluster := r.a, r.b, r.env, r.envCluster
	ctx := t.Context()
	metaA := a.MetadataClient(apptest.ConnectProto, a.Token)
	dataB := b.DataClient(apptest.ConnectProto, b.Token)
	metaPut(t, metaA, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "memo", Object: metaObject(metaText("title"), metaText("a"), metaText("b"))})
	dataCreate(t, a.DataClient(apptest.ConnectProto, a.Token), id, "memo", map[string]any{"title": "kept", "a": "x", "b": "y"})
	if rows, err := listErr(dataB, id, "memo", ""); err != nil || len(rows) != 1 {
		t.Fatalf("B before the change: %v, %v", rows, err)
	}

	// Hold writes of the control plane's definitions (reads go on), so
	// that A's change reaches the database and stops there; then kill A.
	release := rpHoldDefinitionWrites(t, r.adminURL, r.dbName)
	go func() {
		_, _ = metaA.PutObject(context.WithoutCancel(ctx), connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: id, Name: "memo", Object: metaObject(metaText("title")), AllowDestructive: true}))
	}()
	envDB, err := provision.PostgresName(id)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(envCluster)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + envDB
	ledger, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close(context.WithoutCancel(ctx))
	rpWait(t, "A's change reaching the database", 10*time.Second, func() bool {
		var version int64
		err := ledger.QueryRow(ctx, `SELECT version FROM _envplane_schema WHERE object = 'memo'`).Scan(&version)
		return err == nil && version == 2
	})
	a.Kill(t)
	release()

	// B's first call meets the table A changed: answered all the same.
	rows, err := listErr(dataB, id, "memo", "")
	if err != nil || len(rows) != 1 || rows[0] != "map[title:kept]" {
		t.Fatalf("B's first call after the change = %v, %v; want the record as the change left it", rows, err)
	}
	got := metaGet(t, b.MetadataClient(apptest.ConnectProto, b.Token), id, "memo")
	if got.GetVersion() != 2 || !slices.Equal(metaFieldNames(got), []string{"title"}) || got.GetDrift() != "" {
		t.Errorf("after B reconciled, memo = %v; want version 2 with title only, no drift", got)
	}
}

// rpHoldDefinitionWrites makes every write of object definitions to the
// control plane of dbName (on the cluster of adminURL) wait, while reads go
// on, until release.
func rpHoldDefinitionWrites(t *testing.T, adminURL, dbName string) (release func()) {
	t.Helper()
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + dbName
	conn, err := pgx.Connect(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "LOCK TABLE object_definitions IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			ctx := context.WithoutCancel(t.Context())
			if err := tx.Rollback(ctx); err != nil {
				t.Errorf("releasing the definitions: %v", err)
			}
			_ = conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	return release
}

// TestReplicaProcessDeleteRacingACreate: a forced delete on replica B of
// an object whose create replica A has applied to the database but not yet
// stored never drops the table under the create A is about to acknowledge:
// B answers ABORTED, A's create is acknowledged and works, and B's retry
// deletes the object whole.
func TestReplicaProcessDeleteRacingACreate(t *testing.T) {
	t.Parallel()
	r := rpPostgresPair(t, "racing")
	a, b, id := r.a, r.b, r.env
	ctx := t.Context()
	metaA := a.MetadataClient(apptest.ConnectProto, a.Token)
	metaB := b.MetadataClient(apptest.ConnectProto, b.Token)
	dataB := b.DataClient(apptest.ConnectProto, b.Token)
	if rows, err := listErr(dataB, id, rpObject, ""); err != nil || len(rows) != 1 { // B's driver is open
		t.Fatalf("B before the race: %v, %v", rows, err)
	}

	release := rpHoldDefinitionWrites(t, r.adminURL, r.dbName)
	created := make(chan error, 1)
	go func() {
		_, err := metaA.PutObject(context.WithoutCancel(ctx), connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: id, Name: "memo", Object: metaObject(metaText("title"))}))
		created <- err
	}()
	// A's create is in the database, its definition waiting: B sees a
	// table no definition describes, which the ledger holds.
	var delErr error
	rpWait(t, "B meeting A's create in the database", 10*time.Second, func() bool {
		_, delErr = metaB.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "memo", Force: true}))
		return apierr.Reason(delErr) != metadata.ReasonObjectNotDefined
	})
	apptest.WantError(t, delErr, connect.CodeAborted, metadata.ReasonConcurrentModification)
	release()
	if err := <-created; err != nil {
		t.Fatalf("A's create: %v", err)
	}
	// Acknowledged, so it works, on either replica.
	dataCreate(t, a.DataClient(apptest.ConnectProto, a.Token), id, "memo", map[string]any{"title": "kept"})
	rpWait(t, "B serving the created object", 10*time.Second, func() bool {
		rows, err := listErr(dataB, id, "memo", "")
		return err == nil && len(rows) == 1
	})
	// B's retry deletes it whole.
	if _, err := metaB.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "memo", Force: true})); err != nil {
		t.Fatalf("B's retried delete: %v", err)
	}
	metaWantMissing(t, metaA, id, "memo")
	_, err := listErr(a.DataClient(apptest.ConnectProto, a.Token), id, "memo", "")
	apptest.WantError(t, err, connect.CodeNotFound, data.ReasonObjectNotDefined)
}

// rpPair is two server processes on one PostgreSQL control plane, with
// one organization's postgres environment (rpEnv) on a cluster that checks
// passwords.
type rpPair struct {
	a, b                         *apptest.Process
	env                          string // the environment's id
	adminURL, dbName, envCluster string // the control plane's cluster and database; the environments' cluster
}

func rpPostgresPair(t *testing.T, orgSlug string) rpPair {
	t.Helper()
	r := rpPair{adminURL: apptest.PostgresURL(t)}
	r.envCluster = apptest.StartPasswordCluster(t) // before the processes, so they stop first
	var flags []string
	flags, r.dbName = rpControlPlane(t, r.adminURL)
	flags = append(flags, "--postgres-admin-url="+r.envCluster)
	r.a = apptest.StartProcess(t, flags...)
	r.b = apptest.StartProcess(t, flags...)
	r.b.Token = r.a.Token
	org := createOrg(t, r.a.Client(apptest.ConnectProto), orgSlug)
	r.env = rpEnv(t, r.a, org.GetId(), "dev", "dev."+orgSlug+".test").GetId()
	return r
}
