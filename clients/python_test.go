package clients_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// python is Debian's interpreter, the one python3-grpcio and python3-protobuf
// are installed for (make tools); a python3 earlier on PATH may not see them.
const python = "/usr/bin/python3"

// unittestRan matches the count line of a unittest run ("Ran 6 tests in 0.2s").
var unittestRan = regexp.MustCompile(`(?m)^Ran ([0-9]+) tests? in `)

// TestPython runs clients/python/flow_test.py, the generated Python stubs'
// flow over gRPC, with unittest against a real server. gen/python goes on
// PYTHONPATH beside Debian's packages: google is a namespace package, so
// google.rpc from gen/python and google.protobuf from Debian both import.
func TestPython(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireFile(t, python, "make tools")
	genPython := filepath.Join(root, "gen", "python")
	requireFile(t, filepath.Join(genPython, "envplane", "data", "v1", "data_pb2_grpc.py"), "make generate")
	requireFile(t, filepath.Join(genPython, "google", "rpc", "error_details_pb2.py"), "make generate")
	// Bytecode would land in gen/python and clients/python, inside the repository.
	pythonEnv := []string{"PYTHONPATH=" + genPython, "PYTHONDONTWRITEBYTECODE=1"}
	if out, err := command(t, root, pythonEnv, python, "-c", "import grpc, google.protobuf, google.rpc.status_pb2").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import grpc and protobuf (%v): run make tools\n%s", python, err, out)
	}

	env := startServer(t)
	output := run(t, command(t, filepath.Join(root, "clients", "python"),
		append(pythonEnv, "ENVPLANE_ADDR="+env.Addr, "ENVPLANE_TOKEN="+env.Token),
		python, "-m", "unittest", "-v", "flow_test"))
	// unittest exits 0 having run nothing (before Python 3.12), and reports
	// skips with "OK (skipped=…)": only tests that ran and passed count.
	m := unittestRan.FindStringSubmatch(output)
	if m == nil || m[1] == "0" || !strings.HasSuffix(strings.TrimSpace(output), "\nOK") {
		t.Fatalf("unittest did not run and pass every test:\n%s", output)
	}
	t.Logf("%s Python tests passed", m[1])
}
