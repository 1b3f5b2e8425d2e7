package app_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/services/data"
	"github.com/envplane/envplane/services/metadata"
)

// TestDataRoles checks the roles of DataService: a viewer reads records but
// writes none, an editor writes records but defines no object, and a call
// without a token is unauthenticated.
func TestDataRoles(t *testing.T) {
	t.Parallel()
	dataForEachProtocol(t, func(t *testing.T, s *dataSuite) {
		ctx := t.Context()
		s.define(t, "note", dataField("body", "text", dataRequired))
		seed := s.create(t, "note", map[string]any{"body": "seed"})
		token := func(role string) string {
			_, secret := s.env.MintToken(t, &accessv1.CreateTokenRequest{Name: role, OrganizationId: s.org.GetId(), Role: role})
			return secret
		}
		writes := func(c dataClient, id, etag string) []call {
			return []call{
				{"CreateRecord", func(ctx context.Context) error {
					return errOf(c.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: s.id(), Object: "note", Record: dataRec(map[string]any{"body": "new"})})))
				}},
				{"UpdateRecord", func(ctx context.Context) error {
					return errOf(c.UpdateRecord(ctx, connect.NewRequest(&datav1.UpdateRecordRequest{EnvironmentId: s.id(), Object: "note", Id: id, Etag: etag, Record: dataRec(map[string]any{"body": "changed"})})))
				}},
				{"BatchWriteRecords", func(ctx context.Context) error {
					return errOf(c.BatchWriteRecords(ctx, connect.NewRequest(&datav1.BatchWriteRecordsRequest{EnvironmentId: s.id(), Writes: []*datav1.RecordWrite{
						dataBatchCreate("note", map[string]any{"body": "batched"}),
					}})))
				}},
				{"DeleteRecord", func(ctx context.Context) error {
					return errOf(c.DeleteRecord(ctx, connect.NewRequest(&datav1.DeleteRecordRequest{EnvironmentId: s.id(), Object: "note", Id: id})))
				}},
			}
		}

		t.Run("viewer reads, writes nothing", func(t *testing.T) {
			c := s.env.DataClient(s.p, token(auth.RoleViewer))
			before := s.all(t, "note")
			if got := dataGet(t, c, s.id(), "note", dataID(seed)); got.AsMap()["body"] != "seed" {
				t.Errorf("viewer GetRecord = %v", got.AsMap())
			}
			if got := dataAll(t, c, s.id(), "note"); len(got) != len(before) {
				t.Errorf("viewer lists %d records, want %d", len(got), len(before))
			}
			for _, cl := range writes(c, dataID(seed), "") {
				if !apptest.WantError(t, cl.do(ctx), connect.CodePermissionDenied, auth.ReasonRoleInsufficient) {
					t.Logf("viewer %s", cl.name)
				}
			}
			dataWantUnchanged(t, s.c, s.id(), "note", before)
		})

		t.Run("editor writes records, defines no object", func(t *testing.T) {
			c := s.env.DataClient(s.p, token(auth.RoleEditor))
			mine := dataCreate(t, c, s.id(), "note", map[string]any{"body": "by the editor"})
			for _, cl := range writes(c, dataID(mine), dataETag(mine)) {
				if err := cl.do(ctx); err != nil {
					t.Errorf("editor %s: %v", cl.name, err)
				}
			}
			apptest.WantError(t, s.getErr(t, "note", dataID(mine)), connect.CodeNotFound, data.ReasonRecordNotFound)

			meta := s.env.MetadataClient(s.p, token(auth.RoleEditor))
			for _, name := range []string{"note", "invented"} {
				_, err := meta.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
					EnvironmentId: s.id(), Name: name,
					Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{dataField("body", "text"), dataField("extra", "integer")}},
				}))
				if !apptest.WantError(t, err, connect.CodePermissionDenied, auth.ReasonRoleInsufficient) {
					t.Logf("editor PutObject(%s)", name)
				}
			}
			// Nothing was defined or changed: body is still required, extra
			// unknown, invented undefined.
			err := errOf(c.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: s.id(), Object: "note", Record: dataRec(map[string]any{"extra": 1})})))
			if apptest.WantError(t, err, connect.CodeInvalidArgument, data.ReasonInvalidRecord) {
				dataWantViolations(t, err, "record.body", "record.extra")
			}
			err = errOf(c.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{EnvironmentId: s.id(), Object: "invented", Record: dataRec(map[string]any{"body": "x"})})))
			apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)

			// A developer may.
			_, err = s.env.MetadataClient(s.p, token(auth.RoleDeveloper)).PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
				EnvironmentId: s.id(), Name: "invented", Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{dataField("body", "text")}},
			}))
			if err != nil {
				t.Errorf("developer PutObject: %v", err)
			}
			dataCreate(t, c, s.id(), "invented", map[string]any{"body": "now defined"})
		})

		t.Run("no token", func(t *testing.T) {
			c := s.env.DataClient(s.p, "")
			before := s.all(t, "note")
			_, err := c.GetRecord(ctx, connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: s.id(), Object: "note", Id: dataID(seed)}))
			apptest.WantError(t, err, connect.CodeUnauthenticated, auth.ReasonTokenMissing)
			for _, cl := range writes(c, dataID(seed), "") {
				if !apptest.WantError(t, cl.do(ctx), connect.CodeUnauthenticated, auth.ReasonTokenMissing) {
					t.Logf("%s without a token", cl.name)
				}
			}
			dataWantUnchanged(t, s.c, s.id(), "note", before)
		})
	})
}
