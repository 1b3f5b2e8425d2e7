package app_test

import (
	"errors"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
	"github.com/envplane/envplane/services/metadata"
)

// metaClient is the MetadataService client the metadata tests talk through.
type metaClient = metadatav1connect.MetadataServiceClient

// textField and friends build field definitions.
func metaText(name string) *metadatav1.Field { return &metadatav1.Field{Name: name, Type: "text"} }

func metaField(name, typ string) *metadatav1.Field { return &metadatav1.Field{Name: name, Type: typ} }

// object builds a definition of fields (the name travels in the request).
func metaObject(fields ...*metadatav1.Field) *metadatav1.ObjectDefinition {
	return &metadatav1.ObjectDefinition{Fields: fields}
}

func metaPut(t *testing.T, c metaClient, req *metadatav1.PutObjectRequest) *metadatav1.PutObjectResponse {
	t.Helper()
	resp, err := c.PutObject(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("PutObject(%s): %v", req.GetName(), err)
	}
	return resp.Msg
}

func metaGet(t *testing.T, c metaClient, environmentID, name string) *metadatav1.ObjectDefinition {
	t.Helper()
	resp, err := c.GetObject(t.Context(), connect.NewRequest(&metadatav1.GetObjectRequest{EnvironmentId: environmentID, Name: name}))
	if err != nil {
		t.Fatalf("GetObject(%s): %v", name, err)
	}
	if h := resp.Header().Get(apptest.HeaderEnvironmentID); environmentID != "" && h != environmentID {
		t.Errorf("GetObject(%s): X-Environment-Id = %q, want %q", name, h, environmentID)
	}
	return resp.Msg.GetObject()
}

// objectNames lists every object of the environment by name, walking pages.
func metaNames(t *testing.T, c metaClient, environmentID string) []string {
	t.Helper()
	var names []string
	token := ""
	for range 100 {
		resp, err := c.ListObjects(t.Context(), connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: environmentID, PageToken: token}))
		if err != nil {
			t.Fatalf("ListObjects: %v", err)
		}
		for _, o := range resp.Msg.GetObjects() {
			names = append(names, o.GetName())
		}
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return names
		}
	}
	t.Fatalf("ListObjects: more than 100 pages")
	return nil
}

// fieldNames lists the names of a definition's fields in order.
func metaFieldNames(o *metadatav1.ObjectDefinition) []string {
	var out []string
	for _, f := range o.GetFields() {
		out = append(out, f.GetName())
	}
	return out
}

// stepKinds renders steps as "kind target" strings.
func metaSteps(steps []*metadatav1.MigrationStep) []string {
	out := []string{}
	for _, s := range steps {
		k := s.GetKind()
		if s.GetTarget() != "" {
			k += " " + s.GetTarget()
		}
		if s.GetDestructive() {
			k += " (destructive)"
		}
		out = append(out, k)
	}
	return out
}

// wantObjectMissing fails t unless name is not defined in the environment.
func metaWantMissing(t *testing.T, c metaClient, environmentID, name string) {
	t.Helper()
	_, err := c.GetObject(t.Context(), connect.NewRequest(&metadatav1.GetObjectRequest{EnvironmentId: environmentID, Name: name}))
	apptest.WantError(t, err, connect.CodeNotFound, metadata.ReasonObjectNotDefined)
	if ce := new(connect.Error); errors.As(err, &ce) && environmentID != "" {
		if h := ce.Meta().Get(apptest.HeaderEnvironmentID); h != environmentID {
			t.Errorf("GetObject(%s) error: X-Environment-Id = %q, want %q", name, h, environmentID)
		}
	}
	if names := metaNames(t, c, environmentID); slices.Contains(names, name) {
		t.Errorf("ListObjects = %q, still lists %q", names, name)
	}
}

func metaString(s string) *structpb.Value { return structpb.NewStringValue(s) }

// metaNormalize returns o without null default values. REST answers of
// GetObject come through vanguard's response_body marshalling, which emits
// unpopulated fields, so a field without a default reads back as
// "defaultValue": null, which protojson decodes as a NullValue: the same
// "no default" the server itself takes a null for.
func metaNormalize(o *metadatav1.ObjectDefinition) *metadatav1.ObjectDefinition {
	o = proto.CloneOf(o)
	for _, f := range o.GetFields() {
		if _, isNull := f.GetDefaultValue().GetKind().(*structpb.Value_NullValue); isNull {
			f.DefaultValue = nil
		}
	}
	return o
}

// metaEqual compares definitions as metaNormalize leaves them.
func metaEqual(a, b *metadatav1.ObjectDefinition) bool {
	return proto.Equal(metaNormalize(a), metaNormalize(b))
}
