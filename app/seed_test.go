package app_test

import (
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/auth"
)

// TestSeedScenario walks the getting-started scenario end to end over REST,
// Connect and gRPC, each against a server of its own: organization acme
// with dev and staging (sqlite), contact defined in both, Alice written to
// dev and Bob to staging by X-Environment-Id, and then each environment
// listed through every way of naming it: the header, dev's hostname, the
// environment_id field (the /api/v1/environments/{id}/… path over REST),
// the session's active environment and the organization's default.
func TestSeedScenario(t *testing.T) {
	t.Parallel()
	for _, p := range []apptest.Protocol{apptest.REST, apptest.ConnectJSON, apptest.GRPC} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			seedScenario(t, p)
		})
	}
}

func seedScenario(t *testing.T, p apptest.Protocol) {
	ctx := t.Context()
	env := apptest.Start(t)
	admin := env.Client(p)
	token := env.AdminToken()

	org := createOrg(t, admin, "acme")
	dev := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
	staging := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "staging", Driver: "sqlite"})
	for _, e := range []*environmentv1.Environment{dev, staging} {
		if e.GetStatus() != "active" || e.GetDriver() != "sqlite" {
			t.Fatalf("created %s = %v, want an active sqlite environment", e.GetSlug(), e)
		}
	}
	if !dev.GetIsDefault() || staging.GetIsDefault() {
		t.Fatalf("dev is_default %v, staging is_default %v: want dev the organization's default", dev.GetIsDefault(), staging.GetIsDefault())
	}
	names := map[string]string{dev.GetId(): "dev", staging.GetId(): "staging"}

	// contact, defined in both over p.
	for _, e := range []*environmentv1.Environment{dev, staging} {
		_, err := env.MetadataClient(p, token).PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: e.GetId(), Name: "contact",
			Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{dataField("name", "text")}},
		}))
		if err != nil {
			t.Fatalf("PutObject(contact) in %s: %v", e.GetSlug(), err)
		}
	}

	// list lists contact through c with the request's own hints and fails
	// t unless it holds exactly want (names) and was answered by wantEnv.
	list := func(t *testing.T, how string, c dataClient, req *connect.Request[datav1.ListRecordsRequest], wantEnv string, want ...string) {
		t.Helper()
		resp, err := c.ListRecords(ctx, req)
		if err != nil {
			t.Fatalf("ListRecords %s: %v", how, err)
		}
		if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != wantEnv {
			t.Errorf("ListRecords %s: X-Environment-Id = %q (%s), want %s", how, h, names[h], names[wantEnv])
		}
		var got []string
		for _, r := range resp.Msg.GetRecords() {
			got = append(got, r.GetFields()["name"].GetStringValue())
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("ListRecords %s = %q, want %q", how, got, want)
		}
		if resp.Msg.GetNextPageToken() != "" {
			t.Errorf("ListRecords %s: next_page_token %q, want none", how, resp.Msg.GetNextPageToken())
		}
	}
	listReq := func(envID string) *connect.Request[datav1.ListRecordsRequest] {
		return connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: envID, Object: "contact"})
	}
	byHeader := func(e *environmentv1.Environment) dataClient {
		return env.DataClient(p, token, apptest.WithHeader(apptest.HeaderEnvironmentID, e.GetId()))
	}

	// Alice in dev, Bob in staging, each named by X-Environment-Id.
	for _, w := range []struct {
		e    *environmentv1.Environment
		name string
	}{{dev, "Alice"}, {staging, "Bob"}} {
		resp, err := byHeader(w.e).CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{
			Object: "contact", Record: dataRec(map[string]any{"name": w.name}),
		}))
		if err != nil {
			t.Fatalf("CreateRecord(%s) in %s: %v", w.name, w.e.GetSlug(), err)
		}
		if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != w.e.GetId() {
			t.Errorf("CreateRecord(%s): X-Environment-Id = %q, want %s's", w.name, h, w.e.GetSlug())
		}
		if got := resp.Msg.GetRecord().GetFields()["name"].GetStringValue(); got != w.name || dataID(resp.Msg.GetRecord()) == "" {
			t.Errorf("CreateRecord(%s) = %v, want name %s and an id", w.name, resp.Msg.GetRecord(), w.name)
		}
	}

	t.Run("by header", func(t *testing.T) {
		list(t, "in dev by header", byHeader(dev), listReq(""), dev.GetId(), "Alice")
		list(t, "in staging by header", byHeader(staging), listReq(""), staging.GetId(), "Bob")
	})

	t.Run("by hostname", func(t *testing.T) {
		dev := updateEnv(t, admin, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Hostname: proto.String("api.acme.test")})
		if dev.GetHostname() != "api.acme.test" {
			t.Fatalf("hostname = %q, want api.acme.test", dev.GetHostname())
		}
		list(t, "with Host api.acme.test", env.DataClient(p, token, apptest.WithHost("api.acme.test")), listReq(""), dev.GetId(), "Alice")
		// A single call's Host works as well.
		req := listReq("")
		req.Header().Set("Host", "api.acme.test")
		list(t, "with a call's Host api.acme.test", env.DataClient(p, token), req, dev.GetId(), "Alice")
	})

	t.Run("by environment_id", func(t *testing.T) {
		c := env.DataClient(p, token)
		list(t, "in dev by environment_id", c, listReq(dev.GetId()), dev.GetId(), "Alice")
		list(t, "in staging by environment_id", c, listReq(staging.GetId()), staging.GetId(), "Bob")
	})

	t.Run("by session", func(t *testing.T) {
		_, secret := env.MintToken(t, &accessv1.CreateTokenRequest{Name: "session", OrganizationId: org.GetId(), Role: auth.RoleEditor})
		ec := env.ClientWithToken(p, secret)
		c := env.DataClient(p, secret)
		for _, e := range []*environmentv1.Environment{staging, dev} {
			resp, err := ec.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: e.GetId()}))
			if err != nil {
				t.Fatalf("ActivateEnvironment(%s): %v", e.GetSlug(), err)
			}
			if resp.Msg.GetEnvironment().GetId() != e.GetId() {
				t.Errorf("ActivateEnvironment(%s) = %v", e.GetSlug(), resp.Msg.GetEnvironment())
			}
			want := map[string]string{dev.GetId(): "Alice", staging.GetId(): "Bob"}[e.GetId()]
			list(t, "with "+e.GetSlug()+" active", c, listReq(""), e.GetId(), want)
		}
	})

	t.Run("by organization default", func(t *testing.T) {
		_, secret := env.MintToken(t, &accessv1.CreateTokenRequest{Name: "no session", OrganizationId: org.GetId(), Role: auth.RoleEditor})
		list(t, "by the organization default", env.DataClient(p, secret), listReq(""), dev.GetId(), "Alice")
	})
}
