// Package clients_test proves every way a user calls envplane from outside Go:
// the TypeScript client over Connect JSON and gRPC-Web (node_test.go), the
// Python client over gRPC (python_test.go), the browser console in headless
// Chromium (browser_test.go), and the README's Go example, grpcurl and buf curl
// commands (readme_test.go). Each test starts a real server in-process on a
// real socket and runs the other language's program against it. The tools
// come from `make tools` (npm and Debian packages) and `make clients` (the
// built TypeScript client); a missing one fails the test with that hint.
package clients_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/app/apptest"
)

// startServer starts envplane in-process on a loopback port (apptest.Start
// with extra serve flags) and, when the test fails, logs the end of what the
// server logged.
func startServer(tb testing.TB, extra ...string) *apptest.Env {
	tb.Helper()
	env := apptest.Start(tb, extra...)
	if env.Token == "" {
		tb.Fatal("the server minted no admin token")
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			lines := strings.Split(strings.TrimRight(env.Logs.String(), "\n"), "\n")
			tb.Logf("server log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return env
}

// commandTimeout bounds one external program of a test.
const commandTimeout = 3 * time.Minute

// repoRoot is the repository's root: the parent of this package's folder,
// where go test runs the tests.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	return filepath.Dir(wd)
}

// requireFile fails the test when path is missing, naming what makes it.
func requireFile(tb testing.TB, path, makeHint string) string {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("%s is missing (%v): run %s", path, err, makeHint)
	}
	return path
}

// npmBin is node_modules/.bin/name, installed by make tools.
func npmBin(tb testing.TB, name string) string {
	tb.Helper()
	return requireFile(tb, filepath.Join(repoRoot(tb), "node_modules", ".bin", name), "make tools")
}

// command prepares name with args in dir, bounded by commandTimeout and the
// test's context; env entries are added to the test process's environment.
func command(tb testing.TB, dir string, env []string, name string, args ...string) *exec.Cmd {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), commandTimeout)
	tb.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs cmd and returns its combined output, failing the test with that
// output when it does not exit 0.
func run(tb testing.TB, cmd *exec.Cmd) string {
	tb.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

// bundle compiles a TypeScript entry point with esbuild into out (one ES
// module), leaving npm packages external for Node (platform "node") or
// bundling everything for the browser (platform "browser").
func bundle(tb testing.TB, entry, out, platform string) {
	tb.Helper()
	args := []string{entry, "--bundle", "--format=esm", "--platform=" + platform, "--outfile=" + out, "--log-level=warning"}
	if platform == "node" {
		args = append(args, "--packages=external")
	}
	run(tb, command(tb, repoRoot(tb), nil, npmBin(tb, "esbuild"), args...))
}
