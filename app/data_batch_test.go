package app_test

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/data"
)

func dataBatchCreate(object string, r map[string]any) *datav1.RecordWrite {
	return &datav1.RecordWrite{Operation: &datav1.RecordWrite_Create{Create: &datav1.CreateRecordRequest{Object: object, Record: dataRec(r)}}}
}

func dataBatchUpdate(object, id, etag string, r map[string]any) *datav1.RecordWrite {
	return &datav1.RecordWrite{Operation: &datav1.RecordWrite_Update{Update: &datav1.UpdateRecordRequest{Object: object, Id: id, Etag: etag, Record: dataRec(r)}}}
}

func dataBatchDelete(object, id, etag string) *datav1.RecordWrite {
	return &datav1.RecordWrite{Operation: &datav1.RecordWrite_Delete{Delete: &datav1.DeleteRecordRequest{Object: object, Id: id, Etag: etag}}}
}

// TestDataBatch covers BatchWriteRecords over every protocol: mixed writes
// across objects applied together, a failing third write applying nothing
// and naming index 2, and the size limits.
func TestDataBatch(t *testing.T) {
	t.Parallel()
	dataForEachProtocol(t, func(t *testing.T, s *dataSuite) {
		s.define(t, "item", dataItemFields()...)
		s.define(t, "tag", dataField("name", "text", dataRequired, dataUnique), dataField("weight", "integer"))
		batch := func(t *testing.T, writes ...*datav1.RecordWrite) (*datav1.BatchWriteRecordsResponse, error) {
			resp, err := s.c.BatchWriteRecords(t.Context(), connect.NewRequest(&datav1.BatchWriteRecordsRequest{EnvironmentId: s.id(), Writes: writes}))
			if err != nil {
				return nil, err
			}
			if h := resp.Header().Get(apptest.HeaderEnvironmentID); h != s.id() {
				t.Errorf("BatchWriteRecords: X-Environment-Id = %q, want %q", h, s.id())
			}
			return resp.Msg, nil
		}
		state := func() ([]*structpb.Struct, []*structpb.Struct) { return s.all(t, "item"), s.all(t, "tag") }
		wantState := func(t *testing.T, items, tags []*structpb.Struct) {
			t.Helper()
			dataWantUnchanged(t, s.c, s.id(), "item", items)
			dataWantUnchanged(t, s.c, s.id(), "tag", tags)
		}

		a := s.create(t, "item", map[string]any{"title": "a", "count": 1})
		b := s.create(t, "item", map[string]any{"title": "b"})
		red := s.create(t, "tag", map[string]any{"name": "red"})
		blue := s.create(t, "tag", map[string]any{"name": "blue", "weight": 1})

		t.Run("mixed writes across objects", func(t *testing.T) {
			resp, err := batch(t,
				dataBatchCreate("item", map[string]any{"id": "batch-c", "title": "c", "status": "open"}),
				dataBatchUpdate("item", dataID(a), dataETag(a), map[string]any{"count": 2}),
				dataBatchDelete("item", dataID(b), ""),
				dataBatchCreate("tag", map[string]any{"name": "green", "weight": 3}),
				dataBatchUpdate("tag", dataID(red), "", map[string]any{"name": "crimson"}),
				dataBatchDelete("tag", dataID(blue), dataETag(blue)),
				// A later write sees the earlier ones of its batch.
				dataBatchUpdate("item", "batch-c", "", map[string]any{"note": "updated in the same batch"}),
				// The name red was freed by write 4.
				dataBatchCreate("tag", map[string]any{"name": "red"}),
			)
			if err != nil {
				t.Fatalf("BatchWriteRecords: %v", err)
			}
			res := resp.GetResults()
			if len(res) != 8 {
				t.Fatalf("%d results, want 8", len(res))
			}
			dataWantRecord(t, "result 0", res[0].GetRecord(), dataWithNulls(map[string]any{"title": "c", "status": "open", "active": true, "note": "-"}, dataItemNames))
			if dataID(res[0].GetRecord()) != "batch-c" {
				t.Errorf("result 0 id = %q", dataID(res[0].GetRecord()))
			}
			dataWantRecord(t, "result 1", res[1].GetRecord(), dataWithNulls(map[string]any{"title": "a", "count": 2, "active": true, "status": "new", "note": "-"}, dataItemNames))
			if dataETag(res[1].GetRecord()) == dataETag(a) {
				t.Errorf("result 1 kept the etag")
			}
			for _, i := range []int{2, 5} {
				if len(res[i].GetRecord().GetFields()) != 0 {
					t.Errorf("result %d (a delete) = %v, want an empty record", i, res[i].GetRecord())
				}
			}
			dataWantRecord(t, "result 3", res[3].GetRecord(), map[string]any{"name": "green", "weight": 3})
			dataWantRecord(t, "result 4", res[4].GetRecord(), map[string]any{"name": "crimson", "weight": nil})
			dataWantRecord(t, "result 6", res[6].GetRecord(), dataWithNulls(map[string]any{"title": "c", "status": "open", "active": true, "note": "updated in the same batch"}, dataItemNames))
			dataWantRecord(t, "result 7", res[7].GetRecord(), map[string]any{"name": "red", "weight": nil})

			// Every write is in place, and read back as the batch answered.
			items, tags := state()
			wantItems := []map[string]any{res[1].GetRecord().AsMap(), res[6].GetRecord().AsMap()}
			if got := dataSnapshot(items); !dataEqualSets(got, wantItems) {
				t.Errorf("items after the batch = %v, want %v", got, wantItems)
			}
			wantTags := []map[string]any{res[3].GetRecord().AsMap(), res[4].GetRecord().AsMap(), res[7].GetRecord().AsMap()}
			if got := dataSnapshot(tags); !dataEqualSets(got, wantTags) {
				t.Errorf("tags after the batch = %v, want %v", got, wantTags)
			}
		})

		t.Run("third write fails: nothing applied", func(t *testing.T) {
			items, tags := state()
			item := items[0]
			tag := tags[0]
			stale := dataETag(item)
			fresh := s.update(t, &datav1.UpdateRecordRequest{Object: "item", Id: dataID(item), Record: dataRec(map[string]any{"count": 40})})
			items, tags = state()
			first := func() []*datav1.RecordWrite {
				return []*datav1.RecordWrite{
					dataBatchCreate("item", map[string]any{"title": "would be new", "code": "NEW-1"}),
					dataBatchUpdate("tag", dataID(tag), "", map[string]any{"weight": 99}),
				}
			}
			for _, tc := range []struct {
				name   string
				third  *datav1.RecordWrite
				code   connect.Code
				reason string
				fields []string
			}{
				{"unique violation with a stored record", dataBatchCreate("tag", map[string]any{"name": tags[len(tags)-1].AsMap()["name"]}),
					connect.CodeAlreadyExists, data.ReasonUniqueViolation, nil},
				{"unique violation with an earlier write", dataBatchCreate("item", map[string]any{"title": "twin", "code": "NEW-1"}),
					connect.CodeAlreadyExists, data.ReasonUniqueViolation, nil},
				{"etag mismatch", dataBatchUpdate("item", dataID(item), stale, map[string]any{"count": 41}),
					connect.CodeAborted, data.ReasonETagMismatch, nil},
				{"etag mismatch on delete", dataBatchDelete("item", dataID(fresh), stale),
					connect.CodeAborted, data.ReasonETagMismatch, nil},
				{"invalid create", dataBatchCreate("item", map[string]any{"count": "x", "nope": 1}),
					connect.CodeInvalidArgument, data.ReasonInvalidRecord, []string{"writes[2].create.record.title", "writes[2].create.record.count", "writes[2].create.record.nope"}},
				{"invalid update", dataBatchUpdate("item", dataID(item), "", map[string]any{"status": "bogus", "etag": "x"}),
					connect.CodeInvalidArgument, data.ReasonInvalidRecord, []string{"writes[2].update.record.status", "writes[2].update.record.etag"}},
				{"missing record", dataBatchDelete("item", "no-such-record", ""),
					connect.CodeNotFound, data.ReasonRecordNotFound, nil},
				{"duplicate id", dataBatchCreate("item", map[string]any{"id": dataID(item), "title": "again"}),
					connect.CodeAlreadyExists, data.ReasonRecordExists, nil},
				{"undefined object", dataBatchCreate("ghost", map[string]any{"title": "boo"}),
					connect.CodeNotFound, data.ReasonObjectNotDefined, nil},
			} {
				_, err := batch(t, append(first(), tc.third)...)
				if apptest.WantError(t, err, tc.code, tc.reason) {
					dataWantIndex(t, err, 2)
					if tc.fields != nil {
						dataWantViolations(t, err, tc.fields...)
					}
				} else {
					t.Logf("%s", tc.name)
				}
				wantState(t, items, tags)
			}
		})

		t.Run("size limits", func(t *testing.T) {
			items, tags := state()
			writes := func(n int) []*datav1.RecordWrite {
				out := make([]*datav1.RecordWrite, n)
				for i := range out {
					out[i] = dataBatchCreate("tag", map[string]any{"name": fmt.Sprintf("bulk-%03d", i), "weight": i})
				}
				return out
			}
			_, err := batch(t, writes(data.MaxBatchWrites+1)...)
			if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonBatchTooLarge) {
				dataWantViolations(t, err, "writes")
			}
			_, err = batch(t)
			if apptest.WantError(t, err, connect.CodeInvalidArgument, server.ReasonValidation) {
				dataWantViolations(t, err, "writes")
			}
			wantState(t, items, tags)
			resp, err := batch(t, writes(500)...)
			if err != nil {
				t.Fatalf("BatchWriteRecords of 500: %v", err)
			}
			if n := len(resp.GetResults()); n != 500 {
				t.Errorf("%d results, want 500", n)
			}
			if n := len(s.all(t, "tag")); n != len(tags)+500 {
				t.Errorf("%d tags after 500 creates, want %d", n, len(tags)+500)
			}
		})

		t.Run("one environment per batch", func(t *testing.T) {
			_, tags := state()
			staging := dataEnv(t, s.admin, "", s.org, "staging-batch", "memory")
			w := dataBatchCreate("tag", map[string]any{"name": "elsewhere"})
			w.GetCreate().EnvironmentId = staging.GetId()
			_, err := batch(t, dataBatchCreate("tag", map[string]any{"name": "here"}), w)
			if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonBatchEnvironment) {
				dataWantViolations(t, err, "writes[1].environment_id")
				dataWantIndex(t, err, 1)
			}
			// Naming the batch's own environment is fine.
			w.GetCreate().EnvironmentId = s.id()
			if _, err := batch(t, w); err != nil {
				t.Errorf("a write naming the batch's environment: %v", err)
			}
			if n := len(s.all(t, "tag")); n != len(tags)+1 {
				t.Errorf("%d tags, want %d", n, len(tags)+1)
			}
		})
	})
}

// dataEqualSets reports whether a and b hold the same records in any order.
func dataEqualSets(a, b []map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	used := make([]bool, len(b))
outer:
	for _, x := range a {
		for j, y := range b {
			if !used[j] && fmt.Sprint(x) == fmt.Sprint(y) {
				used[j] = true
				continue outer
			}
		}
		return false
	}
	return true
}
