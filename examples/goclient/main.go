// Command goclient calls envplane from Go through the generated Connect
// clients: it creates an organization with a dev environment, defines an
// object in that environment, writes two records and lists them with a
// filter. Every create carries a request id or a record id of its own, so
// running it again changes nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/gen/envplane/data/v1/datav1connect"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/gen/envplane/metadata/v1/metadatav1connect"
)

func main() {
	baseURL := flag.String("url", "http://localhost:8080", "the envplane server")
	token := flag.String("token", "", "API token (default $ENVPLANE_TOKEN, else .envplane/admin.token)")
	flag.Parse()
	if err := run(context.Background(), *baseURL, *token); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, baseURL, token string) error {
	token, err := findToken(token)
	if err != nil {
		return err
	}
	control := environmentv1connect.NewEnvironmentServiceClient(http.DefaultClient, baseURL, withHeaders(token, ""))

	orgRes, err := control.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{
		Slug: "example", DisplayName: "Example", RequestId: "goclient-org",
	}))
	if err != nil {
		return explain("create the organization", err)
	}
	org := orgRes.Msg.GetOrganization()
	fmt.Println("organization", org.GetSlug(), org.GetId())

	envRes, err := control.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "dev", RequestId: "goclient-dev",
	}))
	if err != nil {
		return explain("create the environment", err)
	}
	dev := envRes.Msg.GetEnvironment()
	fmt.Println("environment", dev.GetSlug(), dev.GetId(), dev.GetStatus(), dev.GetHostname())

	// Data and metadata calls name their environment in a header.
	scoped := withHeaders(token, dev.GetId())
	meta := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, baseURL, scoped)
	data := datav1connect.NewDataServiceClient(http.DefaultClient, baseURL, scoped)

	put, err := meta.PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
		Name: "tasks",
		Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{
			{Name: "title", Type: "text", Required: true},
			{Name: "done", Type: "boolean", DefaultValue: structpb.NewBoolValue(false)},
		}},
	}))
	if err != nil {
		return explain("define tasks", err)
	}
	fmt.Printf("object tasks version %d, applied %t\n", put.Msg.GetObject().GetVersion(), put.Msg.GetApplied())

	for _, task := range []map[string]any{
		{"id": "task-1", "title": "Write the docs", "done": true},
		{"id": "task-2", "title": "Ship the example"},
	} {
		record, err := structpb.NewStruct(task)
		if err != nil {
			return err
		}
		_, err = data.CreateRecord(ctx, connect.NewRequest(&datav1.CreateRecordRequest{Object: "tasks", Record: record}))
		switch {
		case reason(err) == "RECORD_ALREADY_EXISTS": // created by an earlier run
			fmt.Println("record", task["id"], "exists")
		case err != nil:
			return explain("create a task", err)
		default:
			fmt.Println("record", task["id"], "created")
		}
	}

	list, err := data.ListRecords(ctx, connect.NewRequest(&datav1.ListRecordsRequest{
		Object: "tasks", Filter: "done = false", OrderBy: "title",
	}))
	if err != nil {
		return explain("list tasks", err)
	}
	for _, r := range list.Msg.GetRecords() {
		fmt.Println("open task", r.GetFields()["id"].GetStringValue(), r.GetFields()["title"].GetStringValue())
	}
	return nil
}

// findToken falls back to $ENVPLANE_TOKEN, then to the admin token that
// `make run` writes.
func findToken(token string) (string, error) {
	if token == "" {
		token = os.Getenv("ENVPLANE_TOKEN")
	}
	if token == "" {
		b, err := os.ReadFile(".envplane/admin.token")
		if err != nil {
			return "", fmt.Errorf("no token: pass -token or set ENVPLANE_TOKEN (%w)", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return token, nil
}

// withHeaders sends the token with every call and, when environmentID is
// set, the environment that data and metadata calls go to.
func withHeaders(token, environmentID string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			if environmentID != "" {
				req.Header().Set("X-Environment-Id", environmentID)
			}
			return next(ctx, req)
		}
	}))
}

// explain says what failed, with the error's code and ErrorInfo reason: the
// two things a client branches on (never the message).
func explain(what string, err error) error {
	return fmt.Errorf("%s: code %s, reason %s: %w", what, connect.CodeOf(err), reason(err), err)
}

// reason is the google.rpc.ErrorInfo reason of err, or "".
func reason(err error) string {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return ""
	}
	for _, detail := range cerr.Details() {
		if v, err := detail.Value(); err == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return info.GetReason()
			}
		}
	}
	return ""
}
