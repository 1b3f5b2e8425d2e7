package clients_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNode runs clients/node/flow.test.ts, the TypeScript client's flow over
// Connect JSON and gRPC-Web, with node:test against a real server. The bundle
// stays inside the repository so that Node resolves @envplane/client and
// connect-es from its node_modules.
func TestNode(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH (%v): install Node.js 20, which make tools needs too", err)
	}
	requireFile(t, filepath.Join(root, "gen", "ts", "dist", "envplane", "data", "v1", "data_pb.js"), "make clients")
	out := filepath.Join(root, "clients", "node", "dist", "flow.test.mjs")
	bundle(t, filepath.Join(root, "clients", "node", "flow.test.ts"), out, "node")

	env := startServer(t)
	output := run(t, command(t, root, []string{"ENVPLANE_URL=" + env.URL, "ENVPLANE_TOKEN=" + env.Token},
		node, "--test", "--test-reporter=spec", out))
	t.Log(summary(output))
}

// summary keeps the totals node --test prints last ("ℹ tests 16", …).
func summary(output string) string {
	var lines []string
	for line := range strings.Lines(output) {
		if strings.HasPrefix(line, "ℹ ") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return strings.Join(lines, "; ")
}
