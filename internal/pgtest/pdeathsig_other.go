//go:build !linux

package pgtest

import "os/exec"

// killWithParent does nothing outside Linux: Stop (from t.Cleanup) ends
// the process.
func killWithParent(*exec.Cmd) {}
