package clients_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"

	"github.com/envplane/envplane/app/apptest"
)

// consoleExpect is what clients/console/test/console.test.mjs is told to
// find and write (its CONSOLE_EXPECT).
type consoleExpect struct {
	Environments       []consoleEnvironment         `json:"environments"`
	WriteEnvironmentID string                       `json:"writeEnvironmentId"`
	Object             string                       `json:"object"`
	EmptyRecordReason  string                       `json:"emptyRecordReason"`
	Records            map[string]map[string]string `json:"records"` // by how the page writes it: connect, rest
}

// consoleEnvironment is one row of the console's environments table.
type consoleEnvironment struct {
	ID        string `json:"id"`
	Slug      string `json:"slug"`
	Type      string `json:"type"`
	Driver    string `json:"driver"`
	Status    string `json:"status"`
	Hostname  string `json:"hostname"`
	IsDefault bool   `json:"isDefault"`
}

// TestBrowser runs the console (clients/console) in headless Chromium
// against a real server that allows one of two origins serving the page.
// From the allowed origin the page lists the organization's environments
// and writes a record into the non-default one over Connect JSON and
// another over REST; from the other origin Chromium refuses every answer.
// Then the records are looked for in the databases: in the environment the
// page chose, and nowhere else.
func TestBrowser(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireFile(t, "/usr/bin/chromium", "make tools")
	requireFile(t, filepath.Join(root, "gen", "ts", "dist", "envplane", "data", "v1", "data_pb.js"), "make clients")
	requireFile(t, filepath.Join(root, "node_modules", "playwright-core", "package.json"), "make tools")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH (%v): run make tools", err)
	}
	consoleDir := filepath.Join(root, "clients", "console")
	bundle(t, filepath.Join(consoleDir, "src", "main.ts"), filepath.Join(consoleDir, "dist", "main.js"), "browser")

	// Two origins serve the same page; the server allows only the first.
	allowed := httptest.NewServer(http.FileServer(http.Dir(consoleDir)))
	t.Cleanup(allowed.Close)
	refused := httptest.NewServer(http.FileServer(http.Dir(consoleDir)))
	t.Cleanup(refused.Close)
	env := startServer(t, "--cors-origins="+allowed.URL)

	// dev is created first and so is the default; the page writes to staging,
	// so a write that lost its X-Environment-Id cannot reach staging by
	// falling back to the default.
	ctx := t.Context()
	ctl := env.Client(apptest.ConnectJSON)
	org, err := ctl.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "acme", DisplayName: "Acme Inc."}))
	if err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	var environments []*environmentv1.Environment
	for _, req := range []*environmentv1.CreateEnvironmentRequest{
		{OrganizationId: org.Msg.GetOrganization().GetId(), Slug: "dev"},
		{OrganizationId: org.Msg.GetOrganization().GetId(), Slug: "staging", Type: "staging", Driver: "sqlite"},
	} {
		res, err := ctl.CreateEnvironment(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("CreateEnvironment %s: %v", req.GetSlug(), err)
		}
		environments = append(environments, res.Msg.GetEnvironment())
	}
	dev, staging := environments[0], environments[1]
	const object = "customers"
	_, err = env.MetadataClient(apptest.ConnectJSON, env.Token).PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
		EnvironmentId: staging.GetId(),
		Name:          object,
		Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{
			{Name: "name", Type: "text", Required: true},
			{Name: "plan", Type: "select", Options: []string{"free", "pro"}, DefaultValue: structpb.NewStringValue("free")},
		}},
	}))
	if err != nil {
		t.Fatalf("PutObject: %v", err)
	}

	// What the browser will be told, asked directly first, so that a refusal
	// below is explained.
	t.Run("CORS", func(t *testing.T) {
		testCORS(t, env, allowed.URL, refused.URL, staging.GetId())
	})

	expect := consoleExpect{
		WriteEnvironmentID: staging.GetId(),
		Object:             object,
		EmptyRecordReason:  "INVALID_RECORD",
		Records: map[string]map[string]string{
			"connect": {"name": "Ada Lovelace", "plan": "pro"},
			"rest":    {"name": "Grace Hopper"}, // plan takes its default
		},
	}
	for _, e := range environments {
		expect.Environments = append(expect.Environments, consoleEnvironment{
			ID: e.GetId(), Slug: e.GetSlug(), Type: e.GetType(), Driver: e.GetDriver(),
			Status: e.GetStatus(), Hostname: e.GetHostname(), IsDefault: e.GetIsDefault(),
		})
	}
	expectJSON, err := json.Marshal(expect)
	if err != nil {
		t.Fatal(err)
	}
	artifacts := filepath.Join(root, ".artifacts")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	screenshot := filepath.Join(artifacts, "console.png")
	for _, name := range []string{"console.png", "console-refused.png", "console-failure.png"} {
		if err := os.Remove(filepath.Join(artifacts, name)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshot of the failing page, if it got that far: %s", filepath.Join(artifacts, "console-failure.png"))
		}
	})

	output := run(t, command(t, root, []string{
		"CONSOLE_ALLOWED_URL=" + allowed.URL + "/",
		"CONSOLE_REFUSED_URL=" + refused.URL + "/",
		"ENVPLANE_URL=" + env.URL,
		"ENVPLANE_TOKEN=" + env.Token,
		"CONSOLE_EXPECT=" + string(expectJSON),
		"CONSOLE_SCREENSHOT=" + screenshot,
	}, node, filepath.Join(consoleDir, "test", "console.test.mjs")))
	for _, png := range []string{screenshot, filepath.Join(artifacts, "console-refused.png")} {
		requireFile(t, png, "a console.test.mjs that saves its screenshots")
	}
	t.Logf("screenshots of the console: %s (after its writes), %s (from the refused origin)", screenshot, filepath.Join(artifacts, "console-refused.png"))

	written := consoleResult(t, output)
	data := env.DataClient(apptest.ConnectJSON, env.Token, apptest.WithHeader(apptest.HeaderEnvironmentID, staging.GetId()))
	stored := map[string]map[string]any{
		"connect": {"name": "Ada Lovelace", "plan": "pro"},
		"rest":    {"name": "Grace Hopper", "plan": "free"},
	}
	for via, want := range stored {
		id := written[via]
		res, err := data.GetRecord(ctx, connect.NewRequest(&datav1.GetRecordRequest{Object: object, Id: id}))
		if err != nil {
			t.Errorf("GetRecord %s (written via %s) in staging: %v", id, via, err)
			continue
		}
		got := res.Msg.GetRecord().AsMap()
		for field, value := range want {
			if got[field] != value {
				t.Errorf("record written via %s: %s = %v, want %v (record %v)", via, field, got[field], value, got)
			}
		}
	}
	wantIDs := []string{written["connect"], written["rest"]}
	slices.Sort(wantIDs)
	if got := env.StoredRecords(t, staging)(t, object); !slices.Equal(got, wantIDs) {
		t.Errorf("ids in staging's database = %q, want %q", got, wantIDs)
	}

	// Isolation: dev neither knows the object nor has its table.
	_, err = env.DataClient(apptest.ConnectJSON, env.Token, apptest.WithHeader(apptest.HeaderEnvironmentID, dev.GetId())).
		ListRecords(ctx, connect.NewRequest(&datav1.ListRecordsRequest{Object: object}))
	apptest.WantError(t, err, connect.CodeNotFound, "OBJECT_NOT_DEFINED")
	if tables := env.SQLiteTables(t, dev.GetId()); slices.Contains(tables, object) {
		t.Errorf("dev's database has a %s table: %q", object, tables)
	}

}

// consoleResult reads the ids the console test wrote, by how it wrote them.
func consoleResult(t *testing.T, output string) map[string]string {
	t.Helper()
	const prefix = "CONSOLE_RESULT "
	sc := bufio.NewScanner(strings.NewReader(output))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			var ids map[string]string
			if err := json.Unmarshal([]byte(rest), &ids); err != nil {
				t.Fatalf("%s%s: %v", prefix, rest, err)
			}
			if ids["connect"] == "" || ids["rest"] == "" {
				t.Fatalf("%s%s: want the ids of a connect and a rest write", prefix, rest)
			}
			return ids
		}
	}
	t.Fatalf("the console test printed no %q line:\n%s", prefix, output)
	return nil
}

// testCORS asks the server what a browser would: a preflight answer names
// the allowed origin and the headers the console sends, an actual answer
// exposes the headers the console reads, and another origin gets neither.
func testCORS(t *testing.T, env *apptest.Env, allowedOrigin, refusedOrigin, environmentID string) {
	// As a browser sends them: lowercase and sorted (rs/cors refuses a
	// preflight whose list is not).
	sent := []string{"authorization", "connect-protocol-version", "connect-timeout-ms", "content-type", "x-environment-id"}
	for _, tc := range []struct {
		name, method, path, origin string
		preflight                  bool
		wantAllowed                bool
	}{
		{name: "connect preflight, allowed", method: http.MethodOptions, path: "/envplane.data.v1.DataService/CreateRecord", origin: allowedOrigin, preflight: true, wantAllowed: true},
		{name: "rest preflight, allowed", method: http.MethodOptions, path: "/api/v1/environments/" + environmentID + "/data/customers", origin: allowedOrigin, preflight: true, wantAllowed: true},
		{name: "connect preflight, refused", method: http.MethodOptions, path: "/envplane.data.v1.DataService/CreateRecord", origin: refusedOrigin, preflight: true},
		{name: "rest preflight, refused", method: http.MethodOptions, path: "/api/v1/environments/" + environmentID + "/data/customers", origin: refusedOrigin, preflight: true},
		{name: "rest get, allowed", method: http.MethodGet, path: "/api/v1/cloud/whoami", origin: allowedOrigin, wantAllowed: true},
		{name: "rest get, refused", method: http.MethodGet, path: "/api/v1/cloud/whoami", origin: refusedOrigin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, env.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", tc.origin)
			if tc.preflight {
				req.Header.Set("Access-Control-Request-Method", http.MethodPost)
				req.Header.Set("Access-Control-Request-Headers", strings.Join(sent, ","))
			} else {
				req.Header.Set("Authorization", "Bearer "+env.Token)
			}
			res, err := env.HTTP1.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close()
			gotOrigin := res.Header.Get("Access-Control-Allow-Origin")
			if !tc.wantAllowed {
				if gotOrigin != "" {
					t.Errorf("Access-Control-Allow-Origin = %q for a refused origin, want none", gotOrigin)
				}
				return
			}
			if gotOrigin != tc.origin {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", gotOrigin, tc.origin)
			}
			if tc.preflight {
				allowedHeaders := strings.Split(strings.ToLower(strings.ReplaceAll(res.Header.Get("Access-Control-Allow-Headers"), " ", "")), ",")
				for _, h := range sent {
					if !slices.Contains(allowedHeaders, h) {
						t.Errorf("Access-Control-Allow-Headers = %q, missing %s", res.Header.Get("Access-Control-Allow-Headers"), h)
					}
				}
				return
			}
			exposed := strings.ToLower(res.Header.Get("Access-Control-Expose-Headers"))
			for _, h := range []string{"x-environment-id", "x-request-id"} {
				if !strings.Contains(exposed, h) {
					t.Errorf("Access-Control-Expose-Headers = %q, missing %s", res.Header.Get("Access-Control-Expose-Headers"), h)
				}
			}
		})
	}
}
