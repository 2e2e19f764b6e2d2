package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
	binLog  []byte
)

// ModuleRoot returns the root of the facteur module (the directory of
// go.mod), from this file's location.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("harness: cannot locate the module root")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("harness: no go.mod in %s: %v", root, err)
	}
	return root
}

// Binary returns the path of the facteur binary, built once per test
// process from this checkout into a temporary directory that Main removes.
func Binary(t testing.TB) string {
	t.Helper()
	root := ModuleRoot(t)
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "facteur-bin-")
		if binErr != nil {
			return
		}
		// The directory must be reachable by the users facteur's children
		// run as (pipe commands as nobody).
		if binErr = os.Chmod(binDir, 0o755); binErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		start := time.Now()
		p := filepath.Join(binDir, "facteur")
		cmd := exec.Command(goTool, "build", "-o", p, "./cmd/facteur")
		cmd.Dir = root
		binLog, binErr = cmd.CombinedOutput()
		if binErr == nil {
			binPath = p
			binLog = append(binLog, []byte("built in "+time.Since(start).Round(time.Millisecond).String())...)
		}
	})
	if binErr != nil {
		t.Fatalf("harness: build facteur: %v\n%s", binErr, binLog)
	}
	return binPath
}

func cleanupBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
