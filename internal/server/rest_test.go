package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRESTBodies(t *testing.T) {
	t.Parallel()
	var got string
	var ct string
	h := restBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, ct = string(b), r.Header.Get("Content-Type")
	}))
	for _, c := range []struct {
		body, contentType string
		status            int
	}{
		{`{"slug":"acme"}`, "", http.StatusOK},
		{`{"slug":"acme"}`, "application/x-www-form-urlencoded", http.StatusOK},
		{`{`, "application/json", http.StatusBadRequest},
		{`null`, "application/json", http.StatusBadRequest},
		{`[]`, "", http.StatusBadRequest},
		{`slug=acme`, "application/x-www-form-urlencoded", http.StatusBadRequest},
		{`{"slug":"acme"}`, "text/html", http.StatusUnsupportedMediaType},
		{`slug: acme`, "application/yaml", http.StatusUnsupportedMediaType},
	} {
		got, ct = "", ""
		req := httptest.NewRequest(http.MethodPost, "/api/v1/cloud/organizations", strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer x")
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.status {
			t.Errorf("%q (%s): status %d, want %d", c.body, c.contentType, rec.Code, c.status)
			continue
		}
		if c.status == http.StatusOK {
			if got != c.body || ct != "application/json" {
				t.Errorf("%q: handler saw %q as %q", c.body, got, ct)
			}
			continue
		}
		var status struct {
			Code    int
			Details []map[string]any
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &status); err != nil || status.Code != 3 || len(status.Details) != 1 || status.Details[0]["reason"] != "MALFORMED_BODY" {
			t.Errorf("%q: error body %s", c.body, rec.Body.String())
		}
	}
}

func TestRESTBodiesLeaveAnonymousCallsToAuthentication(t *testing.T) {
	t.Parallel()
	called := false
	h := restBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true }))
	req := httptest.NewRequest(http.MethodPost, "/api/v1/cloud/organizations", strings.NewReader(`{`))
	h.ServeHTTP(httptest.NewRecorder(), req)
	if !called {
		t.Error("a call without credentials was answered before authentication")
	}
}

// A call without a body loses its Content-Type (hey labels every GET
// text/html), which the transcoder would refuse with 415.
func TestRESTBodiesDropTheContentTypeOfNoBody(t *testing.T) {
	t.Parallel()
	for _, method := range []string{http.MethodGet, http.MethodDelete, http.MethodPost} {
		ct := "unset"
		h := restBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ct = r.Header.Get("Content-Type") }))
		req := httptest.NewRequest(method, "/api/v1/cloud/organizations", http.NoBody)
		req.Header.Set("Authorization", "Bearer x")
		req.Header.Set("Content-Type", "text/html")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || ct != "" {
			t.Errorf("%s without a body: status %d, the transcoder saw Content-Type %q", method, rec.Code, ct)
		}
	}
}
