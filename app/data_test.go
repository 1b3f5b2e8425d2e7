package app_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/data"
)

// dataSuite is the fixture of the per-protocol data tests: a server of its
// own, organization acme with environment dev on the suite's engine, and a
// DataService client speaking the protocol with the admin token. Every
// call names dev explicitly (the environment_id field, or the
// /api/v1/environments/{id}/… path over REST).
type dataSuite struct {
	env    *apptest.Env
	p      apptest.Protocol
	engine string
	admin  client
	org    *environmentv1.Organization
	dev    *environmentv1.Environment
	c      dataClient
}

// id is dev's id.
func (s *dataSuite) id() string { return s.dev.GetId() }

// define defines an object in dev.
func (s *dataSuite) define(t *testing.T, name string, fields ...*metadatav1.Field) {
	t.Helper()
	dataDefine(t, s.env, s.id(), name, fields...)
}

// dataForEachProtocol runs fn in a parallel subtest per protocol, each
// against a server of its own on the protocol's engine (dataSuiteEngine).
func dataForEachProtocol(t *testing.T, fn func(t *testing.T, s *dataSuite)) {
	t.Helper()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			env, pgURL := dataServer(t)
			engine := dataSuiteEngine(p, pgURL)
			t.Logf("environments on %s", engine)
			admin := env.Client(apptest.ConnectProto)
			org := createOrg(t, admin, "acme")
			dev := dataEnv(t, admin, pgURL, org, "dev", engine)
			fn(t, &dataSuite{env: env, p: p, engine: engine, admin: admin, org: org, dev: dev, c: env.DataClient(p, env.AdminToken())})
		})
	}
}

// create is CreateRecord in dev.
func (s *dataSuite) create(t *testing.T, object string, r map[string]any) *structpb.Struct {
	t.Helper()
	return dataCreate(t, s.c, s.id(), object, r)
}

// createErr is CreateRecord in dev expected to fail.
func (s *dataSuite) createErr(t *testing.T, object string, r *structpb.Struct) error {
	t.Helper()
	_, err := s.c.CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: s.id(), Object: object, Record: r}))
	return err
}

func (s *dataSuite) get(t *testing.T, object, id string) *structpb.Struct {
	t.Helper()
	return dataGet(t, s.c, s.id(), object, id)
}

func (s *dataSuite) getErr(t *testing.T, object, id string) error {
	t.Helper()
	_, err := s.c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: s.id(), Object: object, Id: id}))
	return err
}

func (s *dataSuite) update(t *testing.T, req *datav1.UpdateRecordRequest) *structpb.Struct {
	t.Helper()
	req.EnvironmentId = s.id()
	return dataUpdate(t, s.c, req)
}

func (s *dataSuite) updateErr(t *testing.T, req *datav1.UpdateRecordRequest) error {
	t.Helper()
	req.EnvironmentId = s.id()
	_, err := s.c.UpdateRecord(t.Context(), connect.NewRequest(req))
	return err
}

func (s *dataSuite) deleteErr(t *testing.T, object, id, etag string) error {
	t.Helper()
	_, err := s.c.DeleteRecord(t.Context(), connect.NewRequest(&datav1.DeleteRecordRequest{EnvironmentId: s.id(), Object: object, Id: id, Etag: etag}))
	return err
}

func (s *dataSuite) all(t *testing.T, object string) []*structpb.Struct {
	t.Helper()
	return dataAll(t, s.c, s.id(), object)
}

// dataMaxSafe is the largest integer JSON carries exactly, 2^53-1.
const dataMaxSafe = 1<<53 - 1

// TestDataRecords covers one record at a time over every protocol: exact
// round trips of every field type, defaults, client ids, PATCH updates and
// update masks, etags, deletes, every validation error with its field
// paths (and nothing written), unique fields, the 2^53 integer bound and
// undefined objects.
func TestDataRecords(t *testing.T) {
	t.Parallel()
	dataForEachProtocol(t, func(t *testing.T, s *dataSuite) {
		s.define(t, "item", dataItemFields()...)

		t.Run("round trip of every field type", func(t *testing.T) {
			in := map[string]any{
				"title":   "Widget ✓ «ü»",
				"count":   -42,
				"price":   1234.5678,
				"active":  false,
				"seen_at": "2026-03-04T05:06:07.123456789+02:00",
				"due":     "2026-02-28",
				"extra":   map[string]any{"a": []any{1, "x", true, nil}, "b": map[string]any{"c": 2.5, "d": ""}},
				"status":  "open",
				"code":    "W-1",
				"note":    "line one\nline \"two\"\ttab",
			}
			want := dataWithNulls(in, dataItemNames)
			// Stored in UTC, to the microsecond.
			want["seen_at"] = "2026-03-04T03:06:07.123456Z"
			created := s.create(t, "item", in)
			dataWantRecord(t, "CreateRecord", created, want)

			id, err := uuid.Parse(dataID(created))
			if err != nil || id.Version() != 7 {
				t.Errorf("generated id %q is not a UUIDv7 (%v)", dataID(created), err)
			}
			if c, u := dataTime(t, created, "created_at"), dataTime(t, created, "updated_at"); !c.Equal(u) || c.IsZero() {
				t.Errorf("created_at %v, updated_at %v: want equal and set on create", c, u)
			}
			got := s.get(t, "item", dataID(created))
			if diff := cmp.Diff(created.AsMap(), got.AsMap()); diff != "" {
				t.Errorf("GetRecord differs from what CreateRecord returned (-create +get):\n%s", diff)
			}

			// Other shapes of the same types: json scalars and arrays,
			// zero values, the ends of the integer range.
			for i, in := range []map[string]any{
				{"title": "", "count": 0, "price": 0, "active": true, "extra": []any{1, 2.5, "three"}, "status": "new", "note": ""},
				{"title": "b", "count": dataMaxSafe, "price": -1e-300, "extra": "just a string", "seen_at": "1970-01-01T00:00:00Z", "due": "0001-01-01"},
				{"title": "c", "count": -dataMaxSafe, "price": 1.7976931348623157e308, "extra": 7, "seen_at": "2999-12-31T23:59:59.999999Z", "due": "9999-12-31"},
				{"title": strings.Repeat("é", 20), "extra": false, "code": "W-2"},
			} {
				want := dataWithNulls(map[string]any{"active": true, "status": "new", "note": "-"}, dataItemNames)
				for k, v := range in {
					want[k] = v
				}
				created := s.create(t, "item", in)
				dataWantRecord(t, "CreateRecord "+string(rune('A'+i)), created, want)
				dataWantRecord(t, "GetRecord "+string(rune('A'+i)), s.get(t, "item", dataID(created)), want)
			}

			// Integers as decimal strings: beyond 2^53 they come back as
			// strings, within it as numbers; the ends of int64 hold.
			for in, out := range map[string]any{
				"9007199254740993": "9007199254740993", "-9223372036854775808": "-9223372036854775808",
				"9223372036854775807": "9223372036854775807", "42": 42.0,
			} {
				rec := s.create(t, "item", map[string]any{"title": "big", "count": in})
				for what, got := range map[string]*structpb.Struct{"CreateRecord": rec, "GetRecord": s.get(t, "item", dataID(rec))} {
					if v := got.AsMap()["count"]; v != out {
						t.Errorf("%s of count %q = %#v, want %#v", what, in, v, out)
					}
				}
			}

			// read_mask: the fields named, and the system fields always.
			resp, err := s.c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{
				EnvironmentId: s.id(), Object: "item", Id: dataID(created), ReadMask: dataMask("count", "title"),
			}))
			if err != nil {
				t.Fatalf("GetRecord with read_mask: %v", err)
			}
			wantMasked := map[string]any{"title": "Widget ✓ «ü»", "count": -42.0}
			for _, f := range dataSystemFields {
				wantMasked[f] = created.AsMap()[f]
			}
			if diff := cmp.Diff(wantMasked, resp.Msg.GetRecord().AsMap()); diff != "" {
				t.Errorf("GetRecord with read_mask (-want +got):\n%s", diff)
			}
			// System fields only: none of the object's.
			resp, err = s.c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{
				EnvironmentId: s.id(), Object: "item", Id: dataID(created), ReadMask: dataMask("id", "etag"),
			}))
			if err != nil {
				t.Fatalf("GetRecord with read_mask id: %v", err)
			}
			for k := range resp.Msg.GetRecord().GetFields() {
				if !slices.Contains(dataSystemFields, k) {
					t.Errorf("GetRecord with read_mask [id etag] returned field %s", k)
				}
			}
			_, err = s.c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{
				EnvironmentId: s.id(), Object: "item", Id: dataID(created), ReadMask: dataMask("title", "nope"),
			}))
			apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidMask)
		})

		t.Run("defaults", func(t *testing.T) {
			got := s.create(t, "item", map[string]any{"title": "only a title"})
			dataWantRecord(t, "defaults applied", got, dataWithNulls(map[string]any{
				"title": "only a title", "active": true, "status": "new", "note": "-",
			}, dataItemNames))
			// A value sent, even false or null, is not replaced by the default.
			got = s.create(t, "item", map[string]any{"title": "explicit", "active": false, "status": "done", "note": nil})
			dataWantRecord(t, "values sent kept", got, dataWithNulls(map[string]any{
				"title": "explicit", "active": false, "status": "done",
			}, dataItemNames))
		})

		t.Run("client-supplied id", func(t *testing.T) {
			const id = "import-2024.01_A"
			got := s.create(t, "item", map[string]any{"id": id, "title": "first"})
			if dataID(got) != id {
				t.Fatalf("id = %q, want the id sent, %q", dataID(got), id)
			}
			before := s.all(t, "item")
			err := s.createErr(t, "item", dataRec(map[string]any{"id": id, "title": "second"}))
			apptest.WantError(t, err, connect.CodeAlreadyExists, data.ReasonRecordExists)
			dataWantUnchanged(t, s.c, s.id(), "item", before)
			if title := s.get(t, "item", id).AsMap()["title"]; title != "first" {
				t.Errorf("after the duplicate, title = %v, want first", title)
			}
			for name, bad := range map[string]any{
				"space":     "has space",
				"empty":     "",
				"too long":  strings.Repeat("x", 129),
				"slash":     "a/b",
				"a number":  5,
				"null":      nil,
				"non-ascii": "idé",
			} {
				err := s.createErr(t, "item", dataRec(map[string]any{"id": bad, "title": "bad id"}))
				if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
					dataWantViolations(t, err, "record.id")
				} else {
					t.Logf("id %s", name)
				}
			}
			dataWantUnchanged(t, s.c, s.id(), "item", before)
		})

		t.Run("update", func(t *testing.T) {
			in := map[string]any{"title": "upd", "count": 1, "price": 2.5, "active": true, "seen_at": "2026-01-01T00:00:00Z",
				"due": "2026-01-02", "extra": map[string]any{"k": "v"}, "status": "open", "code": "UPD-1", "note": "n"}
			orig := s.create(t, "item", in)
			id := dataID(orig)

			// PATCH: only the field sent changes.
			got := s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, Record: dataRec(map[string]any{"count": 7})})
			want := dataWithNulls(in, dataItemNames)
			want["count"] = 7
			dataWantRecord(t, "partial update", got, want)
			if dataID(got) != id || dataETag(got) == dataETag(orig) {
				t.Errorf("update: id %q (want %q), etag %q (was %q, want a new one)", dataID(got), id, dataETag(got), dataETag(orig))
			}
			if !dataTime(t, got, "created_at").Equal(dataTime(t, orig, "created_at")) {
				t.Errorf("update changed created_at: %v → %v", dataTime(t, orig, "created_at"), dataTime(t, got, "created_at"))
			}
			if dataTime(t, got, "updated_at").Before(dataTime(t, orig, "updated_at")) {
				t.Errorf("updated_at went back: %v → %v", dataTime(t, orig, "updated_at"), dataTime(t, got, "updated_at"))
			}
			if diff := cmp.Diff(got.AsMap(), s.get(t, "item", id).AsMap()); diff != "" {
				t.Errorf("GetRecord after update differs from UpdateRecord's answer (-update +get):\n%s", diff)
			}

			// Several fields, and null clearing an optional one.
			got = s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, Record: dataRec(map[string]any{
				"price": nil, "status": "done", "extra": []any{"replaced"}, "seen_at": "2026-06-01T10:00:00.5-01:00",
			})})
			want["price"], want["status"], want["extra"], want["seen_at"] = nil, "done", []any{"replaced"}, "2026-06-01T11:00:00.5Z"
			dataWantRecord(t, "update of several fields", got, want)

			// update_mask: the masked fields change; one absent from the
			// record is cleared; a field sent but not masked is ignored.
			got = s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, UpdateMask: dataMask("count", "note", "seen_at"),
				Record: dataRec(map[string]any{"count": 8, "title": "ignored", "seen_at": "2026-07-01T00:00:00Z"})})
			want["count"], want["note"], want["seen_at"] = 8, nil, "2026-07-01T00:00:00Z"
			dataWantRecord(t, "update with update_mask", got, want)

			before := s.all(t, "item")
			// A mask clearing a required field, or naming an unknown one,
			// changes nothing.
			err := s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, UpdateMask: dataMask("title"), Record: dataRec(map[string]any{})})
			if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
				dataWantViolations(t, err, "record.title")
			}
			err = s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, UpdateMask: dataMask("count", "nope"), Record: dataRec(map[string]any{"count": 1})})
			apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidMask)
			err = s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: "no-such-record", Record: dataRec(map[string]any{"count": 1})})
			apptest.WantError(t, err, connect.CodeNotFound, data.ReasonRecordNotFound)
			dataWantUnchanged(t, s.c, s.id(), "item", before)
		})

		t.Run("etag", func(t *testing.T) {
			orig := s.create(t, "item", map[string]any{"title": "v1"})
			id := dataID(orig)
			v2 := s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, Etag: dataETag(orig), Record: dataRec(map[string]any{"title": "v2"})})
			before := s.all(t, "item")

			err := s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, Etag: dataETag(orig), Record: dataRec(map[string]any{"title": "lost update"})})
			apptest.WantError(t, err, connect.CodeAborted, data.ReasonETagMismatch)
			err = s.deleteErr(t, "item", id, dataETag(orig))
			apptest.WantError(t, err, connect.CodeAborted, data.ReasonETagMismatch)
			dataWantUnchanged(t, s.c, s.id(), "item", before)

			// Racing writers holding the same etag: exactly one wins.
			const racers = 8
			errs := make(chan error, racers)
			for i := range racers {
				go func() {
					_, err := s.c.UpdateRecord(t.Context(), connect.NewRequest(&datav1.UpdateRecordRequest{EnvironmentId: s.id(),
						Object: "item", Id: id, Etag: dataETag(v2), Record: dataRec(map[string]any{"count": i})}))
					errs <- err
				}()
			}
			won := 0
			for range racers {
				if err := <-errs; err == nil {
					won++
				} else {
					apptest.WantError(t, err, connect.CodeAborted, data.ReasonETagMismatch)
				}
			}
			if won != 1 {
				t.Errorf("%d of %d updates with the same etag succeeded, want exactly 1", won, racers)
			}
			v2 = s.get(t, "item", id)
			v3 := s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, Etag: dataETag(v2), Record: dataRec(map[string]any{"title": "v3"})})
			if v3.AsMap()["title"] != "v3" || dataETag(v3) == dataETag(v2) {
				t.Errorf("update with the current etag = %v", v3.AsMap())
			}
			if err := s.deleteErr(t, "item", id, dataETag(v3)); err != nil {
				t.Errorf("DeleteRecord with the current etag: %v", err)
			}
		})

		t.Run("delete", func(t *testing.T) {
			r := s.create(t, "item", map[string]any{"title": "doomed"})
			keep := s.create(t, "item", map[string]any{"title": "kept"})
			id := dataID(r)
			if err := s.deleteErr(t, "item", id, ""); err != nil {
				t.Fatalf("DeleteRecord: %v", err)
			}
			apptest.WantError(t, s.getErr(t, "item", id), connect.CodeNotFound, data.ReasonRecordNotFound)
			apptest.WantError(t, s.deleteErr(t, "item", id, ""), connect.CodeNotFound, data.ReasonRecordNotFound)
			apptest.WantError(t, s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: id, Record: dataRec(map[string]any{"title": "back"})}),
				connect.CodeNotFound, data.ReasonRecordNotFound)
			all := dataIDs(s.all(t, "item"))
			if slices.Contains(all, id) || !slices.Contains(all, dataID(keep)) {
				t.Errorf("after delete, list = %q: want %s gone and %s kept", all, id, dataID(keep))
			}
		})

		t.Run("validation", func(t *testing.T) {
			existing := s.create(t, "item", map[string]any{"title": "valid", "code": "VAL-1"})
			before := s.all(t, "item")
			creates := []struct {
				name   string
				record map[string]any
				fields []string
			}{
				{"every violation at once", map[string]any{
					"nope": 1, "count": "x", "price": "1.5", "active": "yes", "seen_at": "yesterday",
					"due": "2026-02-30", "extra": map[string]any{"fine": true}, "status": "bogus",
				}, []string{"record.nope", "record.count", "record.price", "record.active", "record.seen_at", "record.due", "record.status", "record.title"}},
				{"required missing", map[string]any{"count": 1}, []string{"record.title"}},
				{"required null", map[string]any{"title": nil}, []string{"record.title"}},
				{"text of another type", map[string]any{"title": 5}, []string{"record.title"}},
				{"over max_length", map[string]any{"title": strings.Repeat("é", 21)}, []string{"record.title"}},
				{"not a select option", map[string]any{"title": "x", "status": "NEW"}, []string{"record.status"}},
				{"fractional integer", map[string]any{"title": "x", "count": 1.5}, []string{"record.count"}},
				{"integer as a word", map[string]any{"title": "x", "count": "one"}, []string{"record.count"}},
				{"integer as a fraction string", map[string]any{"title": "x", "count": "1.5"}, []string{"record.count"}},
				{"integer beyond 2^53 as a number", map[string]any{"title": "x", "count": float64(1 << 54)}, []string{"record.count"}},
				{"date without a day", map[string]any{"title": "x", "due": "2026-02"}, []string{"record.due"}},
				{"timestamp without a time", map[string]any{"title": "x", "seen_at": "2026-01-01"}, []string{"record.seen_at"}},
				{"unknown fields", map[string]any{"title": "x", "Title": "y", "extra_field": 1}, []string{"record.Title", "record.extra_field"}},
				{"system fields", map[string]any{"title": "x", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "etag": "abc"},
					[]string{"record.created_at", "record.updated_at", "record.etag"}},
				// What some engine cannot store is refused by all alike.
				{"NUL in text", map[string]any{"title": "a\x00b", "code": "\x00"}, []string{"record.title", "record.code"}},
				{"NUL in json", map[string]any{"title": "x", "extra": map[string]any{"k": []any{"a\x00"}}}, []string{"record.extra"}},
				{"NUL in a json key", map[string]any{"title": "x", "extra": map[string]any{"k\x00": 1}}, []string{"record.extra"}},
				{"date in year 0", map[string]any{"title": "x", "due": "0000-12-31"}, []string{"record.due"}},
				// Written back in UTC, it would need a fifth digit of year.
				{"timestamp past year 9999 in UTC", map[string]any{"title": "x", "seen_at": "9999-12-31T23:00:00-05:00"}, []string{"record.seen_at"}},
				{"ids a URL cannot hold", map[string]any{"id": "..", "title": "x"}, []string{"record.id"}},
				{"id .", map[string]any{"id": ".", "title": "x"}, []string{"record.id"}},
			}
			// Binary protocols can carry numbers JSON has not.
			if s.p == apptest.ConnectProto || s.p == apptest.GRPC || s.p == apptest.GRPCWeb {
				for _, n := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
					creates = append(creates, struct {
						name   string
						record map[string]any
						fields []string
					}{fmt.Sprint(n), map[string]any{"title": "x", "price": n, "count": n, "extra": []any{n}}, []string{"record.price", "record.count", "record.extra"}})
				}
			}
			for _, tc := range creates {
				err := s.createErr(t, "item", dataRec(tc.record))
				if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
					dataWantViolations(t, err, tc.fields...)
				} else {
					t.Logf("create %s", tc.name)
				}
			}
			updates := []struct {
				name   string
				record map[string]any
				fields []string
			}{
				{"several violations", map[string]any{"title": 5, "nope": 1, "count": "x", "status": "bogus"},
					[]string{"record.title", "record.nope", "record.count", "record.status"}},
				{"required cleared", map[string]any{"title": nil, "count": 3}, []string{"record.title"}},
				{"over max_length", map[string]any{"title": strings.Repeat("x", 21)}, []string{"record.title"}},
				{"id", map[string]any{"id": "another"}, []string{"record.id"}},
				{"system fields", map[string]any{"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "etag": dataETag(existing)},
					[]string{"record.created_at", "record.updated_at", "record.etag"}},
			}
			for _, tc := range updates {
				err := s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: dataID(existing), Record: dataRec(tc.record)})
				if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
					dataWantViolations(t, err, tc.fields...)
				} else {
					t.Logf("update %s", tc.name)
				}
			}
			// Over the record size limit (1 MiB), whatever the fields say.
			big := dataRec(map[string]any{"title": "big", "note": strings.Repeat("x", 1<<20)})
			apptest.WantError(t, s.createErr(t, "item", big), connect.CodeInvalidArgument, data.ReasonRecordTooLarge)
			apptest.WantError(t, s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: dataID(existing), Record: big}),
				connect.CodeInvalidArgument, data.ReasonRecordTooLarge)
			// No record at all is refused by the contract.
			if s.p != apptest.REST {
				err := s.createErr(t, "item", nil)
				apptest.WantError(t, err, connect.CodeInvalidArgument, server.ReasonValidation)
			} else {
				// Over REST no body is an empty record, which lacks title.
				res := raw(t, s.env, http.MethodPost, apptest.DataPath(s.id(), "item"), "application/json", "", "Bearer "+s.env.AdminToken())
				if res.status != http.StatusBadRequest || !strings.Contains(res.body, data.ReasonInvalidRecord) {
					t.Errorf("POST without a body = %d %s, want 400 %s", res.status, res.body, data.ReasonInvalidRecord)
				}
				// A body that is no JSON object writes nothing. (The REST
				// surface answers these 500 UNKNOWN for every service: the
				// transcoder's decoding error is not mapped to 400.)
				for _, body := range []string{"null", "[]", `"text"`, "{", `{"title": "x",}`} {
					res := raw(t, s.env, http.MethodPost, apptest.DataPath(s.id(), "item"), "application/json", body, "Bearer "+s.env.AdminToken())
					if res.status/100 == 2 {
						t.Errorf("POST body %q = %d %s, want an error", body, res.status, res.body)
					}
				}
			}
			dataWantUnchanged(t, s.c, s.id(), "item", before)
		})

		t.Run("unique", func(t *testing.T) {
			a := s.create(t, "item", map[string]any{"title": "a", "code": "U-1"})
			b := s.create(t, "item", map[string]any{"title": "b", "code": "U-2"})
			// NULL is no value: many records may leave a unique field empty.
			s.create(t, "item", map[string]any{"title": "c"})
			s.create(t, "item", map[string]any{"title": "d"})
			before := s.all(t, "item")
			err := s.createErr(t, "item", dataRec(map[string]any{"title": "dup", "code": "U-1"}))
			apptest.WantError(t, err, connect.CodeAlreadyExists, data.ReasonUniqueViolation)
			err = s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: dataID(b), Record: dataRec(map[string]any{"code": "U-1"})})
			apptest.WantError(t, err, connect.CodeAlreadyExists, data.ReasonUniqueViolation)
			dataWantUnchanged(t, s.c, s.id(), "item", before)
			// Unique is exact: another case is another value.
			s.create(t, "item", map[string]any{"title": "case", "code": "u-1"})
			// A record keeps its own value.
			s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: dataID(a), Record: dataRec(map[string]any{"code": "U-1", "title": "a2"})})
		})

		t.Run("integers beyond 2^53", func(t *testing.T) {
			r := s.create(t, "item", map[string]any{"title": "int", "count": dataMaxSafe})
			if got := r.GetFields()["count"].GetNumberValue(); got != dataMaxSafe {
				t.Errorf("count = %v, want %d", got, int64(dataMaxSafe))
			}
			got := dataList(t, s.c, &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "item", Filter: `count = 9007199254740991 AND title = "int"`})
			if len(got) != 1 || dataID(got[0]) != dataID(r) {
				t.Errorf("filter count = 2^53-1 found %q, want [%s]", dataIDs(got), dataID(r))
			}
			before := s.all(t, "item")
			for _, n := range []float64{1 << 53, -(1 << 53), 1e300, math.MaxInt64} {
				err := s.createErr(t, "item", dataRec(map[string]any{"title": "big", "count": n}))
				if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
					dataWantViolations(t, err, "record.count")
				}
				err = s.updateErr(t, &datav1.UpdateRecordRequest{Object: "item", Id: dataID(r), Record: dataRec(map[string]any{"count": n})})
				if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
					dataWantViolations(t, err, "record.count")
				}
			}
			if s.p == apptest.REST {
				// 2^53+1 as a JSON literal reads as 2^53: refused, never
				// stored rounded.
				res := raw(t, s.env, http.MethodPost, apptest.DataPath(s.id(), "item"), "application/json",
					`{"title":"big","count":9007199254740993}`, "Bearer "+s.env.AdminToken())
				if res.status != http.StatusBadRequest || !strings.Contains(res.body, data.ReasonInvalidRecord) {
					t.Errorf("POST count 2^53+1 = %d %s, want 400 %s", res.status, res.body, data.ReasonInvalidRecord)
				}
			}
			dataWantUnchanged(t, s.c, s.id(), "item", before)
		})

		t.Run("undefined object", func(t *testing.T) {
			ctx := t.Context()
			calls := map[string]func(context.Context) error{
				"CreateRecord": func(ctx context.Context) error {
					return errOf(s.c.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: s.id(), Object: "ghost", Record: dataRec(map[string]any{"a": 1})})))
				},
				"GetRecord": func(ctx context.Context) error {
					return errOf(s.c.GetRecord(ctx, connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: s.id(), Object: "ghost", Id: "x"})))
				},
				"ListRecords": func(ctx context.Context) error {
					return errOf(s.c.ListRecords(ctx, connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "ghost"})))
				},
				"UpdateRecord": func(ctx context.Context) error {
					return errOf(s.c.UpdateRecord(ctx, connect.NewRequest(&datav1.UpdateRecordRequest{EnvironmentId: s.id(), Object: "ghost", Id: "x", Record: dataRec(map[string]any{"a": 1})})))
				},
				"DeleteRecord": func(ctx context.Context) error {
					return errOf(s.c.DeleteRecord(ctx, connect.NewRequest(&datav1.DeleteRecordRequest{EnvironmentId: s.id(), Object: "ghost", Id: "x"})))
				},
				"BatchWriteRecords": func(ctx context.Context) error {
					return errOf(s.c.BatchWriteRecords(ctx, connect.NewRequest(&datav1.BatchWriteRecordsRequest{EnvironmentId: s.id(), Writes: []*datav1.RecordWrite{
						{Operation: &datav1.RecordWrite_Create{Create: &datav1.CreateRecordRequest{Object: "ghost", Record: dataRec(map[string]any{"a": 1})}}},
					}})))
				},
			}
			for name, call := range calls {
				if !apptest.WantError(t, call(ctx), connect.CodeNotFound, data.ReasonObjectNotDefined) {
					t.Logf("%s", name)
				}
			}
		})
	})
}
