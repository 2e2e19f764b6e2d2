// Package harness holds what facteur's long end-to-end suites share (issue
// 5): the gate for long tests, the facteur binary built once per test
// process and run as a subprocess that can be SIGKILLed, an in-process
// receive stack (smtpd, cleanup, a spool with fault hooks) for the fast
// tests, a counting SMTP sink, a raw SMTP client, Maildir scanning and a
// PostgreSQL cluster of a test's own.
//
// Every process, listener and goroutine it starts is stopped at the test's
// cleanup; everything listens on loopback only.
package harness

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// LongEnv is the environment variable that turns the long suites on.
const LongEnv = "FACTEUR_LONG"

// Long skips t unless FACTEUR_LONG=1 (TESTING.md: long suites run on
// request and in .ci/run, never in the default run).
func Long(t testing.TB) {
	t.Helper()
	if os.Getenv(LongEnv) != "1" {
		t.Skipf("long suite: set %s=1 to run it (.ci/run does)", LongEnv)
	}
}

// IntEnv returns the integer value of the environment variable name, or def
// when it is unset or not a positive integer.
func IntEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Main runs the tests of a package that uses the harness and then removes
// what the harness made for the whole process (the facteur binary). Call it
// from TestMain: os.Exit(harness.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	cleanupBinary()
	return code
}

// WaitFor polls cond every 50 ms until it is true or within has passed, and
// then fails t with what it was waiting for.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Figures collects the numbers a suite prints at its end ("cycles
// survived", "messages lost") in the order they were set.
type Figures struct {
	names []string
	vals  map[string]string
}

// Set records a figure.
func (f *Figures) Set(name string, v any) {
	if f.vals == nil {
		f.vals = map[string]string{}
	}
	if _, ok := f.vals[name]; !ok {
		f.names = append(f.names, name)
	}
	f.vals[name] = fmt.Sprint(v)
}

// Log prints the figures on one line, prefixed with "FIGURES <suite>:", so
// that CI logs can be grepped for them.
func (f *Figures) Log(t testing.TB, suite string) {
	t.Helper()
	s := "FIGURES " + suite + ":"
	for _, n := range f.names {
		s += " " + n + "=" + f.vals[n] + ";"
	}
	t.Log(s)
}
