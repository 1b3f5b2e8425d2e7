//go:build !linux

package tursotest

import "os/exec"

// dieWithParent does nothing where the kernel offers no parent-death
// signal (and npm ships no tursodb either).
func dieWithParent(*exec.Cmd) {}
