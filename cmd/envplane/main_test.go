package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/envplane/envplane/internal/config"
)

func TestServeProfiler(t *testing.T) {
	addr, stop, err := serveProfiler("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/debug/pprof/cmdline: %s", resp.Status)
	}
	stop()
	if _, err := http.Get("http://" + addr + "/debug/pprof/cmdline"); err == nil {
		t.Error("the profiler still answers after stop")
	}
}

// TestNewLogger: --log-format picks text or JSON lines, --log-level drops
// what is below it.
func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		format, want string
	}{
		{"text", `level=WARN msg=careful n=1` + "\n"},
		{"json", `"level":"WARN","msg":"careful","n":1}` + "\n"},
	} {
		var buf bytes.Buffer
		log := newLogger(config.Config{LogFormat: tc.format, LogLevel: slog.LevelWarn}, &buf)
		log.Info("dropped", "n", 0)
		log.Warn("careful", "n", 1)
		if got := buf.String(); !strings.HasSuffix(got, tc.want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%s: logged %q, want one line ending %q", tc.format, got, tc.want)
		}
	}
}
