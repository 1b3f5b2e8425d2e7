package app_test

import (
	"os"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/apierr"
)

// dataClient is the DataService client the data tests talk through.
type dataClient = datav1connect.DataServiceClient

// dataSystemFields are the fields the server manages on every record.
var dataSystemFields = []string{"id", "created_at", "updated_at", "etag"}

// dataServer starts a server that can create environments of every engine:
// postgres ones on the cluster of ENVPLANE_TEST_POSTGRES_URL when it is set
// (returned, "" otherwise).
func dataServer(t *testing.T) (*apptest.Env, string) {
	t.Helper()
	pgURL := os.Getenv(apptest.PostgresURLVar)
	if pgURL == "" {
		return apptest.Start(t), ""
	}
	return apptest.Start(t, "--postgres-admin-url="+pgURL), pgURL
}

// dataSuiteEngine is the engine the per-protocol suites of one protocol
// run on, so that every engine serves some protocol: postgres falls back
// to sqlite when the server has no cluster.
func dataSuiteEngine(p apptest.Protocol, pgURL string) string {
	engine := map[apptest.Protocol]string{
		apptest.ConnectJSON:  "sqlite",
		apptest.ConnectProto: "memory",
		apptest.GRPC:         "postgres",
		apptest.GRPCWeb:      "sqlite",
		apptest.REST:         "postgres",
	}[p]
	if engine == "postgres" && pgURL == "" {
		return "sqlite"
	}
	return engine
}

// dataEnv creates an environment of engine in org (skipping t, naming
// ENVPLANE_TEST_POSTGRES_URL, for postgres when the server has no
// cluster); whatever a postgres environment leaves on the cluster is
// dropped when t ends.
func dataEnv(t *testing.T, admin client, pgURL string, org *environmentv1.Organization, slug, engine string) *environmentv1.Environment {
	t.Helper()
	if engine == "postgres" && pgURL == "" {
		apptest.PostgresURL(t) // skips
	}
	e := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: slug, Driver: engine})
	if e.GetStatus() != "active" {
		t.Fatalf("created %s = %v, want active", slug, e)
	}
	if engine == "postgres" {
		apptest.PostgresEnvironmentCleanup(t, pgURL, e.GetId())
	}
	return e
}

// dataDefine defines object name in an environment with the admin token.
func dataDefine(t *testing.T, env *apptest.Env, environmentID, name string, fields ...*metadatav1.Field) {
	t.Helper()
	_, err := env.MetadataClient(apptest.ConnectProto, env.AdminToken()).PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{
		EnvironmentId: environmentID, Name: name, Object: &metadatav1.ObjectDefinition{Fields: fields},
	}))
	if err != nil {
		t.Fatalf("PutObject(%s): %v", name, err)
	}
}

// notesEnv makes an organization orgSlug with one sqlite environment whose
// object note has a text field, and returns that environment's id and an
// admin data client (Connect).
func notesEnv(t *testing.T, env *apptest.Env, orgSlug string) (string, dataClient) {
	t.Helper()
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, orgSlug)
	e := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
	dataDefine(t, env, e.GetId(), "note", dataField("text", "text"))
	return e.GetId(), env.DataClient(apptest.ConnectProto, env.AdminToken())
}

// dataField builds a field definition of name and type.
func dataField(name, typ string, opts ...func(*metadatav1.Field)) *metadatav1.Field {
	f := &metadatav1.Field{Name: name, Type: typ}
	for _, o := range opts {
		o(f)
	}
	return f
}

func dataRequired(f *metadatav1.Field) { f.Required = true }

func dataUnique(f *metadatav1.Field) { f.Unique = true }

func dataMaxLength(n int32) func(*metadatav1.Field) {
	return func(f *metadatav1.Field) { f.MaxLength = n }
}

func dataOptions(o ...string) func(*metadatav1.Field) {
	return func(f *metadatav1.Field) { f.Options = o }
}

func dataDefault(v any) func(*metadatav1.Field) {
	return func(f *metadatav1.Field) {
		pv, err := structpb.NewValue(v)
		if err != nil {
			panic(err)
		}
		f.DefaultValue = pv
	}
}

// itemFields is the object with a field of every type the record tests
// use.
func dataItemFields() []*metadatav1.Field {
	return []*metadatav1.Field{
		dataField("title", "text", dataRequired, dataMaxLength(20)),
		dataField("count", "integer"),
		dataField("price", "number"),
		dataField("active", "boolean", dataDefault(true)),
		dataField("seen_at", "timestamp"),
		dataField("due", "date"),
		dataField("extra", "json"),
		dataField("status", "select", dataOptions("new", "open", "done"), dataDefault("new")),
		dataField("code", "text", dataUnique),
		dataField("note", "text", dataDefault("-")),
	}
}

// dataItemNames are the fields of itemFields, in order.
var dataItemNames = []string{"title", "count", "price", "active", "seen_at", "due", "extra", "status", "code", "note"}

// rec builds a record from Go values (numbers become JSON numbers).
func dataRec(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// jsonish returns m as a record returns it: numbers as float64, nested
// values as maps and slices.
func dataJSON(m map[string]any) map[string]any { return dataRec(m).AsMap() }

// userFields returns a record's fields without the system fields.
func dataUserFields(s *structpb.Struct) map[string]any {
	m := s.AsMap()
	for _, f := range dataSystemFields {
		delete(m, f)
	}
	return m
}

// recID is a record's id.
func dataID(s *structpb.Struct) string { return s.GetFields()["id"].GetStringValue() }

// recETag is a record's etag.
func dataETag(s *structpb.Struct) string { return s.GetFields()["etag"].GetStringValue() }

// recTime parses a system timestamp of a record.
func dataTime(t *testing.T, s *structpb.Struct, field string) time.Time {
	t.Helper()
	v := s.GetFields()[field].GetStringValue()
	ts, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("%s = %q, not an RFC 3339 timestamp", field, v)
	}
	return ts
}

// wantRecord fails t unless got's fields (system fields aside) are exactly
// want (which must list every field of the object, nil for null) and its
// system fields are all present.
func dataWantRecord(t *testing.T, what string, got *structpb.Struct, want map[string]any) {
	t.Helper()
	if diff := cmp.Diff(dataJSON(want), dataUserFields(got)); diff != "" {
		t.Errorf("%s: record fields (-want +got):\n%s", what, diff)
	}
	for _, f := range dataSystemFields {
		if v, ok := got.GetFields()[f]; !ok || v.GetStringValue() == "" {
			t.Errorf("%s: system field %s = %v, want a non-empty string", what, f, v)
		}
	}
}

// withNulls returns want with every field of names it does not set as nil.
func dataWithNulls(want map[string]any, names []string) map[string]any {
	out := make(map[string]any, len(names))
	for _, n := range names {
		out[n] = nil
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

func dataCreate(t *testing.T, c dataClient, environmentID, object string, r map[string]any) *structpb.Struct {
	t.Helper()
	resp, err := c.CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: environmentID, Object: object, Record: dataRec(r)}))
	if err != nil {
		t.Fatalf("CreateRecord(%s, %v): %v", object, r, err)
	}
	if h := resp.Header().Get(apptest.HeaderEnvironmentID); environmentID != "" && h != environmentID {
		t.Errorf("CreateRecord: X-Environment-Id = %q, want %q", h, environmentID)
	}
	return resp.Msg.GetRecord()
}

func dataGet(t *testing.T, c dataClient, environmentID, object, id string) *structpb.Struct {
	t.Helper()
	resp, err := c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: environmentID, Object: object, Id: id}))
	if err != nil {
		t.Fatalf("GetRecord(%s, %s): %v", object, id, err)
	}
	return resp.Msg.GetRecord()
}

func dataUpdate(t *testing.T, c dataClient, req *datav1.UpdateRecordRequest) *structpb.Struct {
	t.Helper()
	resp, err := c.UpdateRecord(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("UpdateRecord(%s, %s): %v", req.GetObject(), req.GetId(), err)
	}
	return resp.Msg.GetRecord()
}

// dataList walks every page of req (page_size as set) and returns the
// records in order, failing t on an error or a page over its size.
func dataList(t *testing.T, c dataClient, req *datav1.ListRecordsRequest) []*structpb.Struct {
	t.Helper()
	var out []*structpb.Struct
	for range 1000 {
		resp, err := c.ListRecords(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("ListRecords(%s, filter %q, order %q): %v", req.GetObject(), req.GetFilter(), req.GetOrderBy(), err)
		}
		if n := req.GetPageSize(); n > 0 && int32(len(resp.Msg.GetRecords())) > n {
			t.Fatalf("ListRecords: page of %d records, page_size %d", len(resp.Msg.GetRecords()), n)
		}
		out = append(out, resp.Msg.GetRecords()...)
		if resp.Msg.GetNextPageToken() == "" {
			return out
		}
		req = clone(req)
		req.PageToken = resp.Msg.GetNextPageToken()
	}
	t.Fatalf("ListRecords(%s): more than 1000 pages", req.GetObject())
	return nil
}

// dataAll lists every record of object in the environment, by id.
func dataAll(t *testing.T, c dataClient, environmentID, object string) []*structpb.Struct {
	t.Helper()
	return dataList(t, c, &datav1.ListRecordsRequest{EnvironmentId: environmentID, Object: object, PageSize: 1000})
}

// ids returns the ids of records, in order.
func dataIDs(recs []*structpb.Struct) []string {
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, dataID(r))
	}
	return out
}

// snapshot renders records as comparable maps, system fields included.
func dataSnapshot(recs []*structpb.Struct) []map[string]any {
	out := make([]map[string]any, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.AsMap())
	}
	return out
}

// wantUnchanged fails t unless object holds exactly before (every field,
// system fields included).
func dataWantUnchanged(t *testing.T, c dataClient, environmentID, object string, before []*structpb.Struct) {
	t.Helper()
	if diff := cmp.Diff(dataSnapshot(before), dataSnapshot(dataAll(t, c, environmentID, object))); diff != "" {
		t.Errorf("%s changed (-before +after):\n%s", object, diff)
	}
}

// wantViolations fails t unless err's BadRequest names exactly fields (in
// any order).
func dataWantViolations(t *testing.T, err error, fields ...string) {
	t.Helper()
	br := apierr.BadRequest(err)
	if br == nil {
		t.Errorf("no BadRequest detail; want violations of %q (error: %v)", fields, err)
		return
	}
	var got []string
	for _, v := range br.GetFieldViolations() {
		got = append(got, v.GetField())
		if v.GetDescription() == "" {
			t.Errorf("violation of %s has no description", v.GetField())
		}
	}
	sort.Strings(got)
	want := slices.Clone(fields)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("BadRequest fields = %q, want %q", got, want)
	}
}

// wantIndex fails t unless err's ErrorInfo metadata names write index i.
func dataWantIndex(t *testing.T, err error, i int) {
	t.Helper()
	if got := apierr.Info(err).GetMetadata()["index"]; got != strconv.Itoa(i) {
		t.Errorf("ErrorInfo index = %q, want %d (error: %v)", got, i, err)
	}
}

func dataMask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
