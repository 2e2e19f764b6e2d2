package harness

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// watchdog starts a detached shell that runs onDeath once this test process
// is gone (killed by go test's timeout, say, when no cleanup runs), so that
// no facteur or PostgreSQL started by a test outlives it. stop ends the
// watchdog without running onDeath.
func watchdog(onDeath string) (stop func()) {
	script := fmt.Sprintf("while kill -0 %d 2>/dev/null; do sleep 1; done; %s", os.Getpid(), onDeath)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() //nolint:errcheck // reaped here
	return func() {
		_ = cmd.Process.Kill()
		<-done
	}
}
