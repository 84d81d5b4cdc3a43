package pgtest

import (
	"os/exec"
	"syscall"
)

// killWithParent has the kernel kill cmd's process when the test binary
// exits, even when it is killed itself (a PgBouncer once outlived one).
func killWithParent(cmd *exec.Cmd) { cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL }
