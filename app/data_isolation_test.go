package app_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/query"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/services/data"
)

// dataIsoRoute is one way a data call names (or does not name) its
// environment.
type dataIsoRoute struct {
	name   string
	token  string // secret
	envID  string // the environment_id field, or the /api/v1/environments/{id}/… path
	host   string // Host / :authority
	header string // X-Environment-Id
}

// dataIsoRequest builds a request for msg carrying r's hints; msg's
// environment_id must already be r.envID.
func dataIsoRequest[T any](r dataIsoRoute, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if r.host != "" {
		req.Header().Set("Host", r.host)
	}
	if r.header != "" {
		req.Header().Set(apptest.HeaderEnvironmentID, r.header)
	}
	return req
}

// dataIsoWorld is one engine's fixture of the isolation test: organization
// iso-<engine> with dev (its default, hostname api.iso-<engine>.test) and
// staging, each defining contact; organization other-<engine> with one
// environment; and what each environment must hold (ids → name).
type dataIsoWorld struct {
	env          *apptest.Env
	engine       string
	admin        client
	org          *environmentv1.Organization
	dev, staging *environmentv1.Environment
	other        *environmentv1.Environment
	port         string
	tokens       map[string]string // role name → secret
	model        map[string]map[string]string
	clients      map[string]dataClient
	stored       map[string]func(testing.TB, string) []string // environment → its database's ids (nil: memory)
}

func (w *dataIsoWorld) client(p apptest.Protocol, token string) dataClient {
	key := string(p) + " " + token
	if c, ok := w.clients[key]; ok {
		return c
	}
	c := w.env.DataClient(p, token)
	w.clients[key] = c
	return c
}

func (w *dataIsoWorld) envs() []*environmentv1.Environment {
	return []*environmentv1.Environment{w.dev, w.staging}
}

func (w *dataIsoWorld) name(envID string) string {
	if envID == w.dev.GetId() {
		return "dev"
	}
	return "staging"
}

func (w *dataIsoWorld) otherOf(e *environmentv1.Environment) *environmentv1.Environment {
	if e.GetId() == w.dev.GetId() {
		return w.staging
	}
	return w.dev
}

// routes returns every way of reaching e with the admin and member tokens,
// except the organization default, which reaches dev only (see
// withDefault).
func (w *dataIsoWorld) routes(e *environmentv1.Environment) []dataIsoRoute {
	id := e.GetId()
	sess := w.tokens["session-dev"]
	if id == w.staging.GetId() {
		sess = w.tokens["session-staging"]
	}
	return []dataIsoRoute{
		{name: "path/field", token: w.env.AdminToken(), envID: id},
		{name: "host", token: w.env.AdminToken(), host: strings.ToUpper(e.GetHostname()) + ":" + w.port},
		{name: "header", token: w.env.AdminToken(), header: id},
		{name: "session", token: sess},
		{name: "member by header", token: w.tokens["member"], header: id},
	}
}

// defaultRoute is the organization default: no hint, a member token.
func (w *dataIsoWorld) defaultRoute() dataIsoRoute {
	return dataIsoRoute{name: "org default", token: w.tokens["member"]}
}

// check fails t unless every environment holds exactly its model: listed
// through each of its routes plus extra, and read straight from its
// database.
func (w *dataIsoWorld) check(t *testing.T, p apptest.Protocol, extra map[string][]dataIsoRoute) {
	t.Helper()
	routes := map[string][]dataIsoRoute{}
	for _, e := range w.envs() {
		routes[e.GetId()] = append(w.routes(e), extra[e.GetId()]...)
	}
	w.checkVia(t, p, routes)
}

// checkVia fails t unless every environment holds exactly its model:
// listed through the routes given for it, and read straight from its
// database.
func (w *dataIsoWorld) checkVia(t *testing.T, p apptest.Protocol, routes map[string][]dataIsoRoute) {
	t.Helper()
	for _, e := range w.envs() {
		for _, r := range routes[e.GetId()] {
			req := &datav1.ListRecordsRequest{EnvironmentId: r.envID, Object: "contact", PageSize: 1000}
			resp, err := w.client(p, r.token).ListRecords(t.Context(), dataIsoRequest(r, req))
			if err != nil {
				t.Fatalf("ListRecords in %s over %s: %v", w.name(e.GetId()), r.name, err)
			}
			if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != e.GetId() {
				t.Errorf("ListRecords over %s: X-Environment-Id = %q, want %s's", r.name, h, w.name(e.GetId()))
			}
			got := map[string]string{}
			for _, rec := range resp.Msg.GetRecords() {
				got[dataID(rec)] = rec.GetFields()["name"].GetStringValue()
			}
			if !dataMapsEqual(got, w.model[e.GetId()]) {
				t.Errorf("%s listed over %s holds %v, want %v", w.name(e.GetId()), r.name, got, w.model[e.GetId()])
			}
		}
		if read := w.stored[e.GetId()]; read != nil {
			stored := read(t, "contact")
			sort.Strings(stored)
			if want := w.modelIDs(e.GetId()); !slices.Equal(stored, want) {
				t.Errorf("%s's database holds %q, want %q", w.name(e.GetId()), stored, want)
			}
		}
	}
}

func (w *dataIsoWorld) modelIDs(envID string) []string {
	out := []string{}
	for id := range w.model[envID] {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func dataMapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// dataIsoCalls are the six RPCs over route r, each reaching record id of
// contact; writes leave their mark in name.
func dataIsoCalls(c dataClient, r dataIsoRoute, id, name string) []call {
	return []call{
		{"CreateRecord", func(ctx context.Context) error {
			return errOf(c.CreateRecord(ctx, dataIsoRequest(r, &datav1.CreateRecordRequest{EnvironmentId: r.envID, Object: "contact",
				Record: dataRec(map[string]any{"id": id + "-new", "name": name})})))
		}},
		{"GetRecord", func(ctx context.Context) error {
			return errOf(c.GetRecord(ctx, dataIsoRequest(r, &datav1.GetRecordRequest{EnvironmentId: r.envID, Object: "contact", Id: id})))
		}},
		{"ListRecords", func(ctx context.Context) error {
			return errOf(c.ListRecords(ctx, dataIsoRequest(r, &datav1.ListRecordsRequest{EnvironmentId: r.envID, Object: "contact"})))
		}},
		{"UpdateRecord", func(ctx context.Context) error {
			return errOf(c.UpdateRecord(ctx, dataIsoRequest(r, &datav1.UpdateRecordRequest{EnvironmentId: r.envID, Object: "contact", Id: id,
				Record: dataRec(map[string]any{"name": name})})))
		}},
		{"DeleteRecord", func(ctx context.Context) error {
			return errOf(c.DeleteRecord(ctx, dataIsoRequest(r, &datav1.DeleteRecordRequest{EnvironmentId: r.envID, Object: "contact", Id: id})))
		}},
		{"BatchWriteRecords", func(ctx context.Context) error {
			return errOf(c.BatchWriteRecords(ctx, dataIsoRequest(r, &datav1.BatchWriteRecordsRequest{EnvironmentId: r.envID, Writes: []*datav1.RecordWrite{
				dataBatchCreate("contact", map[string]any{"name": name}),
				dataBatchUpdate("contact", id, "", map[string]any{"name": name}),
				dataBatchDelete("contact", id, ""),
			}})))
		}},
	}
}

func newDataIsoWorld(t *testing.T, env *apptest.Env, pgURL, engine string) *dataIsoWorld {
	t.Helper()
	_, port, err := net.SplitHostPort(env.Addr)
	if err != nil {
		t.Fatal(err)
	}
	w := &dataIsoWorld{env: env, engine: engine, admin: env.Client(apptest.ConnectProto), port: port,
		tokens: map[string]string{}, model: map[string]map[string]string{}, clients: map[string]dataClient{},
		stored: map[string]func(testing.TB, string) []string{}}
	w.org = createOrg(t, w.admin, "iso-"+engine)
	w.dev = dataEnv(t, w.admin, pgURL, w.org, "dev", engine)
	w.staging = dataEnv(t, w.admin, pgURL, w.org, "staging", engine)
	if !w.dev.GetIsDefault() || w.staging.GetIsDefault() {
		t.Fatalf("dev is_default %v, staging is_default %v: want dev the default", w.dev.GetIsDefault(), w.staging.GetIsDefault())
	}
	// dev answers at a hostname of the user's, staging at its generated one.
	w.dev = updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.dev.GetId(), Hostname: proto.String("api.iso-" + engine + ".test")})
	otherOrg := createOrg(t, w.admin, "other-"+engine)
	w.other = dataEnv(t, w.admin, pgURL, otherOrg, "dev", "memory")
	// Definitions differ too: dev's contact has a phone, and only dev
	// defines lead.
	dataDefine(t, env, w.dev.GetId(), "lead", dataField("name", "text"))
	for _, e := range []*environmentv1.Environment{w.dev, w.staging, w.other} {
		fields := []*metadatav1.Field{dataField("name", "text", dataRequired)}
		if e == w.dev {
			fields = append(fields, dataField("phone", "text"))
		}
		dataDefine(t, env, e.GetId(), "contact", fields...)
		w.model[e.GetId()] = map[string]string{}
		w.stored[e.GetId()] = env.StoredRecords(t, e)
	}
	mint := func(name, orgID, role string, envIDs ...string) string {
		_, secret := env.MintToken(t, &accessv1.CreateTokenRequest{Name: name, OrganizationId: orgID, Role: role, EnvironmentIds: envIDs})
		w.tokens[name] = secret
		return secret
	}
	mint("member", w.org.GetId(), auth.RoleEditor)
	for _, e := range w.envs() {
		secret := mint("session-"+w.name(e.GetId()), w.org.GetId(), auth.RoleEditor)
		if _, err := env.ClientWithToken(apptest.ConnectProto, secret).ActivateEnvironment(t.Context(),
			connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: e.GetId()})); err != nil {
			t.Fatalf("ActivateEnvironment(%s): %v", w.name(e.GetId()), err)
		}
	}
	mint("limited", w.org.GetId(), auth.RoleEditor, w.staging.GetId())
	mint("other", otherOrg.GetId(), auth.RoleAdmin)
	return w
}

// TestDataIsolation proves that a record written in one environment is
// never seen, changed or deleted through another, however the environment
// is named, on every engine and over every protocol; that an environment
// of another organization looks missing; and that a token limited to one
// environment cannot reach the other.
func TestDataIsolation(t *testing.T) {
	t.Parallel()
	env, pgURL := dataServer(t)
	// Every protocol on memory; on each SQL engine REST (the only one with
	// a path of its own) and a share of the others, so that every protocol
	// meets a SQL engine too.
	for _, tc := range []struct {
		engine    string
		protocols []apptest.Protocol
	}{
		{"memory", apptest.Protocols},
		{"sqlite", []apptest.Protocol{apptest.REST, apptest.ConnectJSON, apptest.GRPCWeb}},
		{"postgres", []apptest.Protocol{apptest.REST, apptest.ConnectProto, apptest.GRPC}},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			t.Parallel()
			w := newDataIsoWorld(t, env, pgURL, tc.engine)
			for _, p := range tc.protocols {
				t.Run(string(p), func(t *testing.T) { w.run(t, p) })
			}
		})
	}
}

// run writes through every route of both environments over p, checking
// every environment after each step.
func (w *dataIsoWorld) run(t *testing.T, p apptest.Protocol) {
	ctx := t.Context()
	defaults := map[string][]dataIsoRoute{w.dev.GetId(): {w.defaultRoute()}}
	written := map[string][]string{} // environment → ids written over p

	write := func(t *testing.T, e *environmentv1.Environment, r dataIsoRoute) {
		t.Helper()
		c := w.client(p, r.token)
		name := fmt.Sprintf("%s via %s in %s", p, r.name, w.name(e.GetId()))
		// The same client-chosen id in both environments: two records.
		sharedID := strings.NewReplacer("+", "-", " ", "-", "/", "-").Replace(fmt.Sprintf("shared-%s-%s", p, r.name))
		for _, in := range []map[string]any{{"name": name}, {"id": sharedID, "name": name}} {
			resp, err := c.CreateRecord(ctx, dataIsoRequest(r, &datav1.CreateRecordRequest{EnvironmentId: r.envID, Object: "contact", Record: dataRec(in)}))
			if err != nil {
				t.Fatalf("CreateRecord in %s over %s: %v", w.name(e.GetId()), r.name, err)
			}
			if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != e.GetId() {
				t.Fatalf("CreateRecord over %s reached %q, want %s (%s)", r.name, h, w.name(e.GetId()), e.GetId())
			}
			id := dataID(resp.Msg.GetRecord())
			w.model[e.GetId()][id] = name
			written[e.GetId()] = append(written[e.GetId()], id)
		}
	}

	// Alice in dev, Bob in staging, through every route; each time both
	// environments are checked through all of theirs.
	for i := range w.routes(w.dev) {
		for _, e := range w.envs() {
			r := w.routes(e)[i]
			t.Run("write "+w.name(e.GetId())+" via "+r.name, func(t *testing.T) {
				write(t, e, r)
				w.checkVia(t, p, map[string][]dataIsoRoute{w.dev.GetId(): {w.routes(w.dev)[i]}, w.staging.GetId(): {w.routes(w.staging)[i]}})
			})
		}
	}
	t.Run("write via the organization default", func(t *testing.T) {
		write(t, w.dev, w.defaultRoute())
		// Every environment through every route.
		w.check(t, p, defaults)
		// staging becomes the default: the same route now reaches it alone.
		updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.staging.GetId(), IsDefault: proto.Bool(true)})
		defer updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: w.dev.GetId(), IsDefault: proto.Bool(true)})
		write(t, w.staging, w.defaultRoute())
		w.check(t, p, map[string][]dataIsoRoute{w.staging.GetId(): {w.defaultRoute()}})
	})

	// A record of one environment, named through any route of the other,
	// is missing: not read, changed or deleted.
	t.Run("records of the other environment are missing", func(t *testing.T) {
		for _, e := range w.envs() {
			foreign := written[w.otherOf(e).GetId()]
			if len(foreign) == 0 {
				t.Fatal("nothing written in the other environment")
			}
			id := foreign[0]
			for _, r := range append(w.routes(e), dataIsoExtraDefault(w, e)...) {
				for _, cl := range dataIsoCalls(w.client(p, r.token), r, id, "overwritten via "+w.name(e.GetId())) {
					err := cl.do(ctx)
					switch cl.name {
					case "CreateRecord", "ListRecords":
						// They reach e itself; undo the create.
						if err != nil {
							t.Errorf("%s in %s over %s: %v", cl.name, w.name(e.GetId()), r.name, err)
						}
					case "BatchWriteRecords":
						if apptest.WantError(t, err, connect.CodeNotFound, data.ReasonRecordNotFound) {
							dataWantIndex(t, err, 1)
						} else {
							t.Logf("%s in %s over %s", cl.name, w.name(e.GetId()), r.name)
						}
					default:
						if !apptest.WantError(t, err, connect.CodeNotFound, data.ReasonRecordNotFound) {
							t.Logf("%s of %s's record in %s over %s", cl.name, w.name(w.otherOf(e).GetId()), w.name(e.GetId()), r.name)
						}
					}
				}
				// The create above used id+"-new" in e: remove it again.
				if _, err := w.client(p, w.env.AdminToken()).DeleteRecord(ctx, connect.NewRequest(&datav1.DeleteRecordRequest{
					EnvironmentId: e.GetId(), Object: "contact", Id: id + "-new",
				})); err != nil {
					t.Fatalf("clean up %s-new in %s: %v", id, w.name(e.GetId()), err)
				}
			}
		}
		w.check(t, p, defaults)
	})

	// Each environment's records follow its own definitions.
	t.Run("definitions of the other environment do not apply", func(t *testing.T) {
		c := w.client(p, w.env.AdminToken())
		for _, r := range w.routes(w.staging) {
			c := w.client(p, r.token)
			err := errOf(c.CreateRecord(ctx, dataIsoRequest(r, &datav1.CreateRecordRequest{EnvironmentId: r.envID, Object: "contact",
				Record: dataRec(map[string]any{"name": "with a phone", "phone": "555"})})))
			if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
				dataWantViolations(t, err, "record.phone")
			}
			err = errOf(c.ListRecords(ctx, dataIsoRequest(r, &datav1.ListRecordsRequest{EnvironmentId: r.envID, Object: "lead"})))
			apptest.WantError(t, err, connect.CodeNotFound, data.ReasonObjectNotDefined)
			err = errOf(c.ListRecords(ctx, dataIsoRequest(r, &datav1.ListRecordsRequest{EnvironmentId: r.envID, Object: "contact", Filter: `phone = "555"`})))
			apptest.WantError(t, err, connect.CodeInvalidArgument, query.ReasonUnknownField)
		}
		// In dev both hold.
		lead := dataCreate(t, c, w.dev.GetId(), "lead", map[string]any{"name": "dev only"})
		if _, err := c.DeleteRecord(ctx, connect.NewRequest(&datav1.DeleteRecordRequest{EnvironmentId: w.dev.GetId(), Object: "lead", Id: dataID(lead)})); err != nil {
			t.Errorf("DeleteRecord(lead) in dev: %v", err)
		}
		w.check(t, p, defaults)
	})

	t.Run("page tokens stay in their environment", func(t *testing.T) {
		c := w.client(p, w.env.AdminToken())
		resp, err := c.ListRecords(ctx, connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: w.dev.GetId(), Object: "contact", PageSize: 1}))
		if err != nil || resp.Msg.GetNextPageToken() == "" {
			t.Fatalf("ListRecords in dev: %v, token %q", err, resp.Msg.GetNextPageToken())
		}
		_, err = c.ListRecords(ctx, connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: w.staging.GetId(), Object: "contact", PageSize: 1,
			PageToken: resp.Msg.GetNextPageToken()}))
		apptest.WantError(t, err, connect.CodeInvalidArgument, query.ReasonInvalidPageToken)
	})

	// Another organization's token: dev looks missing however it is named
	// (its custom hostname, outside the platform's namespace, is to the
	// other organization what any unregistered name is: no hint, so the
	// calls go to the other organization's own default), and its own
	// environment shows none of dev's records.
	t.Run("another organization", func(t *testing.T) {
		other := w.tokens["other"]
		for _, r := range []dataIsoRoute{
			{name: "path/field", token: other, envID: w.dev.GetId()},
			{name: "header", token: other, header: w.dev.GetId()},
			{name: "host of staging (generated)", token: other, host: w.staging.GetHostname()},
			{name: "host of staging, header of its own", token: other, host: w.staging.GetHostname(), header: w.other.GetId()},
			{name: "custom host of dev, header of dev", token: other, host: strings.ToUpper(w.dev.GetHostname()) + ":" + w.port, header: w.dev.GetId()},
		} {
			for _, cl := range dataIsoCalls(w.client(p, r.token), r, written[w.dev.GetId()][0], "taken over") {
				if !apptest.WantError(t, cl.do(ctx), connect.CodeNotFound, resolve.ReasonEnvironmentNotFound) {
					t.Logf("%s over %s", cl.name, r.name)
				}
			}
		}
		for _, r := range []dataIsoRoute{
			{name: "custom host of dev", token: other, host: w.dev.GetHostname()},
			{name: "custom host of dev, upper case with port", token: other, host: strings.ToUpper(w.dev.GetHostname()) + ":" + w.port},
		} {
			c := w.client(p, r.token)
			resp, err := c.ListRecords(ctx, dataIsoRequest(r, &datav1.ListRecordsRequest{Object: "contact"}))
			if err != nil {
				t.Fatalf("ListRecords over %s: %v; want the other organization's own environment", r.name, err)
			}
			if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != w.other.GetId() {
				t.Errorf("ListRecords over %s resolved %q, want the other organization's own %s", r.name, h, w.other.GetId())
			}
			for _, rec := range resp.Msg.GetRecords() {
				if slices.Contains(written[w.dev.GetId()], dataID(rec)) {
					t.Errorf("over %s the other organization sees dev's record %s", r.name, dataID(rec))
				}
			}
			err = errOf(c.GetRecord(ctx, dataIsoRequest(r, &datav1.GetRecordRequest{Object: "contact", Id: written[w.dev.GetId()][0]})))
			apptest.WantError(t, err, connect.CodeNotFound, data.ReasonRecordNotFound)
		}
		got := dataAll(t, w.client(p, other), "", "contact")
		if len(got) != 0 {
			t.Errorf("the other organization's environment lists %q", dataIDs(got))
		}
		w.check(t, p, defaults)
	})

	// A token limited to staging: dev is forbidden however it is named,
	// staging is open.
	t.Run("token limited to staging", func(t *testing.T) {
		limited := w.tokens["limited"]
		for _, r := range []dataIsoRoute{
			{name: "path/field", token: limited, envID: w.dev.GetId()},
			{name: "header", token: limited, header: w.dev.GetId()},
			{name: "host", token: limited, host: strings.ToUpper(w.dev.GetHostname()) + ":" + w.port},
			{name: "organization default", token: limited},
		} {
			for _, cl := range dataIsoCalls(w.client(p, r.token), r, written[w.dev.GetId()][0], "taken over") {
				if !apptest.WantError(t, cl.do(ctx), connect.CodePermissionDenied, auth.ReasonEnvironmentNotAllowed) {
					t.Logf("%s over %s", cl.name, r.name)
				}
			}
		}
		c := w.client(p, limited)
		if got := dataAll(t, c, w.staging.GetId(), "contact"); len(got) != len(w.model[w.staging.GetId()]) {
			t.Errorf("limited token lists %d records in staging, want %d", len(got), len(w.model[w.staging.GetId()]))
		}
		w.check(t, p, defaults)
	})
}

// dataIsoExtraDefault is the organization-default route when it reaches e.
func dataIsoExtraDefault(w *dataIsoWorld, e *environmentv1.Environment) []dataIsoRoute {
	if e.GetId() == w.dev.GetId() {
		return []dataIsoRoute{w.defaultRoute()}
	}
	return nil
}
