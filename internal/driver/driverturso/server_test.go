package driverturso

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests run against a real libSQL server: tursodb, the Turso database's
// CLI, serving Hrana over HTTP with --sync-server. npm installs it (make
// tools) into the module root's node_modules, from the package turso 0.6.0
// ships it in; a missing binary fails the tests, it never skips them.
const tursodbPackage = "@tursodatabase/cli-linux-x64-gnu"

// tursodb returns the path of the tursodb binary, failing t when it is not
// installed.
func tursodb(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("tursodb: %v", err)
	}
	bin := filepath.Join(root, "node_modules", filepath.FromSlash(tursodbPackage), "tursodb")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("tursodb is not installed at %s: run `make tools` (npm ci installs %s@0.6.0, the tursodb of turso 0.6.0)", bin, tursodbPackage)
	}
	return bin
}

// moduleRoot walks up from the working directory (the package's, under go
// test) to the directory holding go.work or package.json.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		for _, marker := range []string{"go.work", "package.json"} {
			if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no directory above the working directory holds go.work or package.json")
		}
		dir = parent
	}
}

// server is one tursodb process serving one database file.
type server struct {
	URL  string // http://127.0.0.1:port
	bin  string
	path string // the database file
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startServer starts tursodb on a new database file in t's temporary
// directory and stops it when t ends.
func startServer(t testing.TB) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{bin: tursodb(t), path: filepath.Join(dir, "db.sqlite"), log: filepath.Join(dir, "tursodb.log")}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

// start runs tursodb on a free loopback port and waits until it answers a
// query. A port taken between choosing and binding makes tursodb exit; it
// is then tried on another.
func (s *server) start(t testing.TB) {
	t.Helper()
	var lastErr error
	for range 5 {
		addr, err := freeAddr()
		if err != nil {
			t.Fatalf("tursodb: %v", err)
		}
		logFile, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatalf("tursodb: %v", err)
		}
		cmd := exec.Command(s.bin, "--sync-server", addr, s.path)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			t.Fatalf("tursodb: start: %v", err)
		}
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			_ = logFile.Close()
			close(done)
		}()
		s.URL, s.cmd, s.done = "http://"+addr, cmd, done
		if lastErr = s.waitReady(10 * time.Second); lastErr == nil {
			return
		}
		s.stop()
	}
	out, _ := os.ReadFile(s.log)
	t.Fatalf("tursodb did not start: %v\n%s", lastErr, out)
}

// stop kills the server, if it runs, and waits for it to exit.
func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// restart stops the server and starts another on the same file, on
// another port: whatever it serves then is what the file holds.
func (s *server) restart(t testing.TB) {
	t.Helper()
	s.stop()
	s.start(t)
}

// waitReady polls the server with SELECT 1 until it answers or exits.
func (s *server) waitReady(limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	body := `{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}`
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-s.done:
			return errors.New("tursodb exited")
		default:
		}
		resp, err := client.Post(s.URL+"/v2/pipeline", "application/json", strings.NewReader(body))
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			_ = resp.Body.Close()
			if ok {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer after %s: %w", limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// openServer opens a driver on s, closed when t ends.
func openServer(t *testing.T, s *server, opts ...Option) *Driver {
	t.Helper()
	d, err := Open(t.Context(), s.URL, "", opts...)
	if err != nil {
		out, _ := os.ReadFile(s.log)
		t.Fatalf("Open: %v\n%s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}
