package tursotest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill tursodb if the process that started it
// dies without stopping it (a test's panic or -timeout, a killed load run),
// so no tursodb is left behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
