//go:build !linux

package provision

import "os/exec"

// tursodbDieWithParent does nothing where the kernel offers no
// parent-death signal (and npm ships no tursodb either).
func tursodbDieWithParent(*exec.Cmd) {}
