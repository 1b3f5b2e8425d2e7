package app_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/services/data"
)

// The seed of TestIsolationProperty's sequence: the same seed replays the
// same operations, routes and protocols.
const (
	propSeed1, propSeed2 = 1, 2
	propSteps            = 150
	propBudget           = 20 * time.Second // operations stop early past it
)

// propProtocols are the protocols an operation picks from: Connect (both
// codecs), gRPC and REST.
var propProtocols = []apptest.Protocol{apptest.ConnectProto, apptest.ConnectJSON, apptest.GRPC, apptest.REST}

// propRoutes are the ways an operation names its environment.
var propRoutes = []string{"field", "host", "header", "session", "default"}

// propEnv is one environment of the property test with its model.
type propEnv struct {
	name  string // its engine
	env   *environmentv1.Environment
	model map[string]string // id → name
}

// propWorld is the server, its organization's environments and the tokens
// the routes call with.
type propWorld struct {
	t       *testing.T
	srv     *apptest.Env
	rng     *rand.Rand
	envs    []*propEnv
	port    string
	session string // an org token whose session the session route activates
	member  string // an org token with no session: the organization default
	clients map[string]dataClient
	step    int
	op      string
}

func (w *propWorld) fatalf(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("seed (%d, %d) step %d [%s]: %s", propSeed1, propSeed2, w.step, w.op, fmt.Sprintf(format, args...))
}

func (w *propWorld) client(p apptest.Protocol, token string) dataClient {
	key := string(p) + " " + token
	if c, ok := w.clients[key]; ok {
		return c
	}
	c := w.srv.DataClient(p, token)
	w.clients[key] = c
	return c
}

// randomCase returns s with each letter in a random case.
func (w *propWorld) randomCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' && w.rng.IntN(2) == 0 {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// propCall is how one call reaches its environment: the client, the
// environment_id field, and the headers.
type propCall struct {
	desc   string
	c      dataClient
	envID  string
	host   string
	header string
}

func propReq[T any](pc propCall, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if pc.host != "" {
		req.Header().Set("Host", pc.host)
	}
	if pc.header != "" {
		req.Header().Set(apptest.HeaderEnvironmentID, pc.header)
	}
	return req
}

// route picks a protocol and a route to e, doing what the route needs
// first (activating the session, moving the default).
func (w *propWorld) route(e *propEnv) propCall {
	p := propProtocols[w.rng.IntN(len(propProtocols))]
	r := propRoutes[w.rng.IntN(len(propRoutes))]
	ctx := w.t.Context()
	pc := propCall{desc: fmt.Sprintf("%s via %s over %s", e.name, r, p)}
	admin := w.srv.AdminToken()
	switch r {
	case "field":
		pc.c, pc.envID = w.client(p, admin), e.env.GetId()
	case "host":
		host := w.randomCase(e.env.GetHostname())
		switch w.rng.IntN(3) {
		case 0:
			host += ":" + w.port
		case 1:
			host += fmt.Sprintf(":%d", 1+w.rng.IntN(65535))
		}
		pc.desc += " (Host " + host + ")"
		pc.c, pc.host = w.client(p, admin), host
	case "header":
		pc.c, pc.header = w.client(p, admin), e.env.GetId()
	case "session":
		_, err := w.srv.ClientWithToken(p, w.session).ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: e.env.GetId()}))
		if err != nil {
			w.fatalf("ActivateEnvironment(%s) over %s: %v", e.name, p, err)
		}
		pc.c = w.client(p, w.session)
	case "default":
		_, err := w.srv.ClientWithToken(p, admin).UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{
			Id: e.env.GetId(), IsDefault: proto.Bool(true),
		}))
		if err != nil {
			w.fatalf("UpdateEnvironment(%s, is_default) over %s: %v", e.name, p, err)
		}
		pc.c = w.client(p, w.member)
	}
	return pc
}

// reached fails unless the answer's X-Environment-Id names e.
func (w *propWorld) reached(e *propEnv, pc propCall, h string) {
	w.t.Helper()
	if h != e.env.GetId() {
		w.fatalf("%s answered from %q (%s), want %s", pc.desc, h, w.nameOf(h), e.env.GetId())
	}
}

func (w *propWorld) nameOf(id string) string {
	for _, e := range w.envs {
		if e.env.GetId() == id {
			return e.name
		}
	}
	return "unknown"
}

// pickID picks the id an operation names in e: one of e's own, one only
// another environment holds, or one no environment holds.
func (w *propWorld) pickID(e *propEnv) string {
	var own, foreign []string
	for id := range e.model {
		own = append(own, id)
	}
	for _, o := range w.envs {
		for id := range o.model {
			if _, ok := e.model[id]; !ok && o != e {
				foreign = append(foreign, id)
			}
		}
	}
	slices.Sort(own)
	slices.Sort(foreign)
	foreign = slices.Compact(foreign)
	switch n := w.rng.IntN(10); {
	case n < 5 && len(own) > 0:
		return own[w.rng.IntN(len(own))]
	case n < 9 && len(foreign) > 0:
		return foreign[w.rng.IntN(len(foreign))]
	}
	return fmt.Sprintf("nobody-%d", w.rng.IntN(1000))
}

// wantMissing fails unless err is NOT_FOUND RECORD_NOT_FOUND.
func (w *propWorld) wantMissing(pc propCall, what string, err error) {
	w.t.Helper()
	if err == nil {
		w.fatalf("%s over %s succeeded, want NOT_FOUND %s", what, pc.desc, data.ReasonRecordNotFound)
	}
	if !apptest.WantError(w.t, err, connect.CodeNotFound, data.ReasonRecordNotFound) {
		w.fatalf("%s over %s: %v", what, pc.desc, err)
	}
}

func propName(r *datav1.GetRecordResponse) string {
	return r.GetRecord().GetFields()["name"].GetStringValue()
}

// listAll lists contact in e through pc, page by page, and returns id → name.
func (w *propWorld) listAll(e *propEnv, pc propCall, pageSize int32) map[string]string {
	w.t.Helper()
	got := map[string]string{}
	token := ""
	for range 1000 {
		resp, err := pc.c.ListRecords(w.t.Context(), propReq(pc, &datav1.ListRecordsRequest{
			EnvironmentId: pc.envID, Object: "contact", PageSize: pageSize, PageToken: token,
		}))
		if err != nil {
			w.fatalf("ListRecords over %s (page size %d): %v", pc.desc, pageSize, err)
		}
		w.reached(e, pc, resp.Header().Get(apptest.HeaderEnvironmentID))
		if int32(len(resp.Msg.GetRecords())) > pageSize {
			w.fatalf("ListRecords over %s: page of %d, page size %d", pc.desc, len(resp.Msg.GetRecords()), pageSize)
		}
		for _, r := range resp.Msg.GetRecords() {
			id := dataID(r)
			if _, dup := got[id]; dup {
				w.fatalf("ListRecords over %s: %s listed twice", pc.desc, id)
			}
			got[id] = r.GetFields()["name"].GetStringValue()
		}
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return got
		}
	}
	w.fatalf("ListRecords over %s: more than 1000 pages", pc.desc)
	return nil
}

// checkAll lists every environment fully and compares it with its model;
// an id listed in one environment but held by another's model only (and
// not this one's) is a leak.
func (w *propWorld) checkAll() {
	w.t.Helper()
	for _, e := range w.envs {
		pc := w.route(e)
		w.op = "full list of " + pc.desc
		got := w.listAll(e, pc, int32(1+w.rng.IntN(7)))
		for id := range got {
			if _, ok := e.model[id]; ok {
				continue
			}
			for _, o := range w.envs {
				if _, ok := o.model[id]; ok && o != e {
					w.fatalf("%s lists %s, a record of %s only", e.name, id, o.name)
				}
			}
		}
		if !dataMapsEqual(got, e.model) {
			w.fatalf("%s lists %v, want %v", e.name, got, e.model)
		}
	}
}

// TestIsolationProperty runs a seeded random sequence of record operations
// over environments of one organization on every engine of one server
// (memory, sqlite, postgres when ENVPLANE_TEST_POSTGRES_URL is set, turso
// on a database brought with tursodb), each naming its environment by a
// random route over a random protocol, and checks every answer against a
// model of each environment: nothing written in one is ever seen, changed
// or deleted through another, whichever way it is named, even when the
// same client-chosen id lives in several.
func TestIsolationProperty(t *testing.T) {
	t.Parallel()
	tursoURL := apptest.StartTursodb(t) // before the server, so it stops after it
	srv, pgURL := dataServer(t)
	admin := srv.Client(apptest.ConnectProto)
	_, port, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	w := &propWorld{t: t, srv: srv, rng: rand.New(rand.NewPCG(propSeed1, propSeed2)), port: port, clients: map[string]dataClient{}}
	t.Logf("seed (%d, %d)", propSeed1, propSeed2)

	org := createOrg(t, admin, "prop")
	engines := []string{"memory", "sqlite", "postgres", "turso"}
	if pgURL == "" {
		engines = slices.DeleteFunc(engines, func(s string) bool { return s == "postgres" })
		t.Logf("%s is not set: no postgres environment, the property runs on %q", apptest.PostgresURLVar, engines)
	}
	for _, engine := range engines {
		var e *environmentv1.Environment
		if engine == "turso" {
			e = createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: engine, Driver: "turso", DatabaseUrl: tursoURL, DatabaseSecret: "any",
			})
			if e.GetStatus() != "active" {
				t.Fatalf("created turso = %v, want active", e)
			}
		} else {
			e = dataEnv(t, admin, pgURL, org, engine, engine)
		}
		e = updateEnv(t, admin, &environmentv1.UpdateEnvironmentRequest{Id: e.GetId(), Hostname: proto.String(engine + ".prop.test")})
		dataDefine(t, srv, e.GetId(), "contact", dataField("name", "text", dataRequired))
		w.envs = append(w.envs, &propEnv{name: engine, env: e, model: map[string]string{}})
	}
	_, w.session = srv.MintToken(t, &accessv1.CreateTokenRequest{Name: "session", OrganizationId: org.GetId(), Role: auth.RoleEditor})
	_, w.member = srv.MintToken(t, &accessv1.CreateTokenRequest{Name: "member", OrganizationId: org.GetId(), Role: auth.RoleEditor})

	ctx := t.Context()
	start := time.Now()
	counts := map[string]int{}
	for w.step = 1; w.step <= propSteps; w.step++ {
		if time.Since(start) > propBudget {
			t.Logf("stopped after %d steps: the %s budget is spent", w.step-1, propBudget)
			break
		}
		e := w.envs[w.rng.IntN(len(w.envs))]
		pc := w.route(e)
		kind := []string{"create", "create", "update", "delete", "get", "get", "list"}[w.rng.IntN(7)]
		name := fmt.Sprintf("n%d-%s", w.step, e.name)
		switch kind {
		case "create":
			rec := map[string]any{"name": name}
			id := ""
			switch w.rng.IntN(4) {
			case 0:
				// The server chooses.
			case 1:
				id = fmt.Sprintf("own-%d", w.rng.IntN(100000))
			default:
				// An id of another environment's, or of a small pool
				// every environment draws from: the same id in several.
				id = w.pickID(e)
				if w.rng.IntN(2) == 0 {
					id = fmt.Sprintf("shared-%d", w.rng.IntN(6))
				}
			}
			if id != "" {
				rec["id"] = id
			}
			w.op = fmt.Sprintf("create %q in %s", id, pc.desc)
			resp, err := pc.c.CreateRecord(ctx, propReq(pc, &datav1.CreateRecordRequest{EnvironmentId: pc.envID, Object: "contact", Record: dataRec(rec)}))
			if _, exists := e.model[id]; id != "" && exists {
				if !apptest.WantError(t, err, connect.CodeAlreadyExists, data.ReasonRecordExists) {
					w.fatalf("create of an id %s holds: %v", e.name, err)
				}
				counts["create (exists)"]++
				break
			}
			if err != nil {
				w.fatalf("CreateRecord: %v", err)
			}
			w.reached(e, pc, resp.Header().Get(apptest.HeaderEnvironmentID))
			got := dataID(resp.Msg.GetRecord())
			if id != "" && got != id {
				w.fatalf("created id %q, want %q", got, id)
			}
			if _, exists := e.model[got]; exists {
				w.fatalf("the server chose %q, an id %s holds already", got, e.name)
			}
			e.model[got] = name
			counts["create"]++
		case "update", "delete", "get":
			id := w.pickID(e)
			_, own := e.model[id]
			w.op = fmt.Sprintf("%s %q in %s", kind, id, pc.desc)
			var err error
			var h string
			switch kind {
			case "update":
				var resp *connect.Response[datav1.UpdateRecordResponse]
				resp, err = pc.c.UpdateRecord(ctx, propReq(pc, &datav1.UpdateRecordRequest{EnvironmentId: pc.envID, Object: "contact", Id: id,
					Record: dataRec(map[string]any{"name": name})}))
				if err == nil {
					h = resp.Header().Get(apptest.HeaderEnvironmentID)
					if got := resp.Msg.GetRecord().GetFields()["name"].GetStringValue(); got != name || dataID(resp.Msg.GetRecord()) != id {
						w.fatalf("updated record = %v, want id %s name %s", resp.Msg.GetRecord(), id, name)
					}
				}
			case "delete":
				var resp *connect.Response[datav1.DeleteRecordResponse]
				resp, err = pc.c.DeleteRecord(ctx, propReq(pc, &datav1.DeleteRecordRequest{EnvironmentId: pc.envID, Object: "contact", Id: id}))
				if err == nil {
					h = resp.Header().Get(apptest.HeaderEnvironmentID)
				}
			case "get":
				var resp *connect.Response[datav1.GetRecordResponse]
				resp, err = pc.c.GetRecord(ctx, propReq(pc, &datav1.GetRecordRequest{EnvironmentId: pc.envID, Object: "contact", Id: id}))
				if err == nil {
					h = resp.Header().Get(apptest.HeaderEnvironmentID)
					if got := propName(resp.Msg); got != e.model[id] || dataID(resp.Msg.GetRecord()) != id {
						w.fatalf("got record %v, want id %s name %q", resp.Msg.GetRecord(), id, e.model[id])
					}
				}
			}
			if !own {
				w.wantMissing(pc, kind, err)
				counts[kind+" (missing)"]++
				break
			}
			if err != nil {
				w.fatalf("%s: %v", kind, err)
			}
			w.reached(e, pc, h)
			switch kind {
			case "update":
				e.model[id] = name
			case "delete":
				delete(e.model, id)
			}
			counts[kind]++
		case "list":
			w.op = "list in " + pc.desc
			got := w.listAll(e, pc, int32(1+w.rng.IntN(10)))
			if !dataMapsEqual(got, e.model) {
				w.fatalf("%s lists %v, want %v", e.name, got, e.model)
			}
			counts["list"]++
		}
		if w.step%10 == 0 {
			w.checkAll()
		}
	}
	w.step, w.op = propSteps+1, "final check"
	w.checkAll()

	// The sequence must have exercised what it is about.
	shared := 0
	seen := map[string]int{}
	for _, e := range w.envs {
		for id := range e.model {
			seen[id]++
		}
	}
	for _, n := range seen {
		if n > 1 {
			shared++
		}
	}
	t.Logf("seed (%d, %d): %d steps in %s on %d environments; operations %v; %d ids held by several environments at the end",
		propSeed1, propSeed2, w.step-1, time.Since(start).Round(time.Millisecond), len(w.envs), counts, shared)
	for _, k := range []string{"create", "update", "delete", "get", "get (missing)", "list"} {
		if counts[k] == 0 {
			t.Errorf("seed (%d, %d): the sequence made no %q operation", propSeed1, propSeed2, k)
		}
	}
}
