package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/app/apptest"
	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/services/data"
)

// TestIfMatch: HTTP's conditional headers are the record's etag check on
// every protocol. A record's answers carry its ETag; If-Match with a stale
// etag refuses an update or a delete (409 ETAG_MISMATCH over REST) and
// changes nothing; with the current one, or "*", it goes through; a header
// and an etag field that disagree are refused.
func TestIfMatch(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	envID, c := notesEnv(t, env, "conditionals")
	rec := dataCreate(t, c, envID, "note", map[string]any{"text": "first"})
	id, etag := dataID(rec), rec.GetFields()["etag"].GetStringValue()
	path := "/api/v1/environments/" + envID + "/data/note/" + id

	restQ := func(method, query, body string, header ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, env.URL+path+query, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+env.AdminToken())
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	rest := func(method, body string, header ...string) (*http.Response, string) {
		t.Helper()
		return restQ(method, "", body, header...)
	}
	text := func() string {
		t.Helper()
		resp, err := c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: envID, Object: "note", Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetRecord().GetFields()["text"].GetStringValue()
	}

	resp, _ := rest(http.MethodGet, "")
	if got := resp.Header.Get("ETag"); got != `"`+etag+`"` {
		t.Fatalf("GET's ETag = %q, want %q", got, `"`+etag+`"`)
	}
	// If-None-Match with the current ETag: 304, no body; with another: the record.
	resp, body := rest(http.MethodGet, "", "If-None-Match", `"other", W/"`+etag+`"`)
	if resp.StatusCode != http.StatusNotModified || body != "" || resp.Header.Get("ETag") != `"`+etag+`"` {
		t.Errorf("GET with a matching If-None-Match: %d %q (ETag %q), want 304, no body, the ETag", resp.StatusCode, body, resp.Header.Get("ETag"))
	}
	resp, body = rest(http.MethodGet, "", "If-None-Match", `"other"`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "first") {
		t.Errorf("GET with another If-None-Match: %d %q, want 200 and the record", resp.StatusCode, body)
	}

	// Stale: refused, nothing changed.
	resp, body = rest(http.MethodPatch, `{"text":"lost"}`, "If-Match", `"0000000000000000"`)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, data.ReasonETagMismatch) {
		t.Errorf("PATCH with a stale If-Match: %d %s, want 409 %s", resp.StatusCode, body, data.ReasonETagMismatch)
	}
	resp, body = rest(http.MethodDelete, "", "If-Match", `"0000000000000000"`)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, data.ReasonETagMismatch) {
		t.Errorf("DELETE with a stale If-Match: %d %s, want 409 %s", resp.StatusCode, body, data.ReasonETagMismatch)
	}
	if got := text(); got != "first" {
		t.Fatalf("after refused conditional writes the text is %q", got)
	}
	// A header and a field that disagree.
	resp, body = restQ(http.MethodPatch, "?etag="+etag, `{"text":"x"}`, "If-Match", `"abc"`)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, data.ReasonETagHeaderConflict) {
		t.Errorf("PATCH with a disagreeing header and field: %d %s", resp.StatusCode, body)
	}
	// Current: goes through, and answers the new ETag.
	resp, body = rest(http.MethodPatch, `{"text":"second"}`, "If-Match", `"`+etag+`"`)
	newTag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || newTag == "" || newTag == `"`+etag+`"` {
		t.Fatalf("PATCH with the current If-Match: %d %s (ETag %q)", resp.StatusCode, body, newTag)
	}
	// The old etag is stale now, over Connect too (If-Match as metadata).
	req := connect.NewRequest(&datav1.UpdateRecordRequest{EnvironmentId: envID, Object: "note", Id: id, Record: dataRec(map[string]any{"text": "lost"})})
	req.Header().Set("If-Match", `"`+etag+`"`)
	_, err := c.UpdateRecord(t.Context(), req)
	apptest.WantError(t, err, connect.CodeAborted, data.ReasonETagMismatch)
	if got := text(); got != "second" {
		t.Fatalf("after a stale Connect If-Match the text is %q", got)
	}
	// "*" asks for no check; the current etag deletes.
	resp, body = rest(http.MethodPatch, `{"text":"third"}`, "If-Match", "*")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("PATCH with If-Match *: %d %s", resp.StatusCode, body)
	}
	resp, _ = rest(http.MethodGet, "")
	resp, body = rest(http.MethodDelete, "", "If-Match", resp.Header.Get("ETag"))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE with the current If-Match: %d %s", resp.StatusCode, body)
	}
	_, err = c.GetRecord(t.Context(), connect.NewRequest(&datav1.GetRecordRequest{EnvironmentId: envID, Object: "note", Id: id}))
	apptest.WantError(t, err, connect.CodeNotFound, data.ReasonRecordNotFound)
}
