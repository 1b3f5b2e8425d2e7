package apptest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/auth"
)

// processStartTimeout bounds how long StartProcess waits for /healthz.
const processStartTimeout = 30 * time.Second

// Process is envplane serve running as a real OS process, as replicas run in
// production: its own address space, its own caches, reaching the others
// through the control plane only. The embedded Env gives it every client of
// an in-process server (Client, DataClient, MetadataClient…); Env.Logs holds
// what the process wrote to stderr (JSON lines at debug level unless the
// flags say otherwise).
type Process struct {
	*Env
	// Cmd is the running command.
	Cmd *exec.Cmd

	exited  chan struct{} // closed when Wait returned
	waitErr error         // Wait's error, once exited is closed
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// raceEnabled reports whether the test binary was built with -race, read
// from its build settings, so the server binary is built the same way and
// reuses the build cache of the test build.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// Binary builds cmd/envplane once per test binary run (with -race when the
// tests run with it, so the build reuses the test build's cache) and returns
// its path: a file under the system temporary directory named after the
// tested package's directory and the race setting, replaced atomically by
// every run, so runs leave one binary behind rather than one each.
func Binary(tb testing.TB) string {
	tb.Helper()
	binaryOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			binaryErr = err
			return
		}
		sum := sha256.Sum256([]byte(wd))
		name := "envplane-" + hex.EncodeToString(sum[:6])
		args := []string{"build"}
		if raceEnabled() {
			args = append(args, "-race")
			name += "-race"
		}
		dir := filepath.Join(os.TempDir(), "envplane-apptest-bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			binaryErr = err
			return
		}
		tmp, err := os.CreateTemp(dir, name+".*.tmp")
		if err != nil {
			binaryErr = err
			return
		}
		_ = tmp.Close()
		defer os.Remove(tmp.Name()) // gone after the rename unless the build failed
		args = append(args, "-o", tmp.Name(), "github.com/envplane/envplane/cmd/envplane")
		cmd := exec.Command("go", args...) // the working directory is the tested package's, inside the module
		if b, err := cmd.CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
			return
		}
		out := filepath.Join(dir, name)
		if err := os.Rename(tmp.Name(), out); err != nil {
			binaryErr = err
			return
		}
		binaryPath = out
	})
	if binaryErr != nil {
		tb.Fatalf("build envplane: %v", binaryErr)
	}
	return binaryPath
}

// StartProcess runs `envplane serve` as a child process on a free loopback
// port with a fresh data directory and extra serve flags (which come last
// and so win; --log-format=json --log-level=debug come first), waits until
// /healthz answers, and stops it with SIGTERM when the test ends, failing
// the test unless it exits 0 within 10 s (a graceful shutdown). ENVPLANE_*
// variables of the test's environment are not passed on.
func StartProcess(tb testing.TB, extra ...string) *Process {
	tb.Helper()
	return StartProcessDir(tb, tb.TempDir(), extra...)
}

// StartProcessDir is StartProcess on a data directory of the caller's.
func StartProcessDir(tb testing.TB, dataDir string, extra ...string) *Process {
	tb.Helper()
	bin := Binary(tb)
	var lastLogs string
	for attempt := 1; attempt <= 3; attempt++ {
		p, err := startProcess(tb, bin, dataDir, extra)
		if err == nil {
			return p
		}
		lastLogs = p.Logs.String()
		// Another process may have taken the port between FreePort and the
		// listen: try another; anything else is fatal at once.
		if !strings.Contains(lastLogs, "address already in use") {
			tb.Fatalf("start envplane: %v\nstderr:\n%s", err, lastLogs)
		}
	}
	tb.Fatalf("start envplane: no free port after 3 attempts\nstderr:\n%s", lastLogs)
	return nil
}

func startProcess(tb testing.TB, bin, dataDir string, extra []string) (*Process, error) {
	tb.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(FreePort(tb))
	flags := append([]string{"--log-format=json", "--log-level=debug"}, extra...)
	flags = append(flags, "--listen="+addr, "--data-dir="+dataDir)
	cfg := Config(tb, dataDir, flags...)

	logs := new(Logs)
	cmd := exec.Command(bin, append([]string{"serve"}, flags...)...)
	cmd.Stderr = logs
	cmd.Stdout = logs
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ENVPLANE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	p := &Process{
		Env: &Env{
			Addr:    addr,
			URL:     "http://" + addr,
			DataDir: dataDir,
			Config:  cfg,
			Logs:    logs,
			HTTP1:   &http.Client{Transport: &http.Transport{Protocols: h1, MaxIdleConnsPerHost: 32}},
			H2C:     &http.Client{Transport: &http.Transport{Protocols: h2}},
		},
		Cmd:    cmd,
		exited: make(chan struct{}),
	}
	if err := cmd.Start(); err != nil {
		return p, err
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	p.stop = sync.OnceValue(p.terminate)

	probe := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(processStartTimeout)
	for {
		select {
		case <-p.exited:
			return p, fmt.Errorf("envplane exited before answering /healthz: %v", p.waitErr)
		default:
		}
		resp, err := probe.Get(p.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return p, fmt.Errorf("/healthz did not answer within %v", processStartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Cleanup(func() {
		if err := p.stop(); err != nil {
			tb.Errorf("stop envplane at %s: %v\nstderr:\n%s", p.Addr, err, p.Logs)
		}
	})
	if b, err := os.ReadFile(filepath.Join(dataDir, auth.AdminTokenFile)); err == nil {
		p.Token = strings.TrimSpace(string(b))
	}
	return p, nil
}

// terminate sends SIGTERM and waits for a clean exit (status 0) within
// stopTimeout, killing the process if it does not come.
func (p *Process) terminate() error {
	p.HTTP1.CloseIdleConnections()
	p.H2C.CloseIdleConnections()
	select {
	case <-p.exited:
		return fmt.Errorf("envplane had already exited: %v", p.waitErr)
	default:
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("no exit within %v of SIGTERM; killed", stopTimeout)
	}
	if p.waitErr != nil {
		return fmt.Errorf("exit after SIGTERM: %w", p.waitErr)
	}
	return nil
}

// Kill ends the process at once with SIGKILL, as a crash would, and waits
// for it; the cleanup then has nothing left to stop.
func (p *Process) Kill(tb testing.TB) {
	tb.Helper()
	p.stop = sync.OnceValue(func() error { return nil })
	_ = p.Cmd.Process.Kill()
	<-p.exited
}

// Exited reports whether the process has ended, with Wait's error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.exited:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Ready asks GET /readyz and returns its status code (0 when the request
// itself failed).
func (p *Process) Ready(ctx context.Context) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/readyz", nil)
	if err != nil {
		return 0
	}
	resp, err := p.HTTP1.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Cluster is a throwaway PostgreSQL cluster like StartPasswordCluster's
// (password authentication, a free loopback port) that a test can stop and
// start again on the same port and data, to take a control plane away for a
// moment.
type Cluster struct {
	// AdminURL is the URL of its superuser postgres, with the password.
	AdminURL string

	run     func(name string, args ...string) error
	dataDir string
	opts    string
	logFile string
	mu      sync.Mutex
	running bool
}

// StartCluster initializes and starts a Cluster, stopped and removed when
// the test ends. As root it runs as the postgres user, like
// StartPasswordCluster.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	bin := PostgresBinDir(tb)
	asRoot := os.Geteuid() == 0
	parent := ""
	if asRoot {
		parent = "/tmp"
	}
	base, err := os.MkdirTemp(parent, "envplane-pgcluster-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(base) })
	c := &Cluster{dataDir: filepath.Join(base, "data")}
	sockDir := filepath.Join(base, "sock")
	pwFile := filepath.Join(base, "pwfile")
	logFile := filepath.Join(base, "server.log")
	c.logFile = logFile
	password := RandomName("pw-")
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	var uid, gid int
	if asRoot {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root, initdb must run as the postgres user: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		for _, p := range []string{base, sockDir, pwFile} {
			if err := os.Chown(p, uid, gid); err != nil {
				tb.Fatal(err)
			}
		}
	}
	c.run = func(name string, args ...string) error {
		prog := filepath.Join(bin, name)
		var cmd *exec.Cmd
		if asRoot {
			cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
		} else {
			cmd = exec.Command(prog, args...)
		}
		cmd.Dir = base
		cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
		out, err := cmd.CombinedOutput()
		if err != nil {
			logText, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s %s: %w\n%s\nserver log:\n%s", name, strings.Join(args, " "), err, out, logText)
		}
		return nil
	}
	if err := c.run("initdb", "-D", c.dataDir, "--auth=scram-sha-256", "--username=postgres", "--pwfile="+pwFile,
		"--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"); err != nil {
		tb.Fatal(err)
	}
	var port int
	for attempt := 1; ; attempt++ {
		port = FreePort(tb)
		c.opts = fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60", port, sockDir)
		err := c.run("pg_ctl", "-D", c.dataDir, "-o", c.opts, "-l", logFile, "-w", "-t", "60", "start")
		if err == nil {
			break
		}
		if attempt == 3 {
			tb.Fatal(err)
		}
	}
	c.running = true
	tb.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.running {
			return
		}
		if err := c.run("pg_ctl", "-D", c.dataDir, "-m", "immediate", "-w", "stop"); err != nil {
			tb.Errorf("stop the cluster: %v", err)
		}
	})
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}
	c.AdminURL = u.String()
	return c
}

// Stop stops the cluster (pg_ctl stop -m fast: sessions are ended, the
// port closes) until Start.
func (c *Cluster) Stop(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.run("pg_ctl", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		tb.Fatal(err)
	}
	c.running = false
}

// Start starts a stopped cluster again on the same port.
func (c *Cluster) Start(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.run("pg_ctl", "-D", c.dataDir, "-o", c.opts, "-l", c.logFile, "-w", "-t", "60", "start"); err != nil {
		tb.Fatal(err)
	}
	c.running = true
}
