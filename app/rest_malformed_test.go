package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"

	"github.com/envplane/envplane/app/apptest"
	"github.com/envplane/envplane/internal/apierr"
)

// TestRESTMalformedRequests: a REST request whose body, path or query does
// not fit the method is INVALID_ARGUMENT (400) with a reason, labelled JSON,
// and changes nothing. (The transcoder alone answers some of these 500
// UNKNOWN, labelled application/proto.)
func TestRESTMalformedRequests(t *testing.T) {
	t.Parallel()
	env := apptest.Start(t)
	envID, data := notesEnv(t, env, "shapes")
	dataCreate(t, data, envID, "note", map[string]any{"text": "the only one"})
	notes := "/api/v1/environments/" + envID + "/data/note"

	for _, c := range []struct {
		name, method, path, body, reason string
	}{
		{"a field of the wrong type", http.MethodPost, "/api/v1/cloud/organizations", `{"slug":5}`, apierr.ReasonMalformedBody},
		{"writes that are no list", http.MethodPost, "/api/v1/environments/" + envID + "/data:batchWrite", `{"writes":5}`, apierr.ReasonMalformedBody},
		{"not a JSON object", http.MethodPost, notes, `[1]`, apierr.ReasonMalformedBody},
		{"a misspelt field", http.MethodPost, "/api/v1/cloud/organizations", `{"slug":"typo","displayNmae":"Typo"}`, apierr.ReasonMalformedBody},
		{"a misspelt field of a direct route", http.MethodPost, "/api/v1/environments/" + envID + "/data:batchWrite",
			`{"writes":[{"create":{"object":"note","record":{"text":"x"}}}],"atomic":true}`, apierr.ReasonMalformedBody},
		{"an unknown query parameter", http.MethodGet, "/api/v1/cloud/organizations?nope=1", "", apierr.ReasonMalformedRequest},
		{"a page size that is no number", http.MethodGet, notes + "?pageSize=many", "", apierr.ReasonMalformedRequest},
		{"a query parameter on a create", http.MethodPost, notes + "?colour=red", `{"text":"x"}`, apierr.ReasonMalformedRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			restRefusal(t, env, c.method, c.path, c.body, http.StatusBadRequest, connect.CodeInvalidArgument, c.reason)
		})
	}

	// Routing refusals answer the same envelope: no route (404), a route
	// for other HTTP methods (405, with Allow), anywhere on the port.
	for _, c := range []struct {
		name, method, path string
		status             int
		code               connect.Code
		reason, allow      string
	}{
		{"an unknown REST path", http.MethodGet, "/api/v1/nope", http.StatusNotFound, connect.CodeNotFound, apierr.ReasonUnknownPath, ""},
		{"an unknown path outside REST", http.MethodGet, "/nope", http.StatusNotFound, connect.CodeNotFound, apierr.ReasonUnknownPath, ""},
		{"the root", http.MethodGet, "/", http.StatusNotFound, connect.CodeNotFound, apierr.ReasonUnknownPath, ""},
		{"a wrong method", http.MethodPut, "/api/v1/cloud/whoami", http.StatusMethodNotAllowed, connect.CodeUnimplemented, apierr.ReasonMethodNotAllowed, "GET"},
		{"a wrong method on a data route", http.MethodPut, notes, http.StatusMethodNotAllowed, connect.CodeUnimplemented, apierr.ReasonMethodNotAllowed, "GET,POST"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := restRefusal(t, env, c.method, c.path, "", c.status, c.code, c.reason)
			// In any order: vanguard lists them from a map.
			allow := strings.Split(resp.Header.Get("Allow"), ",")
			slices.Sort(allow)
			if c.allow != "" && strings.Join(allow, ",") != c.allow {
				t.Errorf("Allow: %q, want %q in any order", resp.Header.Get("Allow"), c.allow)
			}
		})
	}

	// Nothing was written.
	orgs, err := env.Client(apptest.ConnectProto).ListOrganizations(t.Context(), connect.NewRequest(&environmentv1.ListOrganizationsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(orgs.Msg.GetOrganizations()); n != 1 {
		t.Errorf("%d organizations, want 1", n)
	}
	page, err := data.ListRecords(t.Context(), connect.NewRequest(&datav1.ListRecordsRequest{EnvironmentId: envID, Object: "note"}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(page.Msg.GetRecords()); n != 1 {
		t.Errorf("%d notes, want 1", n)
	}
}

// restRefusal sends a REST request as the admin and checks that it is
// refused with status, code and reason in the JSON error envelope.
func restRefusal(t *testing.T, env *apptest.Env, method, path, body string, status int, code connect.Code, reason string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, env.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.AdminToken())
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var got struct {
		Code    int
		Message string
		Details []map[string]any
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%d %q: %v", resp.StatusCode, b, err)
	}
	if resp.StatusCode != status || got.Code != int(code) || got.Message == "" ||
		len(got.Details) != 1 || got.Details[0]["reason"] != reason {
		t.Errorf("%d %s, want %d, code %d and reason %s", resp.StatusCode, b, status, code, reason)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("labelled %q", ct)
	}
	return resp
}
