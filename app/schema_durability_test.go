package app_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/dberror"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/services/environment"
	"github.com/envplane/envplane/services/metadata"
)

// lockSQLite holds the write lock of the SQLite file at path, as another
// process's BEGIN IMMEDIATE would, until the returned function runs.
func lockSQLite(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE on %s: %v", path, err)
	}
	done := false
	release = func() {
		if done {
			return
		}
		done = true
		_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		_ = conn.Close()
		_ = db.Close()
	}
	t.Cleanup(release)
	return release
}

// sqliteEnv makes an organization with one sqlite environment.
func sqliteEnv(t *testing.T, env *apptest.Env, orgSlug string) *environmentv1.Environment {
	t.Helper()
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, orgSlug)
	return createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite"})
}

func listErr(c dataClient, environmentID, object, filter string) ([]string, error) {
	resp, err := c.ListRecords(context.Background(), connect.NewRequest(&datav1.ListRecordsRequest{
		EnvironmentId: environmentID, Object: object, Filter: filter, PageSize: 1000,
	}))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range resp.Msg.GetRecords() {
		out = append(out, fmt.Sprint(dataUserFields(r)))
	}
	return out, nil
}

// TestDeleteObjectFinishesOrChangesNothing is issue 18's first case: a
// forced delete that the database refuses leaves the definition and its
// rows, and a later definition of the name never serves the rows of a table
// it did not make.
func TestDeleteObjectFinishesOrChangesNothing(t *testing.T) {
	env := apptest.Start(t)
	e := sqliteEnv(t, env, "victims")
	id := e.GetId()
	meta := env.MetadataClient(apptest.ConnectJSON, env.AdminToken())
	data := env.DataClient(apptest.ConnectJSON, env.AdminToken())
	dataDefine(t, env, id, "victim", dataField("title", "text"))
	for i := range 20 {
		dataCreate(t, data, id, "victim", map[string]any{"title": fmt.Sprintf("row %d", i)})
	}

	release := lockSQLite(t, env.SQLitePath(id))
	_, err := meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "victim", Force: true}))
	apptest.WantError(t, err, connect.CodeUnavailable, metadata.ReasonDatabaseUnavailable)
	release()
	// Nothing of the refused delete happened: the definition and every row stay.
	if got := metaGet(t, meta, id, "victim"); got.GetVersion() != 1 {
		t.Errorf("after the refused delete the definition is %v; want version 1", got)
	}
	if rows, err := listErr(data, id, "victim", ""); err != nil || len(rows) != 20 {
		t.Errorf("after the refused delete: %d rows, %v; want 20", len(rows), err)
	}

	// The delete done, a new object of the name starts empty.
	if _, err := meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "victim", Force: true})); err != nil {
		t.Fatalf("DeleteObject: %v", err)
	}
	put := metaPut(t, meta, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "victim", Object: metaObject(metaText("title"), metaText("other"))})
	if !put.GetApplied() || put.GetObject().GetVersion() != 1 {
		t.Errorf("PutObject after the delete = %v; want version 1 applied", put)
	}
	if rows, err := listErr(data, id, "victim", ""); err != nil || len(rows) != 0 {
		t.Errorf("the new victim serves %d rows, %v; want none", len(rows), err)
	}

	// A table no definition describes (what the crash of an earlier
	// envplane between the two halves of a delete left) is never taken
	// over unasked.
	env.SQLiteExec(t, id, "CREATE TABLE stray (id TEXT PRIMARY KEY NOT NULL, created_at TIMESTAMP_INTEGER, updated_at TIMESTAMP_INTEGER, etag TEXT, title TEXT)")
	env.SQLiteExec(t, id, "INSERT INTO stray VALUES ('old', 1, 1, 'e', 'left behind')")
	_, err = meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "stray", Object: metaObject(metaText("title"))}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, metadata.ReasonObjectTableExists)
	if names := metaNames(t, meta, id); slices.Contains(names, "stray") {
		t.Errorf("the refused PutObject defined stray: %v", names)
	}
	// Adopting asks for the columns to match.
	_, err = meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "stray",
		Object: metaObject(metaText("title"), metaField("n", "integer")), Repair: metadatav1.Repair_REPAIR_ADOPT}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift)
	metaPut(t, meta, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "stray", Object: metaObject(metaText("title")), Repair: metadatav1.Repair_REPAIR_ADOPT})
	if rows, err := listErr(data, id, "stray", ""); err != nil || len(rows) != 1 {
		t.Errorf("the adopted stray serves %v, %v; want its one row", rows, err)
	}

	// Or dropped: a forced delete of a name without a definition drops its
	// table; without force the name is not defined.
	env.SQLiteExec(t, id, "CREATE TABLE stray2 (id TEXT PRIMARY KEY NOT NULL, created_at TIMESTAMP_INTEGER, updated_at TIMESTAMP_INTEGER, etag TEXT, title TEXT)")
	// A table envplane never made (no system columns: a user's own, in a
	// database brought) is not envplane's to drop.
	env.SQLiteExec(t, id, "CREATE TABLE keep_me (n INTEGER)")
	_, err = meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "keep_me", Force: true}))
	apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)
	if tables := env.SQLiteTables(t, id); !slices.Contains(tables, "keep_me") {
		t.Errorf("keep_me was dropped: %v", tables)
	}
	_, err = meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "stray2"}))
	apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)
	if _, err := meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "stray2", Force: true})); err != nil {
		t.Fatalf("DeleteObject(stray2, force): %v", err)
	}
	if tables := env.SQLiteTables(t, id); slices.Contains(tables, "stray2") {
		t.Errorf("stray2 is still a table: %v", tables)
	}
	_, err = meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "stray2", Force: true}))
	apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)
}

// TestChangeInterruptedBeforeItsDefinitionConverges is issue 18's second
// case: the database migrated, the control plane could not store the
// definition, the server stopped. After the restart the stored definition
// is the one the table holds, and the object works.
func TestChangeInterruptedBeforeItsDefinitionConverges(t *testing.T) {
	dir := t.TempDir()
	env := apptest.StartDir(t, dir)
	e := sqliteEnv(t, env, "interrupted")
	id := e.GetId()
	meta := env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	data := env.DataClient(apptest.ConnectProto, env.AdminToken())
	dataDefine(t, env, id, "notes", dataField("title", "text"), dataField("a", "text"), dataField("b", "text"))
	dataCreate(t, data, id, "notes", map[string]any{"title": "kept", "a": "x", "b": "y"})

	release := lockSQLite(t, env.Config.ControlPlanePath())
	_, err := meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{
		EnvironmentId: id, Name: "notes", Object: metaObject(metaText("title")), AllowDestructive: true,
	}))
	// The database holds the change: the answer says so, never "nothing
	// was written" or INTERNAL.
	apptest.WantError(t, err, connect.CodeUnavailable, apierr.ReasonControlPlaneUnavailable)
	if !strings.Contains(err.Error(), "applied to the environment's database") {
		t.Errorf("PutObject with the control plane locked: %v; want it to say the database holds the change", err)
	}
	env.Stop(t)
	release()

	env = apptest.StartDir(t, dir)
	meta = env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	data = env.DataClient(apptest.ConnectProto, env.AdminToken())
	// The first call opens the database, which reconciles.
	if rows, err := listErr(data, id, "notes", ""); err != nil || len(rows) != 1 {
		t.Fatalf("ListRecords after the restart = %v, %v; want the one record", rows, err)
	}
	got := metaGet(t, meta, id, "notes")
	if got.GetVersion() != 2 || !slices.Equal(metaFieldNames(got), []string{"title"}) || got.GetDrift() != "" {
		t.Errorf("after the restart notes = %v; want version 2 with field title only, no drift", got)
	}
	if cols := env.SQLiteColumns(t, id, "notes"); slices.Contains(cols, "a") || slices.Contains(cols, "b") {
		t.Errorf("the table has columns %v; want a and b dropped", cols)
	}
	dataCreate(t, data, id, "notes", map[string]any{"title": "after"})
	if !strings.Contains(env.Logs.String(), "a change whose definition was not stored") {
		t.Errorf("the log does not say the change was reconciled:\n%s", env.Logs)
	}
	// Putting the same definition again changes nothing.
	if put := metaPut(t, meta, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "notes", Object: metaObject(metaText("title"))}); put.GetApplied() {
		t.Errorf("re-putting the reconciled definition applied %v", put.GetSteps())
	}

	// The same for a delete: the table dropped, the definition not removed.
	release = lockSQLite(t, env.Config.ControlPlanePath())
	_, err = meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: id, Name: "notes", Force: true}))
	apptest.WantError(t, err, connect.CodeUnavailable, apierr.ReasonControlPlaneUnavailable)
	env.Stop(t)
	release()
	env = apptest.StartDir(t, dir)
	meta = env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	data = env.DataClient(apptest.ConnectProto, env.AdminToken())
	_, err = listErr(data, id, "notes", "")
	apptest.WantError(t, err, connect.CodeNotFound, "OBJECT_NOT_DEFINED")
	metaWantMissing(t, meta, id, "notes")
	if put := metaPut(t, meta, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "notes", Object: metaObject(metaText("title"))}); put.GetObject().GetVersion() != 1 {
		t.Errorf("defining notes again = %v; want version 1", put.GetObject())
	}
	if rows, err := listErr(data, id, "notes", ""); err != nil || len(rows) != 0 {
		t.Errorf("the new notes serves %v, %v; want nothing", rows, err)
	}
}

// TestSchemaDriftIsReportedAndRepaired is issue 18's third case: a field
// whose column is missing makes every call on the object answer
// SCHEMA_DRIFT, never the field's name as its value, until a repair.
func TestSchemaDriftIsReportedAndRepaired(t *testing.T) {
	dir := t.TempDir()
	env := apptest.StartDir(t, dir)
	e := sqliteEnv(t, env, "drifting")
	id := e.GetId()
	data := env.DataClient(apptest.ConnectJSON, env.AdminToken())
	dataDefine(t, env, id, "notes", dataField("title", "text"), dataField("note", "text"))
	dataCreate(t, data, id, "notes", map[string]any{"title": "a", "note": "x"})
	env.SQLiteExec(t, id, "ALTER TABLE notes DROP COLUMN note")

	// Before any reconcile the engine itself refuses to read the field.
	for _, f := range []string{"", `note = "note"`} {
		rows, err := listErr(data, id, "notes", f)
		apptest.WantError(t, err, connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift)
		if len(rows) > 0 {
			t.Errorf("filter %q served %v", f, rows)
		}
	}
	env.Stop(t)
	env = apptest.StartDir(t, dir)
	for _, p := range []apptest.Protocol{apptest.ConnectJSON, apptest.GRPC, apptest.REST} {
		meta := env.MetadataClient(p, env.AdminToken())
		data := env.DataClient(p, env.AdminToken())
		_, err := listErr(data, id, "notes", "")
		apptest.WantError(t, err, connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift)
		_, err = data.CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: id, Object: "notes", Record: dataRec(map[string]any{"title": "b"})}))
		apptest.WantError(t, err, connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift)
		if got := metaGet(t, meta, id, "notes"); !strings.Contains(got.GetDrift(), "note") {
			t.Errorf("%s: GetObject drift = %q; want it to name the field", p, got.GetDrift())
		}
		resp, err := meta.ListObjects(t.Context(), connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: id}))
		if err != nil || len(resp.Msg.GetObjects()) != 1 || resp.Msg.GetObjects()[0].GetDrift() == "" {
			t.Errorf("%s: ListObjects = %v, %v; want notes with its drift", p, resp, err)
		}
	}
	meta := env.MetadataClient(apptest.ConnectJSON, env.AdminToken())
	data = env.DataClient(apptest.ConnectJSON, env.AdminToken())
	// REAPPLY carries the stored definition as it is: a change riding on
	// it would skip the checks a change gets (here: a required field with
	// no default on a table with records). ADOPT may carry one only when
	// the table holds it already.
	required := metaText("due")
	required.Required = true
	_, err := meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "notes",
		Object: metaObject(metaText("title"), metaText("note"), required), Repair: metadatav1.Repair_REPAIR_REAPPLY, AllowDestructive: true}))
	apptest.WantError(t, err, connect.CodeInvalidArgument, metadata.ReasonInvalidObjectDefinition)
	_, err = meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: "notes",
		Object: metaObject(metaText("title"), metaText("note"), required), Repair: metadatav1.Repair_REPAIR_ADOPT, AllowDestructive: true}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift)
	if got := metaGet(t, meta, id, "notes"); got.GetVersion() != 1 || got.GetDrift() == "" {
		t.Errorf("after the refused repairs notes = %v; want version 1, still drifting", got)
	}
	put := metaPut(t, meta, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "notes",
		Object: metaObject(metaText("title"), metaText("note")), Repair: metadatav1.Repair_REPAIR_REAPPLY})
	if !put.GetApplied() || put.GetObject().GetVersion() != 2 {
		t.Errorf("the repair = %v; want version 2 applied", put)
	}
	if got := metaGet(t, meta, id, "notes"); got.GetDrift() != "" {
		t.Errorf("after the repair drift = %q", got.GetDrift())
	}
	rows, err := listErr(data, id, "notes", "")
	if err != nil || len(rows) != 1 || strings.Contains(rows[0], "note:x") {
		t.Errorf("after the repair the records are %v, %v; want the record, its lost note empty", rows, err)
	}
	dataCreate(t, data, id, "notes", map[string]any{"title": "b", "note": "back"})

	// A column of another type is a drift REAPPLY cannot mend (the column
	// is there): adopting the table without that field is the way out.
	env.SQLiteExec(t, id, "ALTER TABLE notes DROP COLUMN note")
	env.SQLiteExec(t, id, "ALTER TABLE notes ADD COLUMN note INTEGER")
	env.Stop(t)
	env = apptest.StartDir(t, dir)
	meta = env.MetadataClient(apptest.ConnectJSON, env.AdminToken())
	data = env.DataClient(apptest.ConnectJSON, env.AdminToken())
	if got := metaGet(t, meta, id, "notes"); !strings.Contains(got.GetDrift(), "note") {
		t.Fatalf("after the column's type changed, drift = %q; want it to name note", got.GetDrift())
	}
	put = metaPut(t, meta, &metadatav1.PutObjectRequest{EnvironmentId: id, Name: "notes",
		Object: metaObject(metaText("title")), Repair: metadatav1.Repair_REPAIR_ADOPT, AllowDestructive: true})
	if !put.GetApplied() || len(metaFieldNames(put.GetObject())) != 1 {
		t.Errorf("adopting without the retyped field = %v; want it applied", put)
	}
	if got := metaGet(t, meta, id, "notes"); got.GetDrift() != "" {
		t.Errorf("after the adoption drift = %q", got.GetDrift())
	}
	dataCreate(t, data, id, "notes", map[string]any{"title": "after the adoption"})
}

// TestReservedNames is issue 18's fourth case on every engine (turso on a
// database brought with tursodb): names of
// the engines' system catalogs and columns are refused before any engine
// sees them, and nothing is defined.
func TestReservedNames(t *testing.T) {
	tursoURL := apptest.StartTursodb(t) // before the server, so it stops after it
	env, pgURL := dataServer(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "reserved")
	engines := []string{"memory", "sqlite", "turso"}
	if pgURL != "" {
		engines = append(engines, "postgres")
	}
	for _, engine := range engines {
		var e *environmentv1.Environment
		if engine == "turso" {
			e = createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
				OrganizationId: org.GetId(), Slug: engine, Driver: engine, DatabaseUrl: tursoURL, DatabaseSecret: "any",
			})
		} else {
			e = dataEnv(t, admin, pgURL, org, engine, engine)
		}
		for _, p := range []apptest.Protocol{apptest.ConnectProto, apptest.REST} {
			meta := env.MetadataClient(p, env.AdminToken())
			for _, name := range []string{"pg_roles", "pg_class", "pg_database", "pg_x", "sqlite_master", "sqlite_x", "sqlite_sequence",
				"pg", "sqlite", "t1__email_key_c846c489", "items__x", "t1_pkey"} {
				_, err := meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: e.GetId(), Name: name, Object: metaObject(metaText("title"))}))
				if apptest.WantError(t, err, connect.CodeInvalidArgument, metadata.ReasonObjectNameReserved) {
					apptest.WantFieldViolation(t, err, "name")
				}
			}
			for _, field := range []string{"xmin", "ctid", "oid", "tableoid", "rowid"} {
				_, err := meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: e.GetId(), Name: "items", Object: metaObject(metaText("title"), metaText(field))}))
				if apptest.WantError(t, err, connect.CodeInvalidArgument, metadata.ReasonFieldNameReserved) {
					apptest.WantFieldViolation(t, err, "object.fields[1].name")
				}
			}
			if names := metaNames(t, meta, e.GetId()); len(names) != 0 {
				t.Errorf("%s/%s: refused names defined %v", engine, p, names)
			}
		}
	}
}

// TestMemoryEnvironmentAfterRestart is issue 18's fifth case: a memory
// environment comes back empty, its objects there, and says so at start.
func TestMemoryEnvironmentAfterRestart(t *testing.T) {
	dir := t.TempDir()
	env := apptest.StartDir(t, dir)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "volatile")
	e := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "memory"})
	id := e.GetId()
	data := env.DataClient(apptest.ConnectProto, env.AdminToken())
	dataDefine(t, env, id, "notes", dataField("title", "text", dataUnique))
	dataCreate(t, data, id, "notes", map[string]any{"title": "gone after the restart"})
	if got := getEnv(t, admin, id); got.GetResetTime() != nil {
		t.Errorf("before any restart reset_time = %v; want unset", got.GetResetTime())
	}
	env.Stop(t)

	env = apptest.StartDir(t, dir)
	data = env.DataClient(apptest.ConnectProto, env.AdminToken())
	for _, p := range []apptest.Protocol{apptest.ConnectJSON, apptest.REST} {
		got := getEnv(t, env.Client(p), id)
		if got.GetResetTime() == nil || !got.GetResetTime().AsTime().After(got.GetProvisionTime().AsTime()) {
			t.Errorf("%s: after the restart reset_time = %v (provisioned %v); want the restart's time", p, got.GetResetTime(), got.GetProvisionTime())
		}
	}
	rows, err := listErr(data, id, "notes", "")
	if err != nil || len(rows) != 0 {
		t.Fatalf("ListRecords after the restart = %v, %v; want no records and no error", rows, err)
	}
	dataCreate(t, data, id, "notes", map[string]any{"title": "new"})
	// The unique index came back with the table.
	_, err = data.CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: id, Object: "notes", Record: dataRec(map[string]any{"title": "new"})}))
	apptest.WantError(t, err, connect.CodeAlreadyExists, "")
	warned := false
	for _, rec := range env.Logs.Records() {
		if rec["level"] == "WARN" && strings.Contains(fmt.Sprint(rec["environments"]), id) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no WARN at start names the memory environment %s:\n%s", id, env.Logs)
	}
}

// TestEnvironmentFilesArePrivate is issue 18's tenth case: an
// environment's database file is readable by the server's user only, as
// the control plane's is, and one made before is made so at its open.
func TestEnvironmentFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	env := apptest.StartDir(t, dir)
	e := sqliteEnv(t, env, "private")
	dataDefine(t, env, e.GetId(), "notes", dataField("title", "text"))
	path := env.SQLitePath(e.GetId())
	for _, p := range []string{path, path + "-wal"} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, info, err)
		}
	}
	env.Stop(t)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	env = apptest.StartDir(t, dir)
	data := env.DataClient(apptest.ConnectProto, env.AdminToken())
	dataCreate(t, data, e.GetId(), "notes", map[string]any{"title": "x"})
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("after the reopen %s: %v, %v; want mode 0600", path, info, err)
	}
}

// TestWritesRacingDeletion is issue 18's seventh case: writes that reach an
// environment while it is deleted answer ENVIRONMENT_DELETING (or, once it
// is gone, ENVIRONMENT_NOT_FOUND), never INTERNAL, on every engine.
func TestWritesRacingDeletion(t *testing.T) {
	env, pgURL := dataServer(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "racing")
	engines := []string{"sqlite", "memory"}
	if pgURL != "" {
		engines = append(engines, "postgres")
	}
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			e := dataEnv(t, admin, pgURL, org, "doomed-"+engine, engine)
			id := e.GetId()
			dataDefine(t, env, id, "notes", dataField("title", "text"))
			data := env.DataClient(apptest.ConnectProto, env.AdminToken())
			stop := make(chan struct{})
			errs := make(chan error, 10000)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						_, err := data.CreateRecord(context.Background(), connect.NewRequest(&datav1.CreateRecordRequest{
							EnvironmentId: id, Object: "notes", Record: dataRec(map[string]any{"title": "x"}),
						}))
						select {
						case errs <- err:
						default:
						}
					}
				})
			}
			time.Sleep(50 * time.Millisecond)
			if _, err := admin.DeleteEnvironment(t.Context(), connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: id, Force: true})); err != nil {
				t.Errorf("DeleteEnvironment: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
			close(stop)
			wg.Wait()
			close(errs)
			counts := map[string]int{}
			for err := range errs {
				if err == nil {
					counts["ok"]++
					continue
				}
				key := connect.CodeOf(err).String() + " " + apierr.Reason(err)
				counts[key]++
				switch apierr.Reason(err) {
				case dberror.ReasonEnvironmentDeleting, resolve.ReasonEnvironmentNotFound:
				default:
					t.Errorf("a write racing the deletion answered %v", err)
				}
			}
			t.Logf("answers: %v", counts)
			if counts["ok"] == 0 || len(counts) < 2 {
				t.Errorf("answers %v: want writes both before and after the deletion", counts)
			}
		})
	}
}

// TestBringYourOwnRefusesManagedDatabases is issue 18's ninth case: a
// database brought by one organization may not be another environment's
// managed database (reachable wherever the cluster trusts local logins),
// nor be reached as a superuser, which reaches every database.
func TestBringYourOwnRefusesManagedDatabases(t *testing.T) {
	pgURL := apptest.PostgresURL(t)
	env := apptest.Start(t, "--postgres-admin-url="+pgURL)
	admin := env.Client(apptest.ConnectProto)
	victims := createOrg(t, admin, "victims")
	victim := dataEnv(t, admin, pgURL, victims, "prod", "postgres")
	attackers := createOrg(t, admin, "attackers")
	// Roles that reach beyond their own database: one that may create
	// roles, one that is a member of the victim's managed role.
	su := apptest.PostgresPool(t, pgURL)
	managedRole, err := provision.PostgresName(victim.GetId())
	if err != nil {
		t.Fatal(err)
	}
	roleURL := func(role string) string {
		u, err := url.Parse(pgURL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		return u.String()
	}
	creator := apptest.RandomName("envplane_apptest_creator_")
	member := apptest.RandomName("envplane_apptest_member_")
	t.Cleanup(func() { apptest.DropPostgresObjects(t, pgURL, creator); apptest.DropPostgresObjects(t, pgURL, member) })
	for _, stmt := range []string{
		"CREATE ROLE " + creator + " LOGIN CREATEROLE",
		"CREATE ROLE " + member + " LOGIN",
		"GRANT " + managedRole + " TO " + member,
	} {
		if _, err := su.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	brought := map[string]string{
		"another environment's database":    victim.GetDatabaseUrl(),
		"a superuser":                       pgURL,
		"a role that creates roles":         roleURL(creator),
		"a member of an environment's role": roleURL(member),
	}
	for _, p := range []apptest.Protocol{apptest.ConnectJSON, apptest.REST} {
		c := env.Client(p)
		for name, u := range brought {
			_, err := c.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
				OrganizationId: attackers.GetId(), Slug: "stolen", Driver: "postgres", DatabaseUrl: u, DatabaseSecret: "guess",
			}))
			if apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonDatabaseURLManaged) {
				apptest.WantFieldViolation(t, err, "database_url")
			}
			if envs := listEnvs(t, c, attackers.GetId()); len(envs) != 0 {
				t.Errorf("%s/%s: the refused create left %v", p, name, envs)
			}
		}
	}
}

// TestStorageLimit is issue 18's eighth case on every engine: writes that
// would take an environment past its storage_limit_mb are refused with
// RESOURCE_EXHAUSTED STORAGE_LIMIT_EXCEEDED and change nothing; reads and
// deletes keep working; raising the limit lets writes in again.
func TestStorageLimit(t *testing.T) {
	tursoURL := apptest.StartTursodb(t) // before the server, so it stops after it
	env, pgURL := dataServer(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "quota")
	limits := map[string]int64{"memory": 1, "sqlite": 1, "turso": 1}
	if pgURL != "" {
		// An empty PostgreSQL database takes about 8 MB on disk.
		limits["postgres"] = 12
	}
	// A body that does not compress: PostgreSQL compresses long values,
	// and the limit counts what the database takes.
	var b strings.Builder
	rnd := rand.New(rand.NewPCG(8, 18))
	for b.Len() < 2000 {
		fmt.Fprintf(&b, "%016x", rnd.Uint64())
	}
	body := b.String()
	for engine, limitMB := range limits {
		t.Run(engine, func(t *testing.T) {
			req := &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "q-" + engine, Driver: engine, StorageLimitMb: limitMB}
			if engine == "turso" {
				req.DatabaseUrl, req.DatabaseSecret = tursoURL, "any"
			}
			resp, err := admin.CreateEnvironment(t.Context(), connect.NewRequest(req))
			if err != nil {
				t.Fatalf("CreateEnvironment: %v", err)
			}
			e := resp.Msg.GetEnvironment()
			if engine == "postgres" {
				apptest.PostgresEnvironmentCleanup(t, pgURL, e.GetId())
			}
			id := e.GetId()
			dataDefine(t, env, id, "notes", dataField("body", "text"))
			data := env.DataClient(apptest.ConnectProto, env.AdminToken())
			written := 0
			var refused error
			for range int(limitMB<<20) / (50 * len(body)) * 2 {
				writes := make([]*datav1.RecordWrite, 50)
				for i := range writes {
					writes[i] = &datav1.RecordWrite{Operation: &datav1.RecordWrite_Create{Create: &datav1.CreateRecordRequest{Object: "notes", Record: dataRec(map[string]any{"body": body})}}}
				}
				_, err := data.BatchWriteRecords(t.Context(), connect.NewRequest(&datav1.BatchWriteRecordsRequest{EnvironmentId: id, Writes: writes}))
				if err != nil {
					refused = err
					break
				}
				written += len(writes)
			}
			if !apptest.WantError(t, refused, connect.CodeResourceExhausted, dberror.ReasonStorageLimitExceeded) {
				return
			}
			// A batch too big for the room left is refused whole; single
			// records fill the rest, up to the limit.
			for range 51 {
				_, err = data.CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: id, Object: "notes", Record: dataRec(map[string]any{"body": body})}))
				if err != nil {
					break
				}
				written++
			}
			apptest.WantError(t, err, connect.CodeResourceExhausted, dberror.ReasonStorageLimitExceeded)
			if bytes := written * len(body); bytes > int(limitMB<<20) {
				t.Errorf("%d bytes of records were written under a limit of %d MB", bytes, limitMB)
			}
			// Nothing of the refused writes was kept; reads and deletes work.
			rows := dataList(t, data, &datav1.ListRecordsRequest{EnvironmentId: id, Object: "notes", PageSize: 1000})
			if len(rows) != written {
				t.Fatalf("%d records stored; want the %d acknowledged", len(rows), written)
			}
			if _, err := data.DeleteRecord(t.Context(), connect.NewRequest(&datav1.DeleteRecordRequest{EnvironmentId: id, Object: "notes", Id: dataID(rows[0])})); err != nil {
				t.Errorf("DeleteRecord at the limit: %v", err)
			}
			updateEnv(t, admin, &environmentv1.UpdateEnvironmentRequest{Id: id, StorageLimitMb: proto.Int64(limitMB * 4)})
			dataCreate(t, data, id, "notes", map[string]any{"body": body})
		})
	}
}

// mountTmpfs mounts a tmpfs of sizeMB at a new directory, unmounted when t
// ends (after everything registered later, the server included). A machine
// that cannot mount (not root, no CAP_SYS_ADMIN) fails t: CI runs as root
// and can, and a skipped full-disk test would prove nothing there. Only an
// explicit ENVPLANE_TEST_NO_TMPFS=1 (a developer's machine) skips it.
func mountTmpfs(t *testing.T, sizeMB int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small-disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("ENVPLANE_TEST_NO_TMPFS") == "1" {
		t.Skip("ENVPLANE_TEST_NO_TMPFS=1: the full-disk test needs a tmpfs mount (root, CAP_SYS_ADMIN)")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", sizeMB), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("cannot mount a tmpfs (the full-disk test needs root and CAP_SYS_ADMIN; set ENVPLANE_TEST_NO_TMPFS=1 to skip it on a machine without): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes a file into dir until the file system is full and
// returns the function that removes it.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	_ = f.Close()
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFullDisk is issue 18's sixth case: on a full disk every write, of
// data, metadata or the control plane, succeeds or answers
// RESOURCE_EXHAUSTED STORAGE_FULL, changing nothing; reads keep working;
// once room is made everything acknowledged is there and the schema is
// whole.
func TestFullDisk(t *testing.T) {
	dir := mountTmpfs(t, 8)
	env := apptest.StartDir(t, dir)
	e := sqliteEnv(t, env, "fulldisk")
	id := e.GetId()
	admin := env.Client(apptest.ConnectProto)
	meta := env.MetadataClient(apptest.ConnectProto, env.AdminToken())
	data := env.DataClient(apptest.ConnectProto, env.AdminToken())
	dataDefine(t, env, id, "notes", dataField("body", "text"))
	acked := map[string]bool{}
	for range 20 {
		acked[dataID(dataCreate(t, data, id, "notes", map[string]any{"body": "before"}))] = true
	}

	free := fillDisk(t, dir)
	full := 0
	answer := func(what string, err error) {
		t.Helper()
		switch {
		case err == nil:
		case connect.CodeOf(err) == connect.CodeResourceExhausted && apierr.Reason(err) == dberror.ReasonStorageFull:
			full++
		default:
			t.Errorf("%s on a full disk answered %v; want success or RESOURCE_EXHAUSTED STORAGE_FULL", what, err)
		}
	}
	body := strings.Repeat("y", 4000)
	for i := range 200 {
		resp, err := data.CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: id, Object: "notes", Record: dataRec(map[string]any{"body": body})}))
		answer("CreateRecord", err)
		if err == nil {
			acked[dataID(resp.Msg.GetRecord())] = true
		}
		if i%20 == 0 {
			_, err = meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: id, Name: fmt.Sprintf("more%d", i), Object: metaObject(metaText("body"))}))
			answer("PutObject", err)
			_, err = admin.CreateOrganization(t.Context(), connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: fmt.Sprintf("full-%d", i), DisplayName: "Full"}))
			answer("CreateOrganization", err)
		}
	}
	t.Logf("%d writes on the full disk answered STORAGE_FULL", full)
	if full == 0 {
		t.Fatal("no write on the full disk answered STORAGE_FULL")
	}
	if rows, err := listErr(data, id, "notes", ""); err != nil || len(rows) == 0 {
		t.Errorf("ListRecords on a full disk = %d rows, %v; want them", len(rows), err)
	}

	free()
	// Room made: every acknowledged record is there, every defined object
	// has its table, and writes work.
	got := map[string]bool{}
	for _, r := range dataList(t, data, &datav1.ListRecordsRequest{EnvironmentId: id, Object: "notes", PageSize: 1000}) {
		got[dataID(r)] = true
	}
	for rid := range acked {
		if !got[rid] {
			t.Errorf("acknowledged record %s is missing", rid)
		}
	}
	for _, name := range metaNames(t, meta, id) {
		if o := metaGet(t, meta, id, name); o.GetDrift() != "" {
			t.Errorf("object %s drifted on the full disk: %s", name, o.GetDrift())
		}
		dataCreate(t, data, id, name, map[string]any{"body": "after"})
	}
	if tables := env.SQLiteTables(t, id); len(tables) != len(metaNames(t, meta, id))+2 {
		t.Errorf("tables %v for objects %v; want one each (and envplane's two)", tables, metaNames(t, meta, id))
	}
	db := env.OpenSQLiteEnv(t, id, false)
	var check string
	if err := db.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check = %q, %v", check, err)
	}
	createOrg(t, admin, "after-full")
}

// TestForcedDeleteSparesABroughtDatabase: in a database its user brought,
// a forced delete drops only what envplane's ledger knows, and a repair
// cannot take a table over without its columns matching.
func TestForcedDeleteSparesABroughtDatabase(t *testing.T) {
	pgURL := apptest.PostgresURL(t)
	env := apptest.Start(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "byo-owner")
	su := apptest.PostgresPool(t, pgURL)
	role := apptest.RandomName("envplane_apptest_byo_")
	t.Cleanup(func() { apptest.DropPostgresObjects(t, pgURL, role) })
	for _, stmt := range []string{"CREATE ROLE " + role + " LOGIN PASSWORD 'owner-secret'", "CREATE DATABASE " + role + " OWNER " + role} {
		if _, err := su.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User, u.Path = url.User(role), "/"+role
	conn, err := apptest.ConnectPostgres(t.Context(), u.String(), "owner-secret")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"CREATE TABLE sessions (id text PRIMARY KEY, created_at timestamptz, updated_at timestamptz, etag text, payload text)",
		"INSERT INTO sessions VALUES ('s1', now(), now(), 'e', 'keep me')",
		"CREATE TABLE accounts (id serial PRIMARY KEY, name text)",
	} {
		if _, err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	e := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "own", Driver: "postgres", DatabaseUrl: u.String(), DatabaseSecret: "owner-secret",
	})
	meta := env.MetadataClient(apptest.REST, env.AdminToken())
	for _, name := range []string{"sessions", "accounts"} {
		_, err := meta.DeleteObject(t.Context(), connect.NewRequest(&metadatav1.DeleteObjectRequest{EnvironmentId: e.GetId(), Name: name, Force: true}))
		apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)
		_, err = meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: e.GetId(), Name: name,
			Object: metaObject(metaText("extra")), Repair: metadatav1.Repair_REPAIR_REAPPLY}))
		apptest.WantError(t, err, connect.CodeInvalidArgument, metadata.ReasonInvalidObjectDefinition)
	}
	_, err = meta.PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{EnvironmentId: e.GetId(), Name: "accounts",
		Object: metaObject(metaText("name")), Repair: metadatav1.Repair_REPAIR_ADOPT}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, dberror.ReasonSchemaDrift)
	var payload string
	if err := conn.QueryRow(t.Context(), "SELECT payload FROM sessions WHERE id = 's1'").Scan(&payload); err != nil || payload != "keep me" {
		t.Errorf("the owner's row = %q, %v; want it kept", payload, err)
	}
	var cols int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM information_schema.columns WHERE table_name = 'accounts'").Scan(&cols); err != nil || cols != 2 {
		t.Errorf("accounts has %d columns, %v; want its own two", cols, err)
	}
	_, err = admin.UpdateEnvironment(t.Context(), connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: e.GetId(), StorageLimitMb: proto.Int64(1 << 43)}))
	apptest.WantError(t, err, connect.CodeInvalidArgument, "")
}

// TestBroughtDatabaseServesOneEnvironment: a database one environment
// brought cannot be brought again, by another organization or the same,
// however its URL is spelt (two environments would share its tables); a
// retried create of the same environment is not a second one, and a
// database brought again after its environment was deleted is welcome.
func TestBroughtDatabaseServesOneEnvironment(t *testing.T) {
	tursoURL := apptest.StartTursodb(t) // before the server, so it stops after it
	pgURL := apptest.PostgresURL(t)
	env := apptest.Start(t)
	admin := env.Client(apptest.ConnectProto)
	orgA, orgB := createOrg(t, admin, "owner-a"), createOrg(t, admin, "owner-b")
	su := apptest.PostgresPool(t, pgURL)
	role := apptest.RandomName("envplane_apptest_once_")
	t.Cleanup(func() { apptest.DropPostgresObjects(t, pgURL, role) })
	for _, stmt := range []string{"CREATE ROLE " + role + " LOGIN PASSWORD 'once-secret'", "CREATE DATABASE " + role + " OWNER " + role} {
		if _, err := su.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User, u.Path, u.RawQuery = url.User(role), "/"+role, "sslmode=disable"
	pgOwn := u.String()
	first := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
		OrganizationId: orgA.GetId(), Slug: "own", Driver: "postgres", DatabaseUrl: pgOwn, DatabaseSecret: "once-secret", RequestId: "bring-1",
	})
	// The retry of the same create answers the same environment.
	retried := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{
		OrganizationId: orgA.GetId(), Slug: "own", Driver: "postgres", DatabaseUrl: pgOwn, DatabaseSecret: "once-secret", RequestId: "bring-1",
	})
	if retried.GetId() != first.GetId() {
		t.Errorf("the retried create made %s, want %s", retried.GetId(), first.GetId())
	}
	upper := *u
	upper.Host = strings.ToUpper(u.Hostname()) + ":" + u.Port()
	upper.RawQuery = "sslmode=disable&application_name=other"
	createT := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: orgA.GetId(), Slug: "lite-t", Driver: "turso", DatabaseUrl: tursoURL, DatabaseSecret: "any"})
	for _, tc := range []struct {
		name, org, driver, url, secret string
	}{
		{"another organization", orgB.GetId(), "postgres", pgOwn, "once-secret"},
		{"the same organization", orgA.GetId(), "postgres", pgOwn, "once-secret"},
		{"another spelling", orgB.GetId(), "postgres", upper.String(), "once-secret"},
		{"a libSQL database", orgB.GetId(), "turso", tursoURL, "any"},
	} {
		_, err := admin.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: tc.org, Slug: "again", Driver: tc.driver, DatabaseUrl: tc.url, DatabaseSecret: tc.secret,
		}))
		if apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonDatabaseURLInUse) {
			apptest.WantFieldViolation(t, err, "database_url")
		}
	}
	// Once its environment is gone, the database may be brought again.
	for _, e := range []*environmentv1.Environment{first, createT} {
		if _, err := admin.DeleteEnvironment(t.Context(), connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: e.GetId(), Force: true})); err != nil {
			t.Fatalf("DeleteEnvironment: %v", err)
		}
	}
	createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: orgB.GetId(), Slug: "again", Driver: "postgres", DatabaseUrl: pgOwn, DatabaseSecret: "once-secret"})
}
