package provision

import (
	"os/exec"
	"syscall"
)

// tursodbDieWithParent has the kernel kill tursodb if the test binary dies
// without running its cleanups (a panic, a -timeout).
func tursodbDieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
