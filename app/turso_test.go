package app_test

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/tursotest"
	"github.com/envplane/envplane/services/environment"
)

// tursoStart starts a server provisioning turso environments through fake,
// with apiToken as its Platform API token.
func tursoStart(t *testing.T, fake *apptest.FakeTurso, apiToken string) *apptest.Env {
	t.Helper()
	return apptest.Start(t,
		"--turso-organization="+fake.Org, "--turso-api-url="+fake.URL,
		"--turso-api-token="+apiToken, "--turso-database-scheme=http")
}

// tursoDefine defines object notes (title text, required; n integer) in an
// environment.
func tursoDefine(t *testing.T, env *apptest.Env, environmentID string) {
	t.Helper()
	_, err := env.MetadataClient(apptest.ConnectJSON, env.Token).PutObject(t.Context(), connect.NewRequest(&metadatav1.PutObjectRequest{
		EnvironmentId: environmentID, Name: "notes", Object: &metadatav1.ObjectDefinition{Fields: []*metadatav1.Field{
			{Name: "title", Type: "text", Required: true},
			{Name: "n", Type: "integer"},
		}},
	}))
	if err != nil {
		t.Fatalf("PutObject(notes) in %s: %v", environmentID, err)
	}
}

// tursoCreate stores a note and returns its id.
func tursoCreate(t *testing.T, env *apptest.Env, environmentID, title string, n int) string {
	t.Helper()
	rec, err := structpb.NewStruct(map[string]any{"title": title, "n": n})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.DataClient(apptest.ConnectJSON, env.Token).CreateRecord(t.Context(), connect.NewRequest(&datav1.CreateRecordRequest{
		EnvironmentId: environmentID, Object: "notes", Record: rec,
	}))
	if err != nil {
		t.Fatalf("CreateRecord(notes, %q) in %s: %v", title, environmentID, err)
	}
	got := resp.Msg.GetRecord().AsMap()
	if got["title"] != title || got["n"] != float64(n) || got["id"] == "" {
		t.Errorf("CreateRecord answered %v, want title %q and n %d", got, title, n)
	}
	id, _ := got["id"].(string)
	return id
}

// tursoTitles lists the titles of the notes of an environment, sorted.
func tursoTitles(t *testing.T, env *apptest.Env, environmentID string) []string {
	t.Helper()
	resp, err := env.DataClient(apptest.ConnectJSON, env.Token).ListRecords(t.Context(), connect.NewRequest(&datav1.ListRecordsRequest{
		EnvironmentId: environmentID, Object: "notes",
	}))
	if err != nil {
		t.Fatalf("ListRecords(notes) in %s: %v", environmentID, err)
	}
	var out []string
	for _, r := range resp.Msg.GetRecords() {
		out = append(out, r.GetFields()["title"].GetStringValue())
	}
	slices.Sort(out)
	return out
}

// tursoGetTitle reads one note's title.
func tursoGetTitle(t *testing.T, env *apptest.Env, environmentID, id string) string {
	t.Helper()
	resp, err := env.DataClient(apptest.ConnectJSON, env.Token).GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{
		EnvironmentId: environmentID, Object: "notes", Id: id,
	}))
	if err != nil {
		t.Fatalf("GetRecord(notes, %s) in %s: %v", id, environmentID, err)
	}
	return resp.Msg.GetRecord().GetFields()["title"].GetStringValue()
}

func tursoName(t *testing.T, environmentID string) string {
	t.Helper()
	name, err := provision.TursoName(environmentID)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// tursoPipelineStatus sends SELECT 1 to the libSQL database at databaseURL
// with token and returns the answer's status.
func tursoPipelineStatus(t *testing.T, databaseURL, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, databaseURL+"/v2/pipeline",
		strings.NewReader(`{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("pipeline request: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tursoWantNone fails t when text holds any of forbidden's values.
func tursoWantNone(t *testing.T, what, text string, forbidden map[string]string) {
	t.Helper()
	for label, v := range forbidden {
		if v != "" && strings.Contains(text, v) {
			t.Errorf("%s holds %s (%q): %s", what, label, v, text)
		}
	}
}

func TestTursoProvisioned(t *testing.T) {
	t.Parallel()
	_, apiToken, _, fake := apptest.StartFakeTurso(t)
	env := tursoStart(t, fake, apiToken)
	c := env.Client(apptest.ConnectJSON)
	ctx := t.Context()
	store, kr := env.ControlPlane(t), env.Keyring(t)
	org := createOrg(t, c, "acme")

	one := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "one", Driver: "turso"})
	if one.GetStatus() != "active" || one.GetDriver() != "turso" || one.GetProvisionTime() == nil {
		t.Fatalf("created = %v, want an active turso environment", one)
	}
	name := tursoName(t, one.GetId())
	if !fake.Exists(name) {
		t.Fatalf("the fake has no database %s (it has %q)", name, fake.Databases())
	}
	if want := "http://" + fake.Hostname(name); one.GetDatabaseUrl() != want {
		t.Errorf("database_url = %q, want %q", one.GetDatabaseUrl(), want)
	}
	if !strings.HasPrefix(one.GetDatabaseUrl(), "http://127.0.0.1:") {
		t.Errorf("database_url = %q, want http://127.0.0.1:<port>", one.GetDatabaseUrl())
	}
	_, secret := apptest.EnvironmentSecret(t, store, kr, one.GetId())
	if !fake.Valid(name, secret) {
		t.Errorf("the stored secret is not a token the fake minted for %s", name)
	}
	for what, text := range map[string]string{"database_url": one.GetDatabaseUrl(), "the environment": one.String()} {
		tursoWantNone(t, what, text, map[string]string{"the database token": secret, "the API token": apiToken})
	}

	tursoDefine(t, env, one.GetId())
	first := tursoCreate(t, env, one.GetId(), "first", 1)
	tursoCreate(t, env, one.GetId(), "second", 2)
	if got := tursoGetTitle(t, env, one.GetId(), first); got != "first" {
		t.Errorf("GetRecord title = %q, want first", got)
	}
	if got := tursoTitles(t, env, one.GetId()); !slices.Equal(got, []string{"first", "second"}) {
		t.Errorf("ListRecords titles = %q, want [first second]", got)
	}
	// The rows live in the database the fake made, not anywhere else.
	if got := apptest.TursodbQuery(t, fake.DirectURL(name), "SELECT title FROM notes ORDER BY title"); !slices.Equal(got, []string{"first", "second"}) {
		t.Errorf("the fake's tursodb holds titles %q, want [first second]", got)
	}

	t.Run("isolation", func(t *testing.T) {
		two := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "two", Driver: "turso"})
		if two.GetStatus() != "active" || two.GetDatabaseUrl() == one.GetDatabaseUrl() {
			t.Fatalf("second = %v, want active with a database of its own", two)
		}
		meta := env.MetadataClient(apptest.ConnectJSON, env.Token)
		list, err := meta.ListObjects(ctx, connect.NewRequest(&metadatav1.ListObjectsRequest{EnvironmentId: two.GetId()}))
		if err != nil {
			t.Fatalf("ListObjects(two): %v", err)
		}
		if n := len(list.Msg.GetObjects()); n != 0 {
			t.Errorf("the second environment lists %d objects, want none", n)
		}
		_, err = meta.GetObject(ctx, connect.NewRequest(&metadatav1.GetObjectRequest{EnvironmentId: two.GetId(), Name: "notes"}))
		apptest.WantError(t, err, connect.CodeNotFound, "")
		_, err = env.DataClient(apptest.ConnectJSON, env.Token).GetRecord(ctx, connect.NewRequest(&datav1.GetRecordRequest{
			EnvironmentId: two.GetId(), Object: "notes", Id: first,
		}))
		apptest.WantError(t, err, connect.CodeNotFound, "")

		// The same object defined in both: each sees its own records.
		tursoDefine(t, env, two.GetId())
		tursoCreate(t, env, two.GetId(), "other", 3)
		if got := tursoTitles(t, env, two.GetId()); !slices.Equal(got, []string{"other"}) {
			t.Errorf("second environment titles = %q, want [other]", got)
		}
		if got := tursoTitles(t, env, one.GetId()); !slices.Equal(got, []string{"first", "second"}) {
			t.Errorf("first environment titles = %q after writes to the second, want [first second]", got)
		}
		if got := fake.Databases(); len(got) != 2 {
			t.Errorf("the fake has databases %q, want two", got)
		}
	})

	t.Run("rotate", func(t *testing.T) {
		before := len(fake.Requests())
		resp, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: one.GetId()}))
		if err != nil {
			t.Fatalf("RotateCredential: %v", err)
		}
		if resp.Msg.GetRotateTime() == nil {
			t.Errorf("RotateCredential answered no rotate_time")
		}
		base := "/v1/organizations/" + fake.Org + "/databases/" + name
		var got []string
		for _, r := range fake.Requests()[before:] {
			got = append(got, r.String())
		}
		want := []string{"POST " + base + "/auth/rotate", "POST " + base + "/auth/tokens?authorization=full-access&expiration=never"}
		if !slices.Equal(got, want) {
			t.Errorf("the rotation called the API:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		if n := fake.Rotations(name); n != 1 {
			t.Errorf("the fake rotated %s's keys %d times, want 1", name, n)
		}
		_, next := apptest.EnvironmentSecret(t, store, kr, one.GetId())
		if next == secret || !fake.Valid(name, next) {
			t.Errorf("the stored secret after rotation is not a new valid token")
		}
		if fake.Valid(name, secret) {
			t.Errorf("the old token still works after the rotation")
		}
		tursoWantNone(t, "the rotate answer", resp.Msg.String(), map[string]string{"the old token": secret, "the new token": next})
		for _, tc := range []struct {
			which, token string
			want         int
		}{{"old", secret, http.StatusUnauthorized}, {"new", next, http.StatusOK}} {
			if got := tursoPipelineStatus(t, one.GetDatabaseUrl(), tc.token); got != tc.want {
				t.Errorf("the database answers a pipeline with the %s token %d, want %d", tc.which, got, tc.want)
			}
		}

		// The fake's proxy refuses the old token: the environment works on
		// only because the registry reopened its database with the new one.
		if got := tursoGetTitle(t, env, one.GetId(), first); got != "first" {
			t.Errorf("GetRecord after rotation: title %q, want first", got)
		}
		tursoCreate(t, env, one.GetId(), "third", 3)
		if got := tursoTitles(t, env, one.GetId()); !slices.Equal(got, []string{"first", "second", "third"}) {
			t.Errorf("titles after rotation = %q", got)
		}
	})

	// Turso invalidates every token before minting the new one: a mint
	// that fails leaves none valid, and the error must not say otherwise;
	// a retry converges.
	t.Run("rotation failing after the keys rotated", func(t *testing.T) {
		_, current := apptest.EnvironmentSecret(t, store, kr, one.GetId())
		fake.SetFail(func(r *http.Request) (int, string, bool) {
			return http.StatusServiceUnavailable, `{"error":"try later"}`, strings.HasSuffix(r.URL.Path, "/auth/tokens")
		})
		_, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: one.GetId()}))
		fake.SetFail(nil)
		apptest.WantError(t, err, connect.CodeUnavailable, environment.ReasonRotationFailed)
		if fake.Valid(name, current) {
			t.Fatalf("the token survived the keys' rotation")
		}
		if strings.Contains(errorText(err), "still valid") {
			t.Errorf("the error claims the old credential is still valid, but Turso invalidated it: %v", err)
		}
		tursoWantNone(t, "the error", errorText(err), map[string]string{"the API token": apiToken, "the API URL": fake.URL, "the token": current})
		if _, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: one.GetId()})); err != nil {
			t.Fatalf("RotateCredential retry: %v", err)
		}
		_, next := apptest.EnvironmentSecret(t, store, kr, one.GetId())
		if !fake.Valid(name, next) {
			t.Errorf("the stored secret after the retry is not a valid token")
		}
		if got := tursoTitles(t, env, one.GetId()); !slices.Equal(got, []string{"first", "second", "third"}) {
			t.Errorf("titles after the retried rotation = %q", got)
		}
	})

	t.Run("delete", func(t *testing.T) {
		_, token := apptest.EnvironmentSecret(t, store, kr, one.GetId())
		proxied := "http://" + fake.Hostname(name) + "?authToken=" + token
		direct := fake.DirectURL(name)
		if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: one.GetId(), Force: true})); err != nil {
			t.Fatalf("DeleteEnvironment(force): %v", err)
		}
		if fake.Exists(name) || !slices.Contains(fake.Deleted(), name) {
			t.Errorf("the fake's database %s was not deleted (deleted: %q)", name, fake.Deleted())
		}
		// Gone means the database no longer answers as itself; its port may
		// already serve another test's tursodb.
		for what, url := range map[string]string{"proxy": proxied, "tursodb": direct} {
			titles, err := tursotest.TryQuery(ctx, url, `SELECT title FROM "notes" ORDER BY title`)
			if err == nil && slices.Equal(titles, []string{"first", "second", "third"}) {
				t.Errorf("the deleted database's %s still answers", what)
			}
		}
		_, err := c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: one.GetId()}))
		apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
		if got := fake.Databases(); len(got) != 1 {
			t.Errorf("after the delete the fake has %q, want only the second environment's", got)
		}
	})

	tursoWantNone(t, "the server log", env.Logs.String(), map[string]string{"the API token": apiToken, "the first database token": secret})
	for _, r := range fake.Requests() {
		if !r.Authorized {
			t.Errorf("%s was sent without the API token", r)
		}
	}
}

func TestTursoNotConfigured(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	c := env.Client(apptest.ConnectJSON)
	org := createOrg(t, c, "acme")
	_, err := c.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "dev", Driver: "turso",
	}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDriverNotConfigured)
	if envs := listEnvs(t, c, org.GetId()); len(envs) != 0 {
		t.Errorf("a refused create left environments: %v", envs)
	}
	if _, err := c.ResolveHostname(t.Context(), connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "acme-dev.localhost"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("ResolveHostname(acme-dev.localhost) = %v, want NOT_FOUND", err)
	}
}

func TestTursoBringYourOwn(t *testing.T) {
	t.Parallel()
	dbURL := apptest.StartTursodb(t)
	env := apptest.Start(t) // no Turso configuration: bringing a database needs none
	c := env.Client(apptest.ConnectJSON)
	ctx := t.Context()
	org := createOrg(t, c, "acme")

	own := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
		OrganizationId: org.GetId(), Slug: "own", Driver: "turso", DatabaseUrl: dbURL, DatabaseSecret: "any",
	})
	if own.GetStatus() != "active" || own.GetDatabaseUrl() != dbURL || own.GetProvisionTime() == nil {
		t.Fatalf("created = %v, want active with the URL brought", own)
	}
	if _, stored := apptest.EnvironmentSecret(t, env.ControlPlane(t), env.Keyring(t), own.GetId()); stored != "any" {
		t.Errorf("the stored secret is not the one brought")
	}
	tursoDefine(t, env, own.GetId())
	id := tursoCreate(t, env, own.GetId(), "kept", 7)
	if got := tursoGetTitle(t, env, own.GetId(), id); got != "kept" {
		t.Errorf("GetRecord title = %q, want kept", got)
	}

	_, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: own.GetId()}))
	apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonCredentialNotRotatable)

	if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: own.GetId(), Force: true})); err != nil {
		t.Fatalf("DeleteEnvironment(force): %v", err)
	}
	_, err = c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: own.GetId()}))
	apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
	// The database brought stays, with its table and rows.
	if got := apptest.TursodbQuery(t, dbURL, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'notes'"); len(got) != 1 {
		t.Errorf("the table notes is gone from the database brought (tables named notes: %q)", got)
	}
	if got := apptest.TursodbQuery(t, dbURL, "SELECT title FROM notes"); !slices.Equal(got, []string{"kept"}) {
		t.Errorf("the database brought holds titles %q after the delete, want [kept]", got)
	}

	t.Run("unreachable", func(t *testing.T) {
		port := strconv.Itoa(apptest.FreePort(t))
		bad := "http://127.0.0.1:" + port
		before := listEnvs(t, c, org.GetId())
		_, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: "bad", Driver: "turso", DatabaseUrl: bad, DatabaseSecret: "any",
		}))
		apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonDatabaseUnreachable)
		tursoWantNone(t, "the error", errorText(err), map[string]string{"the URL": bad, "the address": "127.0.0.1:" + port, "the port": ":" + port})
		if after := listEnvs(t, c, org.GetId()); len(after) != len(before) {
			t.Errorf("a refused create changed the environments: %d before, %d after", len(before), len(after))
		}
	})
}

func TestTursoProvisioningFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		wrong     bool // configure a wrong API token
		fail      func(r *http.Request) (int, string, bool)
		wantInMsg string
	}{
		{name: "wrong API token", wrong: true, wantInMsg: "refused the API token"},
		{name: "quota", wantInMsg: "quota", fail: func(r *http.Request) (int, string, bool) {
			return http.StatusPaymentRequired, `{"error":"you have reached the database limit of your plan"}`,
				r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/databases")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			apiURL, apiToken, _, fake := apptest.StartFakeTurso(t)
			configured := apiToken
			if tc.wrong {
				configured = "tok-WRONG-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			}
			fake.SetFail(tc.fail)
			env := tursoStart(t, fake, configured)
			c := env.Client(apptest.ConnectJSON)
			org := createOrg(t, c, "acme")

			failed := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "dev", Driver: "turso"})
			msg := failed.GetStatusMessage()
			if failed.GetStatus() != "failed" || failed.GetDatabaseUrl() != "" || failed.GetProvisionTime() != nil {
				t.Errorf("created = %v, want failed without database_url or provision_time", failed)
			}
			if !strings.Contains(msg, tc.wantInMsg) {
				t.Errorf("status_message = %q, want it to say %q", msg, tc.wantInMsg)
			}
			forbidden := map[string]string{
				"the configured API token": configured, "the API token": apiToken, "the API URL": apiURL,
				"the API address": strings.TrimPrefix(apiURL, "http://"), "the organization": fake.Org,
				"the database name": tursoName(t, failed.GetId()),
			}
			tursoWantNone(t, "status_message", msg, forbidden)
			if got := getEnv(t, c, failed.GetId()); got.GetStatus() != "failed" || got.GetStatusMessage() != msg {
				t.Errorf("GetEnvironment = %v, want the same failure", got)
			}
			if got := fake.Databases(); len(got) != 0 {
				t.Errorf("the fake has databases %q, want none", got)
			}
			reqs := fake.Requests()
			if len(reqs) != 1 || !strings.HasSuffix(reqs[0].Path, "/databases") || reqs[0].Authorized == tc.wrong {
				t.Errorf("the fake received %v, want one create (authorized: %v)", reqs, !tc.wrong)
			}
			if row, err := env.ControlPlane(t).GetEnvironment(t.Context(), failed.GetId()); err != nil || len(row.Credential.Ciphertext) != 0 {
				t.Errorf("the failed environment has a stored credential (%v)", err)
			}
			_, err := c.RotateCredential(t.Context(), connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: failed.GetId()}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentNotReady)
			tursoWantNone(t, "the server log", env.Logs.String(), map[string]string{"the configured API token": configured, "the API token": apiToken})
		})
	}
}
