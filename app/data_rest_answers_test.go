package app_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/envplane/envplane/app/apptest"
)

// The data plane's REST routes write records straight from the stored
// values rather than through the Struct the other protocols carry. A
// request with X-Server-Timeout is one the direct routes leave to the
// transcoder, which writes the Struct: the same request both ways must
// answer the same bytes, on every engine, for records holding every type,
// NULLs, escapes and read masks, pages with tokens and totals, and errors.
func TestDataRESTAnswersAsTheTranscoder(t *testing.T) {
	t.Parallel()
	env, pgURL := dataServer(t)
	admin := env.Client(apptest.ConnectProto)
	org := createOrg(t, admin, "acme")
	for _, engine := range []string{"memory", "sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			dev := dataEnv(t, admin, pgURL, org, engine, engine)
			s := &dataSuite{env: env, p: apptest.ConnectProto, engine: engine, admin: admin, org: org, dev: dev,
				c: env.DataClient(apptest.ConnectProto, env.AdminToken())}
			dataDefineTasks(t, s, "tasks")
			s.create(t, "tasks", map[string]any{"id": "odd", "name": "é \u2028 \" \\ \n\t <>& \U0001F600 \x01",
				"rank": 9007199254740991, "score": 1e-7, "meta": map[string]any{"z": []any{1e21, "x", nil, false}, "a": map[string]any{}}})

			base := "/api/v1/environments/" + dev.GetId() + "/data/tasks"
			call := func(method, path, body string, transcoded bool) rawResponse {
				t.Helper()
				var header []string
				if transcoded {
					header = []string{"X-Server-Timeout", "30"}
				}
				return raw(t, env, method, path, "application/json", body, "Bearer "+env.AdminToken(), header...)
			}
			same := func(path string) string {
				t.Helper()
				d, tr := call("GET", path, "", false), call("GET", path, "", true)
				dct, tct := d.header.Get("Content-Type"), tr.header.Get("Content-Type")
				if d.status != tr.status || dct != tct || d.body != tr.body {
					t.Fatalf("GET %s:\ndirect     %d %s %s\ntranscoded %d %s %s", path, d.status, dct, d.body, tr.status, tct, tr.body)
				}
				return d.body
			}

			for _, id := range append(dataTaskOrder, "odd", "missing") {
				same(base + "/" + id)
				same(base + "/" + id + "?readMask=name,meta")
				same(base + "/" + id + "?readMask=id")
			}
			same("/api/v1/environments/" + dev.GetId() + "/data/nothing/t1")
			for _, q := range []string{"", "pageSize=3", "pageSize=2&orderBy=rank%20desc", "filter=" + url.QueryEscape("done = true"),
				"showTotalSize=true&pageSize=4", "readMask=meta,kind", "readMask=id&pageSize=1", "filter=" + url.QueryEscape("name = \"nobody\""),
				"filter=" + url.QueryEscape("rank >")} {
				body := same(base + "?" + q)
				var p struct{ NextPageToken string }
				if err := json.Unmarshal([]byte(body), &p); err != nil {
					t.Fatalf("%s: %v", body, err)
				}
				if p.NextPageToken != "" {
					same(base + "?" + q + "&pageToken=" + url.QueryEscape(p.NextPageToken))
				}
			}

			// A write's answer is the record as a read shows it.
			created := call("POST", base, `{"id":"new","name":"fresh \u00e9","rank":-3,"meta":{"k":[1.5]}}`, false)
			if created.status != http.StatusOK {
				t.Fatalf("create: %d %s", created.status, created.body)
			}
			if read := same(base + "/new"); created.body != read {
				t.Fatalf("create answered %s, a read %s", created.body, read)
			}
			updated := call("PATCH", base+"/new", `{"score":2.25,"name":null}`, false)
			if updated.status != http.StatusOK {
				t.Fatalf("update: %d %s", updated.status, updated.body)
			}
			if read := same(base + "/new"); updated.body != read {
				t.Fatalf("update answered %s, a read %s", updated.body, read)
			}
		})
	}
}
