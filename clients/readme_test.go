package clients_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"

	"github.com/envplane/envplane/app/apptest"
)

// readmeSection is the README section this file proves.
const readmeSection = "## Call it from code and the command line"

// compileTimeout bounds the first `go run …grpcurl@version`, which
// downloads and compiles grpcurl when the build cache does not hold it.
const compileTimeout = 8 * time.Minute

// TestReadme proves the README's section on calling envplane from code and
// the command line: its Go example is examples/goclient/main.go byte for
// byte and runs, twice, the second time changing nothing; and every grpcurl
// and buf curl command, taken verbatim from the README, works against a
// real server with the walkthrough's AUTH, ORG, DEV and STAGING, and stays
// inside the environment it names.
func TestReadme(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	npmBin(t, "buf")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := readmeSectionText(t, string(readme))

	env := startServer(t)

	t.Run("Links", func(t *testing.T) {
		t.Parallel()
		testReadmeLinks(t, root, section)
	})
	t.Run("GoExample", func(t *testing.T) {
		t.Parallel()
		testReadmeGoExample(t, env, root, section)
	})
	t.Run("Commands", func(t *testing.T) {
		t.Parallel()
		testReadmeCommands(t, env, root, section)
	})
}

// testReadmeLinks checks that every file the section links to exists: the
// other clients' READMEs above all.
func testReadmeLinks(t *testing.T, root, section string) {
	links := regexp.MustCompile(`\]\(([^)#:]+)\)`).FindAllStringSubmatch(section, -1)
	if len(links) == 0 {
		t.Fatal("the README section links to no file")
	}
	for _, l := range links {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(l[1]))); err != nil {
			t.Errorf("the README section links to %s: %v", l[1], err)
		}
	}
}

// testReadmeGoExample checks that the README shows examples/goclient/main.go
// as it is and runs it: once with -token, once with $ENVPLANE_TOKEN (the
// second run finds everything in place), once with a bad token.
func testReadmeGoExample(t *testing.T, env *apptest.Env, root, section string) {
	source, err := os.ReadFile(filepath.Join(root, "examples", "goclient", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(section, "\n```go\n")
	if !ok {
		t.Fatal("the README section has no ```go block")
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatal("the README's ```go block does not end")
	}
	if diff := cmp.Diff(string(source), block+"\n"); diff != "" {
		t.Errorf("the README's Go block differs from examples/goclient/main.go (-file +README):\n%s", diff)
	}
	if !strings.Contains(section, "\n    go run ./examples/goclient\n") {
		t.Error("the README section does not say how to run the example: go run ./examples/goclient")
	}

	first := run(t, command(t, root, nil, "go", "run", "./examples/goclient", "-url", env.URL, "-token", env.Token))
	second := run(t, command(t, root, []string{"ENVPLANE_TOKEN=" + env.Token}, "go", "run", "./examples/goclient", "-url", env.URL))
	t.Logf("first run:\n%ssecond run:\n%s", first, second)
	for _, want := range []string{
		"object tasks version 1, applied true\n",
		"record task-1 created\nrecord task-2 created\n",
		"open task task-2 Ship the example\n",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("first run: want %q in\n%s", want, first)
		}
	}
	for _, want := range []string{
		"object tasks version 1, applied false\n",
		"record task-1 exists\nrecord task-2 exists\n",
		"open task task-2 Ship the example\n",
	} {
		if !strings.Contains(second, want) {
			t.Errorf("second run: want %q in\n%s", want, second)
		}
	}
	if strings.Contains(first, "open task task-1") {
		t.Errorf("the filter done = false let a done task through:\n%s", first)
	}

	// Both runs name the same organization and environment, which hold what
	// one run made.
	ids := regexp.MustCompile(`(?m)^organization example (\S+)\nenvironment dev (\S+) active example-dev\.localhost$`)
	m1, m2 := ids.FindStringSubmatch(first), ids.FindStringSubmatch(second)
	if m1 == nil || m2 == nil {
		t.Fatalf("no organization and active environment lines in\n%s\n%s", first, second)
	}
	if !slices.Equal(m1[1:], m2[1:]) {
		t.Errorf("the second run made new resources: %q, then %q", m1[1:], m2[1:])
	}
	orgs, err := env.Client(apptest.ConnectProto).ListOrganizations(t.Context(), connect.NewRequest(&environmentv1.ListOrganizationsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var slugs []string
	for _, o := range orgs.Msg.GetOrganizations() {
		slugs = append(slugs, o.GetSlug())
	}
	if n := strings.Count(strings.Join(slugs, " ")+" ", "example "); n != 1 {
		t.Errorf("organizations %q: want one example", slugs)
	}
	tasks, err := env.DataClient(apptest.ConnectProto, env.Token).ListRecords(t.Context(),
		connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: m1[2], Object: "tasks", OrderBy: "id"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range tasks.Msg.GetRecords() {
		got = append(got, r.GetFields()["id"].GetStringValue()+" "+r.GetFields()["title"].GetStringValue())
	}
	if want := []string{"task-1 Write the docs", "task-2 Ship the example"}; !slices.Equal(got, want) {
		t.Errorf("tasks after two runs = %q, want %q", got, want)
	}

	out, err := command(t, root, nil, "go", "run", "./examples/goclient", "-url", env.URL, "-token", "not-a-token").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "code unauthenticated, reason TOKEN_MALFORMED") {
		t.Errorf("with a bad token: err %v, want exit 1 naming code unauthenticated and reason TOKEN_MALFORMED:\n%s", err, out)
	}
}

// testReadmeCommands runs the section's grpcurl and buf curl commands, in
// order, on the walkthrough's organization and environments (made here with
// the same request ids), then the list commands again on staging.
func testReadmeCommands(t *testing.T, env *apptest.Env, root, section string) {
	commands := readmeCommands(section)
	if len(commands) == 0 {
		t.Fatal("no grpcurl or buf curl command in the README section")
	}
	warmGrpcurl(t, root, commands)

	ctx := t.Context()
	control := env.Client(apptest.ConnectProto)
	org, err := control.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{
		Slug: "acme", DisplayName: "Acme Inc.", RequestId: "readme-org",
	}))
	if err != nil {
		t.Fatal(err)
	}
	orgID := org.Msg.GetOrganization().GetId()
	createEnv := func(req *environmentv1.CreateEnvironmentRequest) string {
		req.OrganizationId = orgID
		res, err := control.CreateEnvironment(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetEnvironment().GetId()
	}
	dev := createEnv(&environmentv1.CreateEnvironmentRequest{Slug: "dev", RequestId: "readme-dev"})
	staging := createEnv(&environmentv1.CreateEnvironmentRequest{Slug: "staging", Driver: "memory", Type: "staging", RequestId: "readme-staging"})
	defineCustomers := func(environmentID string) {
		t.Helper()
		_, err := env.MetadataClient(apptest.ConnectProto, env.Token).PutObject(ctx, connect.NewRequest(&metadatav1.PutObjectRequest{
			EnvironmentId: environmentID,
			Name:          "customers",
			Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{
				{Name: "name", Type: "text", Required: true},
				{Name: "plan", Type: "select", Options: []string{"free", "pro"}, DefaultValue: structpb.NewStringValue("free")},
			}},
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	defineCustomers(dev)

	vars := map[string]string{
		"AUTH":    "Authorization: Bearer " + env.Token,
		"ORG":     orgID,
		"DEV":     dev,
		"STAGING": staging,
	}
	seen := map[string]bool{}
	var created, lists []string
	for _, c := range commands {
		tool := readmeTool(c)
		out := readmeRun(t, env, root, c, vars)
		t.Logf("$ %s\n%s", c, out)
		switch {
		case strings.HasSuffix(c, " list") || strings.Contains(c, " --list-services "):
			seen[tool+" list services"] = true
			for _, svc := range []string{"envplane.environment.v1.EnvironmentService", "envplane.access.v1.AccessService",
				"envplane.metadata.v1.MetadataService", "envplane.data.v1.DataService", "grpc.health.v1.Health"} {
				if !slices.Contains(strings.Fields(out), svc) {
					t.Errorf("%s: %s missing from\n%s", c, svc, out)
				}
			}
		case strings.Contains(c, " describe "):
			seen[tool+" describe"] = true
			fields := strings.Fields(c)
			full := fields[len(fields)-1]
			svc, method := full[:strings.LastIndex(full, ".")], full[strings.LastIndex(full, ".")+1:]
			pkg := svc[:strings.LastIndex(svc, ".")]
			want := "rpc " + method + " ( ." + pkg + "." + method + "Request ) returns ( ." + pkg + "." + method + "Response )"
			if !strings.Contains(out, want) {
				t.Errorf("%s: want %q in\n%s", c, want, out)
			}
		case strings.Contains(c, " --list-methods "):
			seen[tool+" describe"] = true // buf curl has no describe; its method list stands in
			for _, m := range []string{"envplane.data.v1.DataService/CreateRecord", "envplane.data.v1.DataService/ListRecords"} {
				if !slices.Contains(strings.Fields(out), m) {
					t.Errorf("%s: %s missing from\n%s", c, m, out)
				}
			}
		case strings.Contains(c, "/GetEnvironment"):
			var res struct{ Environment struct{ ID, Slug string } }
			readmeJSON(t, c, out, &res)
			if res.Environment.ID != dev || res.Environment.Slug != "dev" {
				t.Errorf("%s: got environment %+v, want dev %s", c, res.Environment, dev)
			}
		case strings.Contains(c, "/CreateRecord"):
			seen[tool+" create"] = true
			var res struct{ Record map[string]any }
			readmeJSON(t, c, out, &res)
			id, _ := res.Record["id"].(string)
			if id == "" {
				t.Fatalf("%s: no record id in\n%s", c, out)
			}
			created = append(created, id)
			// The record went to dev's own database.
			if _, err := env.DataClient(apptest.ConnectProto, env.Token).GetRecord(ctx, connect.NewRequest(&datav1.GetRecordRequest{
				EnvironmentId: dev, Object: "customers", Id: id,
			})); err != nil {
				t.Errorf("%s: record %s is not in dev: %v", c, id, err)
			}
		case strings.Contains(c, "/ListRecords"):
			seen[tool+" list records"] = true
			lists = append(lists, c)
			if got := readmeRecordIDs(t, c, out); !readmeContainsAll(got, created) {
				t.Errorf("%s: records %q, want the created %q among them", c, got, created)
			}
		default:
			t.Errorf("the test does not know what to check of %s", c)
		}
	}
	for _, tool := range []string{"grpcurl", "buf curl"} {
		for _, kind := range []string{"list services", "describe", "create", "list records"} {
			if !seen[tool+" "+kind] {
				t.Errorf("the README section has no %s command to %s", tool, kind)
			}
		}
	}

	// The same list commands with staging's id: first staging has no
	// customers at all, then its own, empty, customers.
	isolated := maps.Clone(vars)
	isolated["DEV"] = staging
	for _, c := range lists {
		out, err := readmeTry(t, env, root, c, isolated)
		if err == nil || readmeReason(out) != "OBJECT_NOT_DEFINED" {
			t.Errorf("%s with DEV=$STAGING: err %v, want OBJECT_NOT_DEFINED in\n%s", c, err, out)
		}
	}
	defineCustomers(staging)
	for _, c := range lists {
		if got := readmeRecordIDs(t, c, readmeRun(t, env, root, c, isolated)); len(got) != 0 {
			t.Errorf("%s with DEV=$STAGING: staging lists dev's records %q", c, got)
		}
	}
}

// readmeSectionText is the README's text from readmeSection to the next
// "## " heading.
func readmeSectionText(tb testing.TB, readme string) string {
	tb.Helper()
	_, section, ok := strings.Cut(readme, "\n"+readmeSection+"\n")
	if !ok {
		tb.Fatalf("README.md has no %q section", readmeSection)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	return section
}

// readmeCommands returns the grpcurl and buf curl commands of the section's
// indented code blocks, in order, each continued line joined with its
// continuation as bash would read it.
func readmeCommands(section string) []string {
	var commands []string
	var pending string
	fenced := false
	for line := range strings.Lines(section) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		code, ok := strings.CutPrefix(line, "    ")
		if fenced || !ok {
			pending = ""
			continue
		}
		code = pending + strings.TrimSpace(code)
		if cont, ok := strings.CutSuffix(code, "\\"); ok {
			pending = cont
			continue
		}
		pending = ""
		if readmeTool(code) != "" {
			commands = append(commands, code)
		}
	}
	return commands
}

// readmeTool names the tool a command runs: grpcurl, buf curl or "".
func readmeTool(line string) string {
	switch {
	case strings.HasPrefix(line, "go run github.com/fullstorydev/grpcurl/cmd/grpcurl@"):
		return "grpcurl"
	case strings.HasPrefix(line, "npx buf curl "):
		return "buf curl"
	}
	return ""
}

// warmGrpcurl runs the README's grpcurl once with -version, so that
// compiling it on a cold build cache is not charged to a command's timeout.
func warmGrpcurl(tb testing.TB, root string, commands []string) {
	tb.Helper()
	i := slices.IndexFunc(commands, func(c string) bool { return readmeTool(c) == "grpcurl" })
	if i < 0 {
		return
	}
	pkg := strings.Fields(commands[i])[2] // go run <pkg@version> …
	ctx, cancel := context.WithTimeout(tb.Context(), compileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", pkg, "-version")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go run %s -version: %v\n%s", pkg, err, out)
	}
}

// readmeTry runs a README command with bash from the repository's root, on
// the test server instead of localhost:8080, with vars in its environment.
// It returns stdout, or stdout and stderr when the command fails.
func readmeTry(tb testing.TB, env *apptest.Env, root, line string, vars map[string]string) (string, error) {
	tb.Helper()
	environ := make([]string, 0, len(vars))
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	script := strings.ReplaceAll(line, "localhost:8080", env.Addr)
	cmd := command(tb, root, environ, "bash", "-euo", "pipefail", "-c", script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// readmeRun is readmeTry failing the test when the command fails.
func readmeRun(tb testing.TB, env *apptest.Env, root, line string, vars map[string]string) string {
	tb.Helper()
	out, err := readmeTry(tb, env, root, line, vars)
	if err != nil {
		tb.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

// readmeJSON decodes a command's JSON output into v.
func readmeJSON(tb testing.TB, line, out string, v any) {
	tb.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		tb.Fatalf("%s: output is not JSON (%v):\n%s", line, err, out)
	}
}

// readmeRecordIDs are the ids of the records a ListRecords command printed.
func readmeRecordIDs(tb testing.TB, line, out string) []string {
	tb.Helper()
	var res struct{ Records []map[string]any }
	readmeJSON(tb, line, out, &res)
	ids := []string{}
	for _, r := range res.Records {
		id, _ := r["id"].(string)
		ids = append(ids, id)
	}
	return ids
}

func readmeContainsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return len(want) > 0
}

// readmeReason finds the google.rpc.ErrorInfo reason in a failed command's
// output: grpcurl prints the detail as JSON, buf curl prints the Connect
// error with the detail's bytes in base64.
func readmeReason(out string) string {
	if m := regexp.MustCompile(`"reason": "([A-Z_]+)"`).FindStringSubmatch(out); m != nil {
		return m[1]
	}
	start := strings.Index(out, "{")
	if start < 0 {
		return ""
	}
	var e struct {
		Details []struct{ Type, Value string }
	}
	if err := json.NewDecoder(strings.NewReader(out[start:])).Decode(&e); err != nil {
		return ""
	}
	for _, d := range e.Details {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		var info errdetails.ErrorInfo
		if d.Type == "google.rpc.ErrorInfo" && err == nil && proto.Unmarshal(b, &info) == nil {
			return info.GetReason()
		}
	}
	return ""
}
