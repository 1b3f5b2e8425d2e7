package app_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/schema"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/metadata"
)

// metaEngines are the drivers every metadata case runs on.
var metaEngines = []string{"memory", "sqlite", "postgres"}

// metaServer starts a server that creates environments of every engine in
// metaEngines: postgres ones on the cluster of ENVPLANE_TEST_POSTGRES_URL
// when it is set (the cluster's URL is returned, "" otherwise).
func metaServer(t *testing.T) (*apptest.Env, string) {
	t.Helper()
	pgURL := os.Getenv(apptest.PostgresURLVar)
	if pgURL == "" {
		return apptest.Start(t), ""
	}
	return apptest.Start(t, "--postgres-admin-url="+pgURL), pgURL
}

// metaEnv creates an environment of engine in org, skipping t (naming
// ENVPLANE_TEST_POSTGRES_URL) for postgres when the server has no cluster;
// whatever a postgres environment leaves on the cluster is dropped when t
// ends.
func metaEnv(t *testing.T, c client, pgURL string, org *environmentv1.Organization, slug, engine string) *environmentv1.Environment {
	t.Helper()
	if engine == "postgres" && pgURL == "" {
		apptest.PostgresURL(t) // skips
	}
	e := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: slug, Driver: engine})
	if e.GetStatus() != "active" {
		t.Fatalf("created %s = %v, want active", slug, e)
	}
	if engine == "postgres" {
		apptest.PostgresEnvironmentCleanup(t, pgURL, e.GetId())
	}
	return e
}

// envDB looks at an environment's own database beside the server: its
// tables, their columns and indexes, and writes rows the API cannot write
// yet. Memory environments have no database to look at (nil).
type envDB interface {
	tables(t *testing.T) []string
	columns(t *testing.T, table string) []string
	hasIndex(t *testing.T, name string) bool
	exec(t *testing.T, query string, args ...any)
	queryString(t *testing.T, query string, args ...any) string
}

func openEnvDB(t *testing.T, env *apptest.Env, e *environmentv1.Environment) envDB {
	t.Helper()
	switch e.GetDriver() {
	case "sqlite":
		return sqliteDB{env: env, id: e.GetId()}
	case "postgres":
		_, secret := apptest.EnvironmentSecret(t, env.ControlPlane(t), env.Keyring(t), e.GetId())
		conn, err := apptest.ConnectPostgres(t.Context(), e.GetDatabaseUrl(), secret)
		if err != nil {
			t.Fatalf("connect to the database of %s: %v", e.GetSlug(), err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return pgDB{conn}
	}
	return nil
}

type sqliteDB struct {
	env *apptest.Env
	id  string
}

func (d sqliteDB) tables(t *testing.T) []string { return d.env.SQLiteTables(t, d.id) }

func (d sqliteDB) columns(t *testing.T, table string) []string {
	return d.env.SQLiteColumns(t, d.id, table)
}

func (d sqliteDB) hasIndex(t *testing.T, name string) bool {
	return d.queryString(t, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?`, name) == "1"
}

func (d sqliteDB) exec(t *testing.T, query string, args ...any) {
	d.env.SQLiteExec(t, d.id, query, args...)
}

func (d sqliteDB) queryString(t *testing.T, query string, args ...any) string {
	t.Helper()
	db := d.env.OpenSQLiteEnv(t, d.id, false)
	defer db.Close()
	var s string
	if err := db.QueryRowContext(t.Context(), query, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s
}

type pgDB struct{ conn *pgx.Conn }

func (d pgDB) strings(t *testing.T, query string, args ...any) []string {
	t.Helper()
	rows, err := d.conn.Query(t.Context(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

func (d pgDB) tables(t *testing.T) []string {
	return d.strings(t, `SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
}

func (d pgDB) columns(t *testing.T, table string) []string {
	return d.strings(t, `SELECT column_name::text FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
}

func (d pgDB) hasIndex(t *testing.T, name string) bool {
	return len(d.strings(t, `SELECT indexname::text FROM pg_catalog.pg_indexes WHERE schemaname = current_schema() AND indexname = $1`, name)) == 1
}

func (d pgDB) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := d.conn.Exec(t.Context(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func (d pgDB) queryString(t *testing.T, query string, args ...any) string {
	t.Helper()
	var s string
	if err := d.conn.QueryRow(t.Context(), query, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s
}

// systemColumns are the columns every table has before the object's fields.
var systemColumns = []string{"id", "created_at", "updated_at", "etag"}

func withSystem(fields ...string) []string { return append(slices.Clone(systemColumns), fields...) }

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestMetadataIsolation(t *testing.T) {
	t.Parallel()
	env, pgURL := metaServer(t)
	admin := env.Client(apptest.ConnectProto)
	for i, engine := range metaEngines {
		p := apptest.Protocols[i%len(apptest.Protocols)]
		t.Run(engine+"/"+string(p), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			org := createOrg(t, admin, "iso-"+engine)
			dev := metaEnv(t, admin, pgURL, org, "dev", engine)
			staging := metaEnv(t, admin, pgURL, org, "staging", engine)
			devDB, stagingDB := openEnvDB(t, env, dev), openEnvDB(t, env, staging)
			c := env.MetadataClient(p, env.AdminToken())
			devID, stagingID := dev.GetId(), staging.GetId()

			// Defined in dev only.
			v1 := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: devID, Name: "account", Object: metaObject(metaText("name"))})
			if !v1.GetApplied() || v1.GetObject().GetVersion() != 1 {
				t.Fatalf("PutObject in dev = %v", v1)
			}
			metaWantMissing(t, c, stagingID, "account")
			if devDB != nil {
				if got := devDB.columns(t, "account"); !slices.Equal(got, withSystem("name")) {
					t.Errorf("dev account columns = %q", got)
				}
				if got := stagingDB.tables(t); slices.Contains(got, "account") {
					t.Errorf("staging's database has the table of dev's object: %q", got)
				}
			}

			// Evolved in dev: staging still has nothing.
			v2 := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: devID, Name: "account", Object: metaObject(metaText("name"), metaText("email"))})
			if v2.GetObject().GetVersion() != 2 {
				t.Errorf("evolved dev account version = %d, want 2", v2.GetObject().GetVersion())
			}
			metaWantMissing(t, c, stagingID, "account")

			// The same name, defined differently in staging, stays different.
			balance := metaField("balance", "number")
			tier := &metadatav1.Field{Name: "tier", Type: "select", Options: []string{"free", "pro"}}
			s1 := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: stagingID, Name: "account", Object: metaObject(balance, metaField("active", "boolean"))})
			if s1.GetObject().GetVersion() != 1 || metaSteps(s1.GetSteps())[0] != "create_table" {
				t.Errorf("staging account = %v, want a new table at version 1", s1)
			}
			devBefore := metaGet(t, c, devID, "account")
			s2 := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: stagingID, Name: "account", Object: metaObject(balance, metaField("active", "boolean"), tier)})
			if s2.GetObject().GetVersion() != 2 {
				t.Errorf("evolved staging account version = %d, want 2", s2.GetObject().GetVersion())
			}
			devAfter := metaGet(t, c, devID, "account")
			if !proto.Equal(devBefore, devAfter) {
				t.Errorf("evolving staging changed dev's definition:\nbefore %v\nafter  %v", devBefore, devAfter)
			}
			if got := metaFieldNames(devAfter); !slices.Equal(got, []string{"name", "email"}) || devAfter.GetVersion() != 2 {
				t.Errorf("dev account = %q version %d, want [name email] version 2", got, devAfter.GetVersion())
			}
			if got := metaGet(t, c, stagingID, "account"); !slices.Equal(metaFieldNames(got), []string{"balance", "active", "tier"}) || got.GetVersion() != 2 {
				t.Errorf("staging account = %q version %d, want [balance active tier] version 2", metaFieldNames(got), got.GetVersion())
			}
			if devDB != nil {
				if got := devDB.columns(t, "account"); !slices.Equal(got, withSystem("name", "email")) {
					t.Errorf("dev account columns = %q", got)
				}
				if got := stagingDB.columns(t, "account"); !slices.Equal(got, withSystem("balance", "active", "tier")) {
					t.Errorf("staging account columns = %q", got)
				}
			}

			// ListObjects lists each environment's own.
			metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: devID, Name: "contact", Object: metaObject(metaText("phone"))})
			if got := metaNames(t, c, devID); !slices.Equal(got, []string{"account", "contact"}) {
				t.Errorf("dev objects = %q, want [account contact]", got)
			}
			if got := metaNames(t, c, stagingID); !slices.Equal(got, []string{"account"}) {
				t.Errorf("staging objects = %q, want [account]", got)
			}
			// A page token belongs to its environment.
			page, err := c.ListObjects(ctx, connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: devID, PageSize: 1}))
			if err != nil {
				t.Fatalf("ListObjects page 1: %v", err)
			}
			if len(page.Msg.GetObjects()) != 1 || page.Msg.GetNextPageToken() == "" {
				t.Fatalf("ListObjects page_size=1 = %v", page.Msg)
			}
			_, err = c.ListObjects(ctx, connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: stagingID, PageSize: 1, PageToken: page.Msg.GetNextPageToken()}))
			apptest.WantError(t, err, connect.CodeInvalidArgument, metadata.ReasonInvalidPageToken)

			// Deleting staging's leaves dev's.
			if _, err := c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: stagingID, Name: "account"})); err != nil {
				t.Fatalf("DeleteObject in staging: %v", err)
			}
			metaWantMissing(t, c, stagingID, "account")
			if got := metaGet(t, c, devID, "account"); !proto.Equal(got, devAfter) {
				t.Errorf("deleting staging's account changed dev's: %v", got)
			}
			if devDB != nil {
				if got := devDB.columns(t, "account"); !slices.Equal(got, withSystem("name", "email")) {
					t.Errorf("dev account columns after staging's delete = %q", got)
				}
				if got := stagingDB.tables(t); slices.Contains(got, "account") {
					t.Errorf("staging's table outlived its object: %q", got)
				}
			}
		})
	}
}

// invalidDefinitions are definitions PutObject refuses, with the BadRequest
// field each must name.
var invalidDefinitions = []struct {
	name   string
	path   string // the name in the path ("" = the case's object)
	object *metadatav1.ObjectDefinition
	reason string
	field  string
}{
	{
		name: "field name not an identifier", object: metaObject(metaText("Bad-Name")),
		// The contract's own rule (protovalidate) catches it before the service.
		reason: server.ReasonValidation, field: "object.fields[0].name",
	},
	{
		name: "unknown type", object: metaObject(metaField("price", "money")),
		reason: server.ReasonValidation, field: "object.fields[0].type",
	},
	{
		name: "system field name", object: metaObject(metaText("created_at")),
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.fields[0].name",
	},
	{
		name: "duplicate field", object: metaObject(metaText("title"), metaField("title", "integer")),
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.fields[1].name",
	},
	{
		name: "select without options", object: metaObject(metaText("title"), metaField("stage", "select")),
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.fields[1].options",
	},
	{
		name: "integer default not a number", object: metaObject(&metadatav1.Field{Name: "count", Type: "integer", DefaultValue: metaString("many")}),
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.fields[0].default_value",
	},
	{
		name: "boolean default a string", object: metaObject(metaText("title"), &metadatav1.Field{Name: "done", Type: "boolean", DefaultValue: metaString("yes")}),
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.fields[1].default_value",
	},
	{
		name: "select default not an option", object: metaObject(&metadatav1.Field{Name: "stage", Type: "select", Options: []string{"a", "b"}, DefaultValue: metaString("c")}),
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.fields[0].default_value",
	},
	{
		name: "index on an unknown field",
		object: &metadatav1.ObjectDefinition{
			Fields:  []*metadatav1.Field{metaText("title")},
			Indexes: []*metadatav1.Index{{Name: "by_owner", Fields: []string{"owner"}}},
		},
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.indexes[0].fields[0]",
	},
	{
		name: "object.name differs from the path",
		object: &metadatav1.ObjectDefinition{
			Name: "something_else", Fields: []*metadatav1.Field{metaText("title")},
		},
		reason: metadata.ReasonInvalidObjectDefinition, field: "object.name",
	},
}

func TestMetadataEvolution(t *testing.T) {
	t.Parallel()
	env, pgURL := metaServer(t)
	admin := env.Client(apptest.ConnectProto)
	for _, engine := range metaEngines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			org := createOrg(t, admin, "evo-"+engine)
			for _, p := range []apptest.Protocol{apptest.ConnectProto, apptest.REST} {
				t.Run(string(p), func(t *testing.T) {
					e := metaEnv(t, admin, pgURL, org, "p-"+map[apptest.Protocol]string{apptest.ConnectProto: "connect", apptest.REST: "rest"}[p], engine)
					testEvolution(t, env, p, e)
				})
			}
			if engine != "memory" {
				t.Run("with records", func(t *testing.T) {
					e := metaEnv(t, admin, pgURL, org, "rows", engine)
					testEvolutionWithRecords(t, env, apptest.REST, e)
				})
			}
		})
	}
}

// testEvolution walks one object through every kind of change on
// environment e over p.
func testEvolution(t *testing.T, env *apptest.Env, p apptest.Protocol, e *environmentv1.Environment) {
	ctx := t.Context()
	c := env.MetadataClient(p, env.AdminToken())
	db := openEnvDB(t, env, e)
	id := e.GetId()
	title, done := metaText("title"), metaField("done", "boolean")
	priority := metaField("priority", "integer")
	byPriority := &metadatav1.Index{Name: "by_priority", Fields: []string{"priority"}}
	status := &metadatav1.Field{Name: "status", Type: "text", Required: true, DefaultValue: metaString("open")}
	owner := &metadatav1.Field{Name: "owner", Type: "text", Required: true}

	// put applies def and checks the answer: applied, the version, the steps.
	put := func(what string, def *metadatav1.ObjectDefinition, allowDestructive bool, wantVersion int64, wantSteps ...string) *metadatav1.PutObjectResponse {
		t.Helper()
		resp := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "task", Object: def, AllowDestructive: allowDestructive})
		if !resp.GetApplied() {
			t.Errorf("%s: applied = false", what)
		}
		if v := resp.GetObject().GetVersion(); v != wantVersion {
			t.Errorf("%s: version %d, want %d", what, v, wantVersion)
		}
		if diff := cmp.Diff(append([]string{}, wantSteps...), metaSteps(resp.GetSteps())); diff != "" {
			t.Errorf("%s: steps (-want +got):\n%s", what, diff)
		}
		if got := metaGet(t, c, id, "task"); got.GetVersion() != wantVersion || !slices.Equal(metaFieldNames(got), metaFieldNames(def)) {
			t.Errorf("%s: GetObject = %q version %d, want %q version %d", what, metaFieldNames(got), got.GetVersion(), metaFieldNames(def), wantVersion)
		}
		return resp
	}
	// unchanged fails t unless the stored definition is still want (and
	// the table's columns still its fields).
	unchanged := func(what string, want *metadatav1.ObjectDefinition) {
		t.Helper()
		if got := metaGet(t, c, id, "task"); !proto.Equal(got, want) {
			t.Errorf("%s changed the definition:\nwant %v\ngot  %v", what, want, got)
		}
		if db != nil {
			// A retyped column is re-added last: compare as sets.
			if got := db.columns(t, "task"); !sameSet(got, withSystem(metaFieldNames(want)...)) {
				t.Errorf("%s: columns %q, want %q", what, got, withSystem(metaFieldNames(want)...))
			}
		}
	}
	refused := func(what string, def *metadatav1.ObjectDefinition, code connect.Code, reason string) {
		t.Helper()
		before := metaGet(t, c, id, "task")
		_, err := c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "task", Object: def}))
		apptest.WantError(t, err, code, reason)
		unchanged(what, before)
	}

	created := put("create", metaObject(title, done), false, 1, "create_table")
	if created.GetObject().GetCreateTime() == nil || created.GetObject().GetName() != "task" {
		t.Errorf("created = %v", created.GetObject())
	}
	if db != nil {
		if got := db.columns(t, "task"); !slices.Equal(got, withSystem("title", "done")) {
			t.Errorf("columns after create = %q", got)
		}
	}

	t.Run("same definition again changes nothing", func(t *testing.T) {
		before := metaGet(t, c, id, "task")
		resp := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "task", Object: metaObject(title, done)})
		if resp.GetApplied() || len(resp.GetSteps()) != 0 || resp.GetObject().GetVersion() != 1 {
			t.Errorf("re-applied = applied %v, steps %q, version %d; want false, none, 1", resp.GetApplied(), metaSteps(resp.GetSteps()), resp.GetObject().GetVersion())
		}
		unchanged("re-applying", before)

		// As a client would: read it, send back what was read.
		read := metaGet(t, c, id, "task")
		resp = metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "task", Object: read})
		if resp.GetApplied() || len(resp.GetSteps()) != 0 || resp.GetObject().GetVersion() != 1 {
			t.Errorf("putting back what GetObject read = applied %v, steps %q, version %d; want false, none, 1", resp.GetApplied(), metaSteps(resp.GetSteps()), resp.GetObject().GetVersion())
		}
		unchanged("putting back what was read", before)
	})

	put("add field", metaObject(title, done, priority), false, 2, "add_field priority")
	withIndex := metaObject(title, done, priority)
	withIndex.Indexes = []*metadatav1.Index{byPriority}
	put("add index", withIndex, false, 3, "add_index by_priority")
	if db != nil && !db.hasIndex(t, schema.PhysicalIndexName("task", "by_priority")) {
		t.Errorf("no index by_priority in the database")
	}
	def := func(fields ...*metadatav1.Field) *metadatav1.ObjectDefinition {
		d := metaObject(fields...)
		d.Indexes = []*metadatav1.Index{byPriority}
		return d
	}
	put("add a required field with a default", def(title, done, priority, status), false, 4, "add_field status")

	// A required field without a default is planned as destructive
	// (existing records would have no value): refused without
	// allow_destructive even on an empty object, applied with it.
	refused("required field without default, not allowed", def(title, done, priority, status, owner), connect.CodeFailedPrecondition, metadata.ReasonDestructiveChange)
	put("required field without default on an empty object", def(title, done, priority, status, owner), true, 5, "add_field owner (destructive)")

	// Destructive changes: refused, then applied when allowed.
	refused("drop field", def(title, priority, status, owner), connect.CodeFailedPrecondition, metadata.ReasonDestructiveChange)
	put("drop field allowed", def(title, priority, status, owner), true, 6, "drop_field done (destructive)")
	priorityText := metaField("priority", "text")
	refused("type change", def(title, priorityText, status, owner), connect.CodeFailedPrecondition, metadata.ReasonDestructiveChange)
	put("type change allowed", def(title, priorityText, status, owner), true, 7,
		"drop_index by_priority", "change_field priority (destructive)", "add_index by_priority")
	if db != nil && !db.hasIndex(t, schema.PhysicalIndexName("task", "by_priority")) {
		t.Errorf("index by_priority not rebuilt after the type change")
	}
	current := metaGet(t, c, id, "task")

	t.Run("validate_only", func(t *testing.T) {
		for _, tc := range []struct {
			name             string
			def              *metadatav1.ObjectDefinition
			allowDestructive bool
			version          int64
			steps            []string
		}{
			{name: "additive", def: def(title, priorityText, status, owner, metaText("notes")), version: 8, steps: []string{"add_field notes"}},
			{name: "destructive, allowed", def: def(title, priorityText, status), allowDestructive: true, version: 8, steps: []string{"drop_field owner (destructive)"}},
			{name: "destructive, not allowed: shows the steps", def: def(title, priorityText, status), version: 8, steps: []string{"drop_field owner (destructive)"}},
			{name: "no change", def: def(title, priorityText, status, owner), version: 7, steps: []string{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
					EnvironmentId: id, Name: "task", Object: tc.def, ValidateOnly: true, AllowDestructive: tc.allowDestructive,
				}))
				if err != nil {
					t.Fatalf("PutObject(validate_only): %v", err)
				}
				if resp.Msg.GetApplied() {
					t.Errorf("applied = true for validate_only")
				}
				if diff := cmp.Diff(tc.steps, metaSteps(resp.Msg.GetSteps())); diff != "" {
					t.Errorf("steps (-want +got):\n%s", diff)
				}
				if got := resp.Msg.GetObject(); got.GetVersion() != tc.version || !slices.Equal(metaFieldNames(got), metaFieldNames(tc.def)) {
					t.Errorf("planned object = %q version %d, want %q version %d", metaFieldNames(got), got.GetVersion(), metaFieldNames(tc.def), tc.version)
				}
				unchanged("validate_only", current)
			})
		}
	})

	t.Run("a new description is a new version without steps", func(t *testing.T) {
		d := def(title, priorityText, status, owner)
		d.Description = "things to do"
		resp := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "task", Object: d})
		if !resp.GetApplied() || len(resp.GetSteps()) != 0 || resp.GetObject().GetVersion() != 8 || resp.GetObject().GetDescription() != "things to do" {
			t.Errorf("description change = applied %v, steps %q, version %d, description %q", resp.GetApplied(), metaSteps(resp.GetSteps()), resp.GetObject().GetVersion(), resp.GetObject().GetDescription())
		}
		current = metaGet(t, c, id, "task")
	})

	t.Run("invalid definitions", func(t *testing.T) {
		for _, tc := range invalidDefinitions {
			for _, name := range []string{"task", "broken"} {
				t.Run(tc.name+"/"+name, func(t *testing.T) {
					_, err := c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: name, Object: tc.object}))
					apptest.WantError(t, err, connect.CodeInvalidArgument, tc.reason)
					apptest.WantFieldViolation(t, err, tc.field)
					// validate_only is refused the same way.
					_, err = c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: name, Object: tc.object, ValidateOnly: true}))
					apptest.WantError(t, err, connect.CodeInvalidArgument, tc.reason)
				})
			}
		}
		metaWantMissing(t, c, id, "broken")
		unchanged("invalid definitions", current)
		if db != nil && slices.Contains(db.tables(t), "broken") {
			t.Errorf("a refused definition left a table")
		}
	})

	t.Run("delete", func(t *testing.T) {
		_, err := c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "ghost"}))
		apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)

		if _, err := c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "task"})); err != nil {
			t.Fatalf("DeleteObject: %v", err)
		}
		metaWantMissing(t, c, id, "task")
		if db != nil {
			if got := db.tables(t); slices.Contains(got, "task") {
				t.Errorf("table task outlived its object: %q", got)
			}
		}
		_, err = c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "task"}))
		apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)

		// Defined again, it starts over.
		again := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "task", Object: metaObject(metaText("headline"))})
		if !again.GetApplied() || again.GetObject().GetVersion() != 1 || metaSteps(again.GetSteps())[0] != "create_table" {
			t.Errorf("re-created = %v", again)
		}
		if db != nil {
			if got := db.columns(t, "task"); !slices.Equal(got, withSystem("headline")) {
				t.Errorf("columns of the re-created table = %q", got)
			}
		}
	})
}

// testEvolutionWithRecords covers what only an object with records shows;
// the API cannot write records yet, so one is inserted into the
// environment's database directly.
func testEvolutionWithRecords(t *testing.T, env *apptest.Env, p apptest.Protocol, e *environmentv1.Environment) {
	ctx := t.Context()
	c := env.MetadataClient(p, env.AdminToken())
	db := openEnvDB(t, env, e)
	id := e.GetId()
	amount := metaField("amount", "number")
	metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "ledger", Object: metaObject(amount)})
	now := "0"
	if e.GetDriver() == "postgres" {
		now = "now()"
	}
	db.exec(t, `INSERT INTO ledger (id, created_at, updated_at, etag, amount) VALUES ('r1', `+now+`, `+now+`, 'e1', 1.5)`)

	before := metaGet(t, c, id, "ledger")
	currency := &metadatav1.Field{Name: "currency", Type: "text", Required: true}
	for _, allow := range []bool{false, true} {
		_, err := c.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: id, Name: "ledger", Object: metaObject(amount, currency), AllowDestructive: allow,
		}))
		if allow {
			apptest.WantError(t, err, connect.CodeFailedPrecondition, metadata.ReasonRequiredFieldNeedsDefault)
		} else {
			apptest.WantError(t, err, connect.CodeFailedPrecondition, metadata.ReasonDestructiveChange)
		}
		if got := metaGet(t, c, id, "ledger"); !proto.Equal(got, before) {
			t.Errorf("a refused change (allow_destructive %v) changed the definition: %v", allow, got)
		}
		if got := db.columns(t, "ledger"); !slices.Equal(got, withSystem("amount")) {
			t.Errorf("a refused change (allow_destructive %v) changed the table: %q", allow, got)
		}
	}

	// With a default, existing records get it.
	withDefault := proto.CloneOf(currency)
	withDefault.DefaultValue = structpb.NewStringValue("EUR")
	resp := metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "ledger", Object: metaObject(amount, withDefault)})
	if !resp.GetApplied() || resp.GetObject().GetVersion() != 2 {
		t.Errorf("adding currency with a default = %v", resp)
	}
	if got := db.queryString(t, `SELECT currency FROM ledger WHERE id = 'r1'`); got != "EUR" {
		t.Errorf("the existing record's currency = %q, want the default EUR", got)
	}

	// A table with rows is not dropped without force.
	_, err := c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "ledger"}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, metadata.ReasonObjectHasRecords)
	if got := metaGet(t, c, id, "ledger"); got.GetVersion() != 2 {
		t.Errorf("after a refused delete: version %d", got.GetVersion())
	}
	if got := db.queryString(t, `SELECT count(*) FROM ledger`); got != "1" {
		t.Errorf("after a refused delete: %s rows", got)
	}
	if _, err := c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "ledger", Force: true})); err != nil {
		t.Fatalf("DeleteObject(force): %v", err)
	}
	metaWantMissing(t, c, id, "ledger")
	if got := db.tables(t); slices.Contains(got, "ledger") {
		t.Errorf("table ledger outlived a forced delete: %q", got)
	}
}

func TestMetadataRoles(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "acme")
	dev := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
	adminMeta := env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	metaPut(t, adminMeta, &metadatav1.PutObjectRequest{EnvironmentId: dev.GetId(), Name: "thing", Object: metaObject(metaText("label"))})
	thing := metaGet(t, adminMeta, dev.GetId(), "thing")
	secrets := map[string]string{}
	for _, role := range []string{auth.RoleViewer, auth.RoleEditor, auth.RoleDeveloper, auth.RoleAdmin} {
		_, secrets[role] = env.MintToken(t, &accessv1.CreateTokenRequest{Name: role, OrganizationId: org.GetId(), Role: role})
	}
	// One protocol after the other: each expects the environment to hold
	// thing alone between its calls.
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			ctx := t.Context()
			for role, secret := range secrets {
				// No hint: the organization's default (dev) is used.
				c := env.MetadataClient(p, secret)
				if got := metaGet(t, c, "", "thing"); !metaEqual(got, thing) {
					t.Errorf("%s: GetObject = %v", role, got)
				}
				if got := metaNames(t, c, ""); !slices.Equal(got, []string{"thing"}) {
					t.Errorf("%s: ListObjects = %q", role, got)
				}
				evolve := &metadatav1.PutObjectRequest{Name: "thing", Object: metaObject(metaText("label"), metaText("color")), ValidateOnly: true}
				scratch := "scratch_" + role + "_" + map[apptest.Protocol]string{
					apptest.ConnectJSON: "cj", apptest.ConnectProto: "cp", apptest.GRPC: "g", apptest.GRPCWeb: "gw", apptest.REST: "r",
				}[p]
				create := &metadatav1.PutObjectRequest{Name: scratch, Object: metaObject(metaText("x"))}
				del := &metadatav1.DeleteObjectRequest{Name: "thing"}
				if role == auth.RoleViewer || role == auth.RoleEditor {
					for what, err := range map[string]error{
						"evolve (validate_only)": errOf(c.PutObject(ctx, connect.NewRequest(evolve))),
						"create":                 errOf(c.PutObject(ctx, connect.NewRequest(create))),
						"delete":                 errOf(c.DeleteObject(ctx, connect.NewRequest(del))),
					} {
						if !apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient) {
							t.Logf("%s: %s", role, what)
						}
					}
					metaWantMissing(t, c, "", scratch)
					if got := metaGet(t, c, "", "thing"); !metaEqual(got, thing) {
						t.Errorf("%s: a refused call changed thing: %v", role, got)
					}
					continue
				}
				if _, err := c.PutObject(ctx, connect.NewRequest(evolve)); err != nil {
					t.Errorf("%s: PutObject(validate_only): %v", role, err)
				}
				if resp := metaPut(t, c, create); !resp.GetApplied() {
					t.Errorf("%s: created = %v", role, resp)
				}
				if _, err := c.DeleteObject(ctx, connect.NewRequest(&metadatav1.DeleteObjectRequest{Name: scratch})); err != nil {
					t.Errorf("%s: DeleteObject: %v", role, err)
				}
				metaWantMissing(t, c, "", scratch)
			}
		})
	}
}

// TestMetadataConcurrentChanges sends two changes of one object at once,
// one adding a field and one dropping another: whichever order they take,
// both apply and the stored definition matches the environment's table. A
// change that read the same version as the other used to migrate the
// database and then lose the version check, leaving the table unlike the
// definition (a defined field without its column).
func TestMetadataConcurrentChanges(t *testing.T) {
	t.Parallel()
	env, pgURL := metaServer(t)
	admin := env.Client(apptest.ConnectProto)
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			org := createOrg(t, admin, "conc-"+engine)
			e := metaEnv(t, admin, pgURL, org, "dev", engine)
			db := openEnvDB(t, env, e)
			c := env.MetadataClient(apptest.ConnectProto, env.AdminToken())
			for i := range 10 {
				name := "o" + string(rune('a'+i))
				metaPut(t, c, &metadatav1.PutObjectRequest{EnvironmentId: e.GetId(), Name: name, Object: metaObject(metaText("z"))})
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for j, req := range []*metadatav1.PutObjectRequest{
					{EnvironmentId: e.GetId(), Name: name, Object: metaObject(metaText("z"), metaText("x"))},
					{EnvironmentId: e.GetId(), Name: name, Object: metaObject(), AllowDestructive: true},
				} {
					wg.Go(func() { errs[j] = errOf(c.PutObject(t.Context(), connect.NewRequest(req))) })
				}
				wg.Wait()
				for j, err := range errs {
					if err != nil {
						t.Errorf("%s: change %d: %v", name, j, err)
					}
				}
				def := metaGet(t, c, e.GetId(), name)
				if def.GetVersion() != 3 {
					t.Errorf("%s: version %d after two changes, want 3", name, def.GetVersion())
				}
				if cols := db.columns(t, name); !sameSet(cols, withSystem(metaFieldNames(def)...)) {
					t.Errorf("%s: definition v%d has fields %q, the table columns %q", name, def.GetVersion(), metaFieldNames(def), cols)
				}
			}
		})
	}
}
