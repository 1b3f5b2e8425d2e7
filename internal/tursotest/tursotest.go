// Package tursotest runs the libSQL servers that Turso code is tested and
// measured against: tursodb, the Turso database's CLI, serving Hrana over
// HTTP with --sync-server, and a fake Turso Platform API whose databases
// such servers can hold. npm installs tursodb (make tools) into the module
// root's node_modules, from the package turso 0.6.0 ships it in; a missing
// binary is an error, never a reason to skip.
//
// Binary, Start and Server report errors, for the load tool; NewServer,
// Query and NewFake fail the test that calls them instead.
package tursotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Package is the npm package `make tools` installs tursodb from.
const Package = "@tursodatabase/cli-linux-x64-gnu"

// Binary returns the path of the tursodb in the module root's node_modules,
// the module root being the first directory above the working directory
// holding go.work.
func Binary() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("tursodb: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("tursodb: no directory above the working directory holds go.work")
		}
		dir = parent
	}
	bin := filepath.Join(dir, "node_modules", filepath.FromSlash(Package), "tursodb")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("tursodb is not installed at %s: run `make tools` (npm ci installs %s)", bin, Package)
	}
	return bin, nil
}

// Server is one tursodb process serving the database file db.sqlite of its
// directory, logging to tursodb.log beside it. It checks no token.
type Server struct {
	// URL is where it answers Hrana over HTTP: http://127.0.0.1:<port>.
	URL string

	bin, dir string
	cmd      *exec.Cmd // nil once closed
	done     chan struct{}
}

// Start runs bin on dir/db.sqlite, creating dir if need be, on a free
// loopback port and returns once it answers SELECT 1. The process outlives
// ctx, which bounds only the start; Close stops it.
func Start(ctx context.Context, bin, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close kills the server, if it runs, and waits for it to exit. The
// database file stays.
func (s *Server) Close() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart stops the server and starts another on the same file, on another
// port: whatever it serves then is what the file holds.
func (s *Server) Restart(ctx context.Context) error {
	s.Close()
	return s.start(ctx)
}

// Log returns what tursodb wrote to its log, for a failure's message.
func (s *Server) Log() string {
	out, _ := os.ReadFile(s.logPath())
	return string(bytes.TrimSpace(out))
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "tursodb.log") }

// start runs tursodb on a free loopback port and waits until it answers a
// query. A port taken between choosing and binding makes tursodb exit; it
// is then tried on another.
func (s *Server) start(ctx context.Context) error {
	var lastErr error
	for range 5 {
		addr, err := freeAddr()
		if err != nil {
			return fmt.Errorf("tursodb: %w", err)
		}
		logFile, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("tursodb: %w", err)
		}
		cmd := exec.Command(s.bin, "--sync-server", addr, filepath.Join(s.dir, "db.sqlite"))
		cmd.Stdout, cmd.Stderr = logFile, logFile
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			return fmt.Errorf("tursodb: start: %w", err)
		}
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			_ = logFile.Close()
			close(done)
		}()
		s.URL, s.cmd, s.done = "http://"+addr, cmd, done
		if lastErr = s.waitReady(ctx, 10*time.Second); lastErr == nil {
			return nil
		}
		s.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("tursodb did not start: %w\n%s", lastErr, s.Log())
}

// waitReady polls the server with SELECT 1 until it answers or exits.
func (s *Server) waitReady(ctx context.Context, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	body := `{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}`
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-s.done:
			return errors.New("tursodb exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v2/pipeline", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
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
