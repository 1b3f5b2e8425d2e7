package app_test

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/envplane/envplane/app/apptest"
)

// TestCompression: a page of records is gzipped once for a client that
// accepts it, over REST (by the server, since vanguard only mirrors what the
// handler did and the handler answers vanguard uncompressed) and over
// Connect; a single record, under the threshold, is not; a client that does
// not accept gzip never gets it.
func TestCompression(t *testing.T) {
	env := apptest.Start(t)
	envID, data := notesEnv(t, env, "squeeze")
	var first string
	for i := range 40 {
		r := dataCreate(t, data, envID, "note", map[string]any{"text": fmt.Sprintf("note number %d, long enough to make a page worth compressing", i)})
		if i == 0 {
			first = dataID(r)
		}
	}

	// DisableCompression: the transport neither asks for gzip nor unzips,
	// so the test sees the answer as it was sent.
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	call := func(t *testing.T, method, path, body, contentType, acceptEncoding string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, env.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+env.AdminToken())
		req.Header.Set("X-Environment-Id", envID)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if acceptEncoding != "" {
			req.Header.Set("Accept-Encoding", acceptEncoding)
		}
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
		}
		return resp, b
	}
	// records decodes a list answer, unzipping it when it says it is gzipped.
	records := func(t *testing.T, resp *http.Response, b []byte) int {
		t.Helper()
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(strings.NewReader(string(b)))
			if err != nil {
				t.Fatalf("gzip: %v", err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatalf("gzip: %v", err)
			}
		}
		var page struct{ Records []map[string]any }
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		return len(page.Records)
	}

	listREST := "/api/v1/data/note?pageSize=40"
	listConnect := "/envplane.data.v1.DataService/ListRecords"
	listBody := `{"object":"note","pageSize":40}`
	for _, tc := range []struct {
		name, method, path, body, contentType, acceptEncoding, wantEncoding string
		wantRecords                                                         int
	}{
		{"REST page, gzip accepted", http.MethodGet, listREST, "", "", "gzip", "gzip", 40},
		{"REST page, gzip not accepted", http.MethodGet, listREST, "", "", "", "", 40},
		{"REST record, under the threshold", http.MethodGet, "/api/v1/data/note/" + first, "", "", "gzip", "", -1},
		{"Connect page, gzip accepted", http.MethodPost, listConnect, listBody, "application/json", "gzip", "gzip", 40},
		{"Connect page, gzip not accepted", http.MethodPost, listConnect, listBody, "application/json", "", "", 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := call(t, tc.method, tc.path, tc.body, tc.contentType, tc.acceptEncoding)
			if got := resp.Header.Get("Content-Encoding"); got != tc.wantEncoding {
				t.Errorf("Content-Encoding = %q, want %q", got, tc.wantEncoding)
			}
			// REST answers go out whole, with their length (vanguard's
			// flush used to make a gzipped one a chunked body).
			if strings.HasPrefix(tc.path, "/api/") && (resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) > 0) {
				t.Errorf("Content-Length %d, Transfer-Encoding %v for %d bytes", resp.ContentLength, resp.TransferEncoding, len(b))
			}
			if tc.wantRecords >= 0 {
				if n := records(t, resp, b); n != tc.wantRecords {
					t.Errorf("%d records, want %d", n, tc.wantRecords)
				}
			} else if !json.Valid(b) {
				t.Errorf("answer is not plain JSON: %q", b)
			}
		})
	}
}
