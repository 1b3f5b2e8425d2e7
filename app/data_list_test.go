package app_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/internal/query"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/data"
)

// dataTasks are the records of the list tests, by id; created in the order
// of dataTaskOrder, so created_at orders them that way.
var dataTasks = map[string]map[string]any{
	"t1": {"name": "alpha", "rank": 1, "score": 1.5, "done": true, "due": "2026-01-10", "at": "2026-01-01T00:00:00Z", "kind": "a", "meta": map[string]any{"n": 1}},
	"t2": {"name": "alpine", "rank": 2, "score": 2.5, "done": false, "due": "2026-02-10", "at": "2026-02-01T00:00:00Z", "kind": "b"},
	"t3": {"name": "beta", "rank": 3, "score": nil, "done": true, "due": nil, "at": "2026-03-01T00:00:00Z", "kind": "c"},
	"t4": {"name": "gamma", "rank": 3, "score": 0.5, "done": false, "due": "2026-04-10", "at": nil, "kind": "a"},
	"t5": {"name": "delta", "rank": nil, "score": 9, "done": true, "due": "2026-05-10", "at": "2026-05-01T12:30:00.5Z", "kind": "b"},
	"t6": {"name": "Alpha", "rank": 5, "score": -1, "done": false, "due": "2026-06-10", "at": "2026-06-01T00:00:00Z", "kind": nil},
	"t7": {"name": "epsilon", "rank": 6, "score": 3, "done": true, "due": "2026-07-10", "at": "2026-07-01T00:00:00Z", "kind": "c"},
}

var dataTaskOrder = []string{"t4", "t1", "t7", "t2", "t6", "t3", "t5"}

func dataDefineTasks(t *testing.T, s *dataSuite, object string) {
	t.Helper()
	s.define(t, object,
		dataField("name", "text"),
		dataField("rank", "integer"),
		dataField("score", "number"),
		dataField("done", "boolean"),
		dataField("due", "date"),
		dataField("at", "timestamp"),
		dataField("kind", "select", dataOptions("a", "b", "c")),
		dataField("meta", "json"),
	)
	for _, id := range dataTaskOrder {
		r := map[string]any{"id": id}
		for k, v := range dataTasks[id] {
			r[k] = v
		}
		s.create(t, object, r)
	}
}

// TestDataList covers ListRecords over every protocol: AIP-160 filters and
// their errors, AIP-132 orders, keyset paging, page tokens bound to their
// query, page sizes, total_size and read_mask.
func TestDataList(t *testing.T) {
	t.Parallel()
	dataForEachProtocol(t, func(t *testing.T, s *dataSuite) {
		dataDefineTasks(t, s, "task")
		list := func(t *testing.T, req *datav1.ListRecordsRequest) []string {
			t.Helper()
			req.EnvironmentId, req.Object = s.id(), "task"
			return dataIDs(dataList(t, s.c, req))
		}
		listErr := func(req *datav1.ListRecordsRequest) error {
			req.EnvironmentId = s.id()
			if req.Object == "" {
				req.Object = "task"
			}
			_, err := s.c.ListRecords(t.Context(), connect.NewRequest(req))
			return err
		}

		t.Run("every record, by id", func(t *testing.T) {
			got := dataList(t, s.c, &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "task"})
			if diff := cmp.Diff([]string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"}, dataIDs(got)); diff != "" {
				t.Fatalf("ListRecords (-want +got):\n%s", diff)
			}
			for _, r := range got {
				want := dataWithNulls(dataTasks[dataID(r)], []string{"name", "rank", "score", "done", "due", "at", "kind", "meta"})
				dataWantRecord(t, "listed "+dataID(r), r, want)
			}
		})

		t.Run("filter", func(t *testing.T) {
			for _, tc := range []struct {
				filter string
				want   []string
			}{
				{`rank = 3`, []string{"t3", "t4"}},
				// != matches NULL: a record without a rank is not 3.
				{`rank != 3`, []string{"t1", "t2", "t5", "t6", "t7"}},
				{`rank < 3`, []string{"t1", "t2"}},
				{`rank <= 3`, []string{"t1", "t2", "t3", "t4"}},
				{`rank >= 3`, []string{"t3", "t4", "t6", "t7"}},
				{`rank > 5`, []string{"t7"}},
				{`score > 1`, []string{"t1", "t2", "t5", "t7"}},
				{`score <= 0.5`, []string{"t4", "t6"}},
				{`score >= -1.0`, []string{"t1", "t2", "t4", "t5", "t6", "t7"}},
				{`score = 9`, []string{"t5"}},
				{`done = true`, []string{"t1", "t3", "t5", "t7"}},
				{`done != true`, []string{"t2", "t4", "t6"}},
				{`done = false`, []string{"t2", "t4", "t6"}},
				{`name = "alpha"`, []string{"t1"}},
				{`name = "alp*"`, []string{"t1", "t2"}},
				{`name = "Alp*"`, []string{"t6"}},
				{`name != "alp*"`, []string{"t3", "t4", "t5", "t6", "t7"}},
				{`name = "*"`, []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"}},
				{`name > "b"`, []string{"t3", "t4", "t5", "t7"}},
				{`kind = "a"`, []string{"t1", "t4"}},
				{`due = "2026-0*"`, []string{"t1", "t2", "t4", "t5", "t6", "t7"}},
				{`due >= "2026-06-01"`, []string{"t6", "t7"}},
				{`due = "2026-04-10"`, []string{"t4"}},
				{`rank = null`, []string{"t5"}},
				{`score != null`, []string{"t1", "t2", "t4", "t5", "t6", "t7"}},
				{`due = null`, []string{"t3"}},
				{`kind = null`, []string{"t6"}},
				{`at = null`, []string{"t4"}},
				{`meta = null`, []string{"t2", "t3", "t4", "t5", "t6", "t7"}},
				{`meta != null`, []string{"t1"}},
				{`at > "2026-02-15T00:00:00Z"`, []string{"t3", "t5", "t6", "t7"}},
				{`at <= timestamp("2026-02-01T00:00:00Z")`, []string{"t1", "t2"}},
				{`at = "2026-05-01T12:30:00.5Z"`, []string{"t5"}},
				// The same instant in another zone.
				{`at = "2026-05-01T14:30:00.500+02:00"`, []string{"t5"}},
				{`at > "2026-05-01T14:30:00.5+02:00"`, []string{"t6", "t7"}},
				{`created_at > "2000-01-01T00:00:00Z"`, []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"}},
				{`updated_at < "2000-01-01T00:00:00Z"`, nil},
				{`id = "t3"`, []string{"t3"}},
				{`id = "t*"`, []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"}},
				{`kind = "a" OR kind = "c"`, []string{"t1", "t3", "t4", "t7"}},
				{`rank >= 2 AND done = true`, []string{"t3", "t7"}},
				{`rank = 3 kind = "a"`, []string{"t4"}},
				{`NOT done = true`, []string{"t2", "t4", "t6"}},
				{`-done = true`, []string{"t2", "t4", "t6"}},
				// NOT of an ordering matches NULL, as != does.
				{`NOT rank < 3`, []string{"t3", "t4", "t5", "t6", "t7"}},
				{`(kind = "a" OR kind = "b") AND NOT rank = 1`, []string{"t2", "t4", "t5"}},
				// AIP-160: OR binds tighter than AND.
				{`done = true AND rank = 1 OR rank = 6`, []string{"t1", "t7"}},
				{`(done = true AND rank = 1) OR rank = 6`, []string{"t1", "t7"}},
				{`NOT (rank = 3 OR score = null) AND name != "A*"`, []string{"t1", "t2", "t5", "t7"}},
				{`  rank=1  `, []string{"t1"}},
				{`name = "nobody"`, nil},
			} {
				if diff := cmp.Diff(tc.want, list(t, &datav1.ListRecordsRequest{Filter: tc.filter}), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("filter %s (-want +got):\n%s", tc.filter, diff)
				}
			}
		})

		t.Run("filter errors", func(t *testing.T) {
			many := strings.TrimSuffix(strings.Repeat("rank = 1 OR ", query.MaxComparisons+1), " OR ")
			for _, tc := range []struct {
				filter, reason string
			}{
				{`nope = 1`, query.ReasonUnknownField},
				{`etag = "x"`, query.ReasonUnknownField},
				{`meta.n = 1`, query.ReasonUnknownField},
				{`rank = "3"`, query.ReasonFieldTypeMismatch},
				{`rank = 1.5`, query.ReasonFieldTypeMismatch},
				{`rank = true`, query.ReasonFieldTypeMismatch},
				{`score = "x"`, query.ReasonFieldTypeMismatch},
				{`done = 1`, query.ReasonFieldTypeMismatch},
				{`name = 5`, query.ReasonFieldTypeMismatch},
				{`at > "yesterday"`, query.ReasonFieldTypeMismatch},
				{`at > 5`, query.ReasonFieldTypeMismatch},
				{`due = "2026-13-01"`, query.ReasonFieldTypeMismatch},
				{`due = 20260101`, query.ReasonFieldTypeMismatch},
				{`rank =`, query.ReasonInvalidFilter},
				{`(rank = 1`, query.ReasonInvalidFilter},
				{`rank = 1 and done = true`, query.ReasonInvalidFilter},
				{`"alpha"`, query.ReasonInvalidFilter},
				{`rank = rank`, query.ReasonInvalidFilter},
				{`done < true`, query.ReasonUnsupportedOperator},
				{`rank = "1*"`, query.ReasonUnsupportedOperator},
				{`rank < null`, query.ReasonUnsupportedOperator},
				{`meta = 1`, query.ReasonUnsupportedOperator},
				{`name:"a"`, query.ReasonUnsupportedOperator},
				{many, query.ReasonFilterTooComplex},
				// No record holds it, and PostgreSQL cannot compare with it.
				{`name = "a\x00b"`, query.ReasonInvalidFilter},
				{`name = "a\u0000*"`, query.ReasonInvalidFilter},
				{`due = "0000-01-01"`, query.ReasonFieldTypeMismatch},
			} {
				err := listErr(&datav1.ListRecordsRequest{Filter: tc.filter})
				if apptest.WantError(t, err, connect.CodeInvalidArgument, tc.reason) {
					dataWantViolations(t, err, "filter")
				} else {
					t.Logf("filter %s", tc.filter)
				}
			}
			// Over the length limit the contract refuses it first.
			long := `name = "` + strings.Repeat("x", query.MaxFilterLength) + `"`
			if err := listErr(&datav1.ListRecordsRequest{Filter: long}); apptest.WantError(t, err, connect.CodeInvalidArgument, server.ReasonValidation) {
				dataWantViolations(t, err, "filter")
			}
		})

		t.Run("order_by", func(t *testing.T) {
			for _, tc := range []struct {
				order string
				want  []string
			}{
				{"", []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"}},
				// NULL is the smallest value: first ascending, last descending;
				// ties go by id.
				{"rank", []string{"t5", "t1", "t2", "t3", "t4", "t6", "t7"}},
				{"rank asc", []string{"t5", "t1", "t2", "t3", "t4", "t6", "t7"}},
				{"rank desc", []string{"t7", "t6", "t3", "t4", "t2", "t1", "t5"}},
				// Text orders by bytes: upper case first.
				{"name", []string{"t6", "t1", "t2", "t3", "t5", "t7", "t4"}},
				{"name desc", []string{"t4", "t7", "t5", "t3", "t2", "t1", "t6"}},
				{"score desc, name", []string{"t5", "t7", "t2", "t1", "t4", "t6", "t3"}},
				{"done, rank desc", []string{"t6", "t4", "t2", "t7", "t3", "t1", "t5"}},
				{"at desc", []string{"t7", "t6", "t5", "t3", "t2", "t1", "t4"}},
				{"due", []string{"t3", "t1", "t2", "t4", "t5", "t6", "t7"}},
				{"kind desc, id desc", []string{"t7", "t3", "t5", "t2", "t4", "t1", "t6"}},
				{"created_at", dataTaskOrder},
				{"created_at desc", dataReversed(dataTaskOrder)},
				{"id desc", []string{"t7", "t6", "t5", "t4", "t3", "t2", "t1"}},
			} {
				if diff := cmp.Diff(tc.want, list(t, &datav1.ListRecordsRequest{OrderBy: tc.order})); diff != "" {
					t.Errorf("order_by %q (-want +got):\n%s", tc.order, diff)
				}
			}
			for _, tc := range []struct{ order, reason string }{
				{"nope", query.ReasonUnknownField},
				{"etag", query.ReasonUnknownField},
				{"meta", query.ReasonInvalidOrderBy},
				{"rank, rank desc", query.ReasonInvalidOrderBy},
				{"rank sideways", query.ReasonInvalidOrderBy},
				{"rank,,name", query.ReasonInvalidOrderBy},
			} {
				err := listErr(&datav1.ListRecordsRequest{OrderBy: tc.order})
				if apptest.WantError(t, err, connect.CodeInvalidArgument, tc.reason) {
					dataWantViolations(t, err, "order_by")
				} else {
					t.Logf("order_by %q", tc.order)
				}
			}
		})

		t.Run("paging", func(t *testing.T) {
			for _, tc := range []struct{ filter, order string }{
				{"", ""},
				{"", "rank"},
				{"", "rank desc"},
				{"", "name desc"},
				{"", "score desc, name"},
				{"", "done, rank desc"},
				{"", "at desc"},
				{"", "due"},
				{"", "kind desc, id desc"},
				{"", "created_at desc"},
				{`rank != 3`, "score"},
				{`done = true`, "at desc"},
				{`kind != "b"`, "kind"},
			} {
				want := list(t, &datav1.ListRecordsRequest{Filter: tc.filter, OrderBy: tc.order, PageSize: 1000})
				req := &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "task", Filter: tc.filter, OrderBy: tc.order, PageSize: 2}
				var got []string
				pages := 0
				for {
					resp, err := s.c.ListRecords(t.Context(), connect.NewRequest(req))
					if err != nil {
						t.Fatalf("filter %q order %q, page %d: %v", tc.filter, tc.order, pages+1, err)
					}
					pages++
					n := len(resp.Msg.GetRecords())
					if n > 2 || (n < 2 && resp.Msg.GetNextPageToken() != "") {
						t.Errorf("filter %q order %q: page %d has %d records and token %q", tc.filter, tc.order, pages, n, resp.Msg.GetNextPageToken())
					}
					got = append(got, dataIDs(resp.Msg.GetRecords())...)
					if resp.Msg.GetNextPageToken() == "" || pages > 10 {
						break
					}
					req.PageToken = resp.Msg.GetNextPageToken()
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("filter %q order %q: pages of 2 (-one page +pages):\n%s", tc.filter, tc.order, diff)
				}
				if wantPages := max(1, (len(want)+1)/2); pages != wantPages && pages != wantPages+1 {
					t.Errorf("filter %q order %q: %d pages for %d records", tc.filter, tc.order, pages, len(want))
				}
			}
			// Every record exactly once with the default order.
			if got := list(t, &datav1.ListRecordsRequest{PageSize: 2}); !slices.Equal(got, []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"}) {
				t.Errorf("pages of 2 = %q", got)
			}
		})

		t.Run("page token bound to its query", func(t *testing.T) {
			dataDefineTasks(t, s, "task_copy")
			first := func(filter, order string) string {
				resp, err := s.c.ListRecords(t.Context(), connect.NewRequest(&datav1.ListRecordsRequest{
					EnvironmentId: s.id(), Object: "task", Filter: filter, OrderBy: order, PageSize: 2,
				}))
				if err != nil {
					t.Fatal(err)
				}
				if resp.Msg.GetNextPageToken() == "" {
					t.Fatalf("filter %q order %q: no next page", filter, order)
				}
				return resp.Msg.GetNextPageToken()
			}
			token := first(`done = true`, "rank")
			// The same query, even spelled otherwise or with another page
			// size, continues.
			for _, f := range []string{`done = true`, `done=true`, ` done = true `} {
				got := list(t, &datav1.ListRecordsRequest{Filter: f, OrderBy: "rank asc", PageSize: 1, PageToken: token})
				if !slices.Equal(got, []string{"t3", "t7"}) {
					t.Errorf("continuing with filter %q = %q, want [t3 t7]", f, got)
				}
			}
			tampered := []byte(token)
			tampered[len(tampered)/2] ^= 1
			if tampered[len(tampered)/2] == '-' || tampered[len(tampered)/2] == '_' {
				tampered[len(tampered)/2] = 'A'
			}
			for _, tc := range []struct {
				name string
				req  *datav1.ListRecordsRequest
			}{
				{"another filter", &datav1.ListRecordsRequest{Filter: `done = false`, OrderBy: "rank", PageToken: token}},
				{"no filter", &datav1.ListRecordsRequest{OrderBy: "rank", PageToken: token}},
				{"another order", &datav1.ListRecordsRequest{Filter: `done = true`, OrderBy: "rank desc", PageToken: token}},
				{"another object", &datav1.ListRecordsRequest{Object: "task_copy", Filter: `done = true`, OrderBy: "rank", PageToken: token}},
				{"tampered", &datav1.ListRecordsRequest{Filter: `done = true`, OrderBy: "rank", PageToken: string(tampered)}},
				{"truncated", &datav1.ListRecordsRequest{Filter: `done = true`, OrderBy: "rank", PageToken: token[:len(token)-1]}},
				{"made up", &datav1.ListRecordsRequest{Filter: `done = true`, OrderBy: "rank", PageToken: "eyJhZnRlciI6InQzIn0"}},
				{"not base64", &datav1.ListRecordsRequest{Filter: `done = true`, OrderBy: "rank", PageToken: "not a token!"}},
			} {
				err := listErr(tc.req)
				if apptest.WantError(t, err, connect.CodeInvalidArgument, query.ReasonInvalidPageToken) {
					dataWantViolations(t, err, "page_token")
				} else {
					t.Logf("%s", tc.name)
				}
			}
		})

		// The coercion is the service's, whatever the engine; a thousand
		// rows through SQLite under the race detector take seconds, so the
		// case runs only on the memory and postgres suites.
		pageSize := func(t *testing.T) {
			// 1001 records, written in three batches.
			s.define(t, "bulk", dataField("n", "integer"))
			for start := 0; start < 1001; start += 500 {
				var writes []*datav1.RecordWrite
				for i := start; i < min(start+500, 1001); i++ {
					writes = append(writes, &datav1.RecordWrite{Operation: &datav1.RecordWrite_Create{Create: &datav1.CreateRecordRequest{
						Object: "bulk", Record: dataRec(map[string]any{"id": fmt.Sprintf("b%04d", i), "n": i}),
					}}})
				}
				if _, err := s.c.BatchWriteRecords(t.Context(), connect.NewRequest(&datav1.BatchWriteRecordsRequest{EnvironmentId: s.id(), Writes: writes})); err != nil {
					t.Fatalf("BatchWriteRecords(%d…): %v", start, err)
				}
			}
			page := func(size int32, token string, total bool) *datav1.ListRecordsResponse {
				t.Helper()
				resp, err := s.c.ListRecords(t.Context(), connect.NewRequest(&datav1.ListRecordsRequest{
					EnvironmentId: s.id(), Object: "bulk", PageSize: size, PageToken: token, ShowTotalSize: total,
				}))
				if err != nil {
					t.Fatalf("ListRecords(page_size %d): %v", size, err)
				}
				return resp.Msg
			}
			// The default is 50.
			if p := page(0, "", false); len(p.GetRecords()) != 50 || p.GetNextPageToken() == "" || dataID(p.GetRecords()[49]) != "b0049" {
				t.Errorf("default page: %d records, token %q", len(p.GetRecords()), p.GetNextPageToken())
			}
			// Above 1000 is 1000.
			for _, size := range []int32{1001, 1 << 30} {
				p := page(size, "", true)
				if len(p.GetRecords()) != 1000 || p.GetNextPageToken() == "" || p.GetTotalSize() != 1001 {
					t.Errorf("page_size %d: %d records, token %q, total %d; want 1000, a token, 1001", size, len(p.GetRecords()), p.GetNextPageToken(), p.GetTotalSize())
					continue
				}
				if got := dataID(p.GetRecords()[999]); got != "b0999" {
					t.Errorf("page_size %d: last record %s, want b0999", size, got)
				}
				rest := page(size, p.GetNextPageToken(), false)
				if got := dataIDs(rest.GetRecords()); !slices.Equal(got, []string{"b1000"}) || rest.GetNextPageToken() != "" {
					t.Errorf("page_size %d, second page = %q, token %q", size, got, rest.GetNextPageToken())
				}
			}
			for _, size := range []int32{-1, -1000} {
				err := listErr(&datav1.ListRecordsRequest{Object: "bulk", PageSize: size})
				if apptest.WantError(t, err, connect.CodeInvalidArgument, server.ReasonValidation) {
					dataWantViolations(t, err, "page_size")
				}
			}
		}
		if s.engine != "sqlite" {
			t.Run("page size", pageSize)
		}

		t.Run("total size", func(t *testing.T) {
			resp, err := s.c.ListRecords(t.Context(), connect.NewRequest(&datav1.ListRecordsRequest{
				EnvironmentId: s.id(), Object: "task", Filter: `done = true`, PageSize: 2, ShowTotalSize: true,
			}))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Msg.GetTotalSize() != 4 || len(resp.Msg.GetRecords()) != 2 {
				t.Errorf("show_total_size: total %d, %d records; want 4 and 2", resp.Msg.GetTotalSize(), len(resp.Msg.GetRecords()))
			}
			resp, err = s.c.ListRecords(t.Context(), connect.NewRequest(&datav1.ListRecordsRequest{
				EnvironmentId: s.id(), Object: "task", Filter: `done = true`, PageSize: 2,
			}))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Msg.GetTotalSize() != 0 {
				t.Errorf("total_size = %d without show_total_size, want 0 (not computed)", resp.Msg.GetTotalSize())
			}
		})

		t.Run("read_mask", func(t *testing.T) {
			got := dataList(t, s.c, &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "task", ReadMask: dataMask("name", "at"), Filter: `rank <= 2`})
			if len(got) != 2 {
				t.Fatalf("got %d records", len(got))
			}
			for _, r := range got {
				var keys []string
				for k := range r.GetFields() {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				if want := []string{"at", "created_at", "etag", "id", "name", "updated_at"}; !slices.Equal(keys, want) {
					t.Errorf("%s with read_mask has fields %q, want %q", dataID(r), keys, want)
				}
				if r.GetFields()["name"].GetStringValue() != dataTasks[dataID(r)]["name"] || r.GetFields()["at"].GetStringValue() != dataTasks[dataID(r)]["at"] {
					t.Errorf("%s with read_mask = %v", dataID(r), r.AsMap())
				}
			}
			// System fields only.
			got = dataList(t, s.c, &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "task", ReadMask: dataMask("id"), PageSize: 3})
			for _, r := range got {
				if n := len(r.GetFields()); n != len(dataSystemFields) {
					t.Errorf("%s with read_mask [id] = %v, want the system fields only", dataID(r), r.AsMap())
				}
			}
			if len(got) != 7 {
				t.Errorf("read_mask [id] listed %d records, want 7", len(got))
			}
			err := listErr(&datav1.ListRecordsRequest{ReadMask: dataMask("name", "nope")})
			apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidMask)
		})

		t.Run("order key too long for a page token", func(t *testing.T) {
			// Keyset tokens carry the last record's order keys: a long
			// text at a page's end cannot be carried. The client hears so,
			// with the reason of an order_by it must change.
			s.define(t, "longtext", dataField("body", "text"))
			for _, c := range "abc" {
				s.create(t, "longtext", map[string]any{"body": strings.Repeat("x", 5000) + string(c)})
			}
			err := listErr(&datav1.ListRecordsRequest{Object: "longtext", OrderBy: "body", PageSize: 1})
			if apptest.WantError(t, err, connect.CodeInvalidArgument, query.ReasonInvalidOrderBy) {
				dataWantViolations(t, err, "order_by")
			}
			// A page whose last record's key is too long ends on an earlier
			// record whose key fits: shorter pages, every record listed once.
			s.define(t, "mixedtext", dataField("body", "text"))
			long := strings.Repeat("x", 5000)
			for _, body := range []string{"a", "b", "c" + long, "d", "e" + long, "f" + long, "g"} {
				s.create(t, "mixedtext", map[string]any{"body": body})
			}
			req := &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "mixedtext", OrderBy: "body", PageSize: 3}
			first, err := s.c.ListRecords(t.Context(), connect.NewRequest(req))
			if err != nil {
				t.Fatalf("first page: %v", err)
			}
			if n := len(first.Msg.GetRecords()); n != 2 || first.Msg.GetNextPageToken() == "" {
				t.Errorf("first page: %d records, token %q; want 2 (the page ends on \"b\", not on the long \"c…\") and a token",
					n, first.Msg.GetNextPageToken())
			}
			var bodies []string
			for _, r := range dataList(t, s.c, req) {
				bodies = append(bodies, r.GetFields()["body"].GetStringValue()[:1])
			}
			if want := []string{"a", "b", "c", "d", "e", "f", "g"}; !slices.Equal(bodies, want) {
				t.Errorf("paged by body: %v, want %v", bodies, want)
			}
			// Ordered by a short key, or in one page, it lists.
			if got := dataList(t, s.c, &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "longtext", PageSize: 1}); len(got) != 3 {
				t.Errorf("by id, pages of 1: %d records", len(got))
			}
			if got := dataList(t, s.c, &datav1.ListRecordsRequest{EnvironmentId: s.id(), Object: "longtext", OrderBy: "body desc", PageSize: 3}); len(got) != 3 {
				t.Errorf("by body, one page: %d records", len(got))
			}
		})
	})
}

// dataReversed returns a reversed copy of s.
func dataReversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
