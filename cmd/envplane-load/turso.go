package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// tursodbPackage is the npm package `make tools` installs tursodb from, into
// the module root's node_modules (as app/apptest does).
const tursodbPackage = "@tursodatabase/cli-linux-x64-gnu"

// maxTursoEnvironments bounds --environments with --driver turso: each
// environment is a tursodb process of its own.
const maxTursoEnvironments = 50

// tursoSecret is the database_secret brought with each environment: tursodb
// checks no token.
const tursoSecret = "local"

// tursodbFleet is the local tursodb processes serving the environments'
// databases, one per environment, in a temporary directory of their own.
type tursodbFleet struct {
	dir  string
	urls []string // http://127.0.0.1:<port>, one per environment
	stop []func()
}

// close kills every tursodb and removes their files.
func (f *tursodbFleet) close() {
	var wg sync.WaitGroup
	for _, stop := range f.stop {
		if stop != nil {
			wg.Go(stop)
		}
	}
	wg.Wait()
	_ = os.RemoveAll(f.dir)
}

// findTursodb returns bin when set, else the tursodb of the module root's
// node_modules, the module root being the first directory above the working
// directory holding go.work.
func findTursodb(bin string) (string, error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("--tursodb: %w", err)
		}
		return bin, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("--driver turso: no directory above the working directory holds go.work; pass --tursodb")
		}
		dir = parent
	}
	bin = filepath.Join(dir, "node_modules", filepath.FromSlash(tursodbPackage), "tursodb")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("--driver turso: tursodb is not installed at %s: run `make tools` (npm ci installs %s) or pass --tursodb", bin, tursodbPackage)
	}
	return bin, nil
}

// startTursodbFleet starts n tursodb --sync-server processes on free
// loopback ports, a few at a time, each serving a new database file. On
// error the ones started are stopped.
func startTursodbFleet(ctx context.Context, bin string, n int) (*tursodbFleet, error) {
	dir, err := os.MkdirTemp("", "envplane-load-turso-")
	if err != nil {
		return nil, err
	}
	f := &tursodbFleet{dir: dir, urls: make([]string, n), stop: make([]func(), n)}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for k := range n {
		g.Go(func() error {
			addr, stop, err := startTursodb(gctx, bin, filepath.Join(dir, fmt.Sprintf("db-%02d", k)))
			if err != nil {
				return fmt.Errorf("tursodb %d: %w", k, err)
			}
			f.urls[k], f.stop[k] = "http://"+addr, stop // each k its own element
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		f.close()
		return nil, err
	}
	fmt.Printf("turso: %d local tursodb started in %s (%s)\n", n, time.Since(start).Round(time.Millisecond), bin)
	return f, nil
}

// startTursodb serves dir/db.sqlite with tursodb on a free loopback port and
// returns once it answers SELECT 1.
func startTursodb(ctx context.Context, bin, dir string) (addr string, stop func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	logPath := filepath.Join(dir, "tursodb.log")
	var lastErr error
	for range 5 { // a port taken between the probe and tursodb's bind: try another
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		addr := l.Addr().String()
		_ = l.Close()
		logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return "", nil, err
		}
		cmd := exec.Command(bin, "--sync-server", addr, filepath.Join(dir, "db.sqlite"))
		cmd.Stdout, cmd.Stderr = logFile, logFile
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			return "", nil, err
		}
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			_ = logFile.Close()
			close(done)
		}()
		stop := sync.OnceFunc(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		if lastErr = tursodbReady(ctx, "http://"+addr, done, 10*time.Second); lastErr == nil {
			return addr, stop, nil
		}
		stop()
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
	}
	out, _ := os.ReadFile(logPath)
	return "", nil, fmt.Errorf("tursodb did not start: %w\n%s", lastErr, out)
}

// dieWithParent asks the kernel, where it can (Linux's Pdeathsig), to kill
// tursodb when this process dies without running its cleanups.
func dieWithParent(cmd *exec.Cmd) {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL).Convert(f.Type()))
		cmd.SysProcAttr = attr
	}
}

// tursodbReady polls the server with SELECT 1 until it answers or exits.
func tursodbReady(ctx context.Context, base string, done <-chan struct{}, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	body := `{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}`
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-done:
			return errors.New("tursodb exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/pipeline", strings.NewReader(body))
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
