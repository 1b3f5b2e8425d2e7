package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
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
			call := func(method, path, body string, transcoded bool) (int, string, []byte) {
				t.Helper()
				req, err := http.NewRequestWithContext(t.Context(), method, env.URL+path, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+env.AdminToken())
				req.Header.Set("Content-Type", "application/json")
				if transcoded {
					req.Header.Set("X-Server-Timeout", "30")
				}
				resp, err := env.HTTP1.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, resp.Header.Get("Content-Type"), b
			}
			same := func(path string) []byte {
				t.Helper()
				ds, dct, direct := call("GET", path, "", false)
				ts, tct, transcoded := call("GET", path, "", true)
				if ds != ts || dct != tct || !bytes.Equal(direct, transcoded) {
					t.Fatalf("GET %s:\ndirect     %d %s %s\ntranscoded %d %s %s", path, ds, dct, direct, ts, tct, transcoded)
				}
				return direct
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
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatalf("%s: %v", body, err)
				}
				if p.NextPageToken != "" {
					same(base + "?" + q + "&pageToken=" + url.QueryEscape(p.NextPageToken))
				}
			}

			// A write's answer is the record as a read shows it.
			status, _, created := call("POST", base, `{"id":"new","name":"fresh \u00e9","rank":-3,"meta":{"k":[1.5]}}`, false)
			if status != http.StatusOK {
				t.Fatalf("create: %d %s", status, created)
			}
			if read := same(base + "/new"); !bytes.Equal(created, read) {
				t.Fatalf("create answered %s, a read %s", created, read)
			}
			status, _, updated := call("PATCH", base+"/new", `{"score":2.25,"name":null}`, false)
			if status != http.StatusOK {
				t.Fatalf("update: %d %s", status, updated)
			}
			if read := same(base + "/new"); !bytes.Equal(updated, read) {
				t.Fatalf("update answered %s, a read %s", updated, read)
			}
		})
	}
}
