package pipe

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
)

func TestCommandRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "in")
	c := Command{
		Argv:   []string{"/bin/sh", "-c", "cat > " + out + "; echo to-stdout; echo to-stderr >&2"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Header: "X-Test: 1\n",
		Body:   strings.NewReader("a\r\nb\r\n"),
	}
	var stdout bytes.Buffer
	c.Stdout = &stdout
	o := c.Run(context.Background())
	if !o.OK() {
		t.Fatalf("outcome %+v", o)
	}
	if b, _ := os.ReadFile(out); string(b) != "X-Test: 1\na\nb\n" {
		t.Errorf("standard input: %q", b)
	}
	if stdout.String() != "to-stdout\n" || o.Output != "to-stderr" {
		t.Errorf("stdout %q, output %q", stdout.String(), o.Output)
	}
	if r := o.Result("sh", "local"); r.Status != deliver.Delivered || r.Relay != "local" {
		t.Errorf("result %+v", r)
	}
}

func TestCommandOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		argv    []string
		timeout time.Duration
		status  deliver.Status
		es      string
	}{
		{"EX_NOUSER", []string{"/bin/sh", "-c", "exit 67"}, 0, deliver.Bounced, "5.1.1"},
		{"EX_TEMPFAIL", []string{"/bin/sh", "-c", "exit 75"}, 0, deliver.Deferred, "4.3.0"},
		{"unknown status", []string{"/bin/sh", "-c", "exit 3"}, 0, deliver.Bounced, "5.3.0"},
		{"signal", []string{"/bin/sh", "-c", "kill -KILL $$"}, 0, deliver.Deferred, "4.3.0"},
		{"not found", []string{"/nonexistent/cmd"}, 0, deliver.Deferred, "4.3.0"},
		{"relative", []string{"sh"}, 0, deliver.Deferred, "4.3.0"},
		// A grandchild keeps the output open: the whole group is killed.
		{"time limit", []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}, 300 * time.Millisecond, deliver.Deferred, "4.3.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Command{Argv: tc.argv, Timeout: tc.timeout, Body: strings.NewReader("x\n")}
			start := time.Now()
			o := c.Run(context.Background())
			r := o.Result("cmd", Relay)
			if r.Status != tc.status || r.Reply.Enhanced.String() != tc.es {
				t.Errorf("%+v → %s %s, want %s %s", o, r.Status, r.Reply.String(), tc.status, tc.es)
			}
			if tc.timeout > 0 && (!o.TimedOut || time.Since(start) > 10*time.Second) {
				t.Errorf("time limit: timed out %v after %v", o.TimedOut, time.Since(start))
			}
		})
	}
}

func TestCommandAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	id, err := LookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	c := Command{Argv: []string{"/bin/sh", "-c", "id -u; id -G"}, As: id, Stdout: &stdout}
	if o := c.Run(context.Background()); !o.OK() {
		t.Fatalf("outcome %+v", o)
	}
	want := []string{"65534", "65534"}
	if id.Credential != nil {
		want = []string{itoa(id.Credential.Uid), itoa(id.Credential.Gid)}
	}
	if got := strings.Fields(stdout.String()); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ran as %q, want uid %s and only group %s", got, want[0], want[1])
	}
	if _, err := LookupUser("root"); err == nil {
		t.Error("LookupUser accepted root")
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
