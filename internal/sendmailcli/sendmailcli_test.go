package sendmailcli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		prog string
		args []string
		want Options
	}{
		{"recipients", "sendmail", []string{"a@b", "c"}, Options{Recipients: []string{"a@b", "c"}}},
		{"-t -i", "sendmail", []string{"-t", "-i"}, Options{Extract: true, IgnoreDots: true}},
		{"grouped -ti", "sendmail", []string{"-ti"}, Options{Extract: true, IgnoreDots: true}},
		{"-oi", "sendmail", []string{"-oi", "x"}, Options{IgnoreDots: true, Recipients: []string{"x"}}},
		{"-o i", "sendmail", []string{"-o", "i", "x"}, Options{IgnoreDots: true, Recipients: []string{"x"}}},
		{"-f sender", "sendmail", []string{"-f", "me@x", "y"}, Options{Sender: "me@x", HasSender: true, Recipients: []string{"y"}}},
		{"-fsender", "sendmail", []string{"-fme@x", "y"}, Options{Sender: "me@x", HasSender: true, Recipients: []string{"y"}}},
		{"-f empty", "sendmail", []string{"-f", "", "y"}, Options{HasSender: true, Recipients: []string{"y"}}},
		{"-r", "sendmail", []string{"-r", "me@x", "y"}, Options{Sender: "me@x", HasSender: true, Recipients: []string{"y"}}},
		{"-F name", "sendmail", []string{"-F", "Jo Doe", "-t"}, Options{FullName: "Jo Doe", HasFullName: true, Extract: true}},
		{"-FName", "sendmail", []string{"-FJo", "-t"}, Options{FullName: "Jo", HasFullName: true, Extract: true}},
		{"-C", "sendmail", []string{"-C", "/etc/x.toml", "y"}, Options{Config: "/etc/x.toml", Recipients: []string{"y"}}},
		{"ignored options", "sendmail", []string{"-oem", "-odb", "-odi", "-om", "-v", "-v", "-U", "-G", "-m", "-c", "-x",
			"-L", "tag", "-h", "17", "-O", "a=b", "-R", "hdrs", "-Am", "-ep", "-pfoo", "y"}, Options{Verbose: 2, Recipients: []string{"y"}}},
		{"-- ends options", "sendmail", []string{"-t", "--", "-weird"}, Options{Extract: true, Recipients: []string{"-weird"}}},
		{"first operand ends options", "sendmail", []string{"a@b", "-t"}, Options{Recipients: []string{"a@b", "-t"}}},
		{"-bm", "sendmail", []string{"-bm", "y"}, Options{Recipients: []string{"y"}}},
		{"-bp", "sendmail", []string{"-bp"}, Options{Mode: ModeMailq}},
		{"-bs", "sendmail", []string{"-bs"}, Options{Mode: ModeSMTP}},
		{"-bi", "sendmail", []string{"-bi"}, Options{Mode: ModeNewaliases}},
		{"-I", "sendmail", []string{"-I"}, Options{Mode: ModeNewaliases}},
		{"-bh", "sendmail", []string{"-bh"}, Options{Mode: ModeIgnore}},
		{"-q1h", "sendmail", []string{"-q1h"}, Options{Mode: ModeIgnore}},
		{"mailq", "mailq", nil, Options{Mode: ModeMailq}},
		{"newaliases", "newaliases", nil, Options{Mode: ModeNewaliases}},
		{"newaliases -bp", "newaliases", []string{"-bp"}, Options{Mode: ModeMailq}},
		{"DSN", "sendmail", []string{"-N", "failure,Delay", "-V", "id-1", "-B", "8bitmime", "y"},
			Options{Notify: "FAILURE,DELAY", EnvID: "id-1", Body: "8BITMIME", Recipients: []string{"y"}}},
		{"bad -N warns", "sendmail", []string{"-N", "sometimes", "y"},
			Options{Recipients: []string{"y"}, Warnings: []string{"bad -N option value -- ignored"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.prog, tt.args)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got.Recipients) == 0 {
				got.Recipients = nil
			}
			if got.Mode != tt.want.Mode || got.Sender != tt.want.Sender || got.HasSender != tt.want.HasSender ||
				got.FullName != tt.want.FullName || got.HasFullName != tt.want.HasFullName || got.Extract != tt.want.Extract ||
				got.IgnoreDots != tt.want.IgnoreDots || got.Config != tt.want.Config || got.Notify != tt.want.Notify ||
				got.EnvID != tt.want.EnvID || got.Body != tt.want.Body || got.Verbose != tt.want.Verbose ||
				!slices.Equal(got.Recipients, tt.want.Recipients) || !slices.Equal(got.Warnings, tt.want.Warnings) {
				t.Fatalf("Parse(%q) =\n%+v\nwant\n%+v", tt.args, *got, tt.want)
			}
		})
	}
}

func TestParseUsageErrors(t *testing.T) {
	tests := []struct {
		prog string
		args []string
		want string
	}{
		{"sendmail", []string{"-Z", "x"}, "unknown option -Z"},
		{"sendmail", []string{"-tZ"}, "unknown option -Z"},
		{"sendmail", []string{"-f"}, "requires an argument"},
		{"sendmail", nil, "no recipient"},
		{"sendmail", []string{"-i"}, "no recipient"},
		{"sendmail", []string{"-bp", "x"}, "requires no recipient"},
		{"mailq", []string{"x"}, "requires no recipient"},
		{"sendmail", []string{"-bs", "x"}, "requires no recipient"},
		{"sendmail", []string{"-bs", "-t"}, "-t can be used only"},
		{"sendmail", []string{"-bd"}, "facteur serve"},
		{"sendmail", []string{"-bv", "x"}, "unsupported: -bv"},
		{"sendmail", []string{"-B", "BINARY", "x"}, "-B option"},
		{"sendmail", []string{"-n", "x"}, "-n option not supported"},
		{"sendmail", []string{"-XV", "x"}, "unsupported: -XV"},
		{"sendmail", []string{"-q"}, "not supported"},
		{"sendmail", []string{"-qRexample.com"}, "not supported"},
		{"sendmail", []string{"-oA", "x"}, "-oA requires"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.prog, tt.args)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s %q) = %v, want a usage error with %q", tt.prog, tt.args, err, tt.want)
		}
	}
}

// run runs Main with a socket path and returns the exit status and stderr.
func run(t *testing.T, sock, stdin string, args ...string) (int, string) {
	t.Helper()
	var errb bytes.Buffer
	code := Main(context.Background(), Env{Args: args, Stdin: strings.NewReader(stdin), Stdout: &bytes.Buffer{}, Stderr: &errb,
		Getenv: func(string) string { return "" }, Socket: func(string) (string, error) { return sock, nil }})
	return code, errb.String()
}

func TestMainExitStatuses(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "fs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	missing := filepath.Join(dir, "missing.sock")
	if code, stderr := run(t, missing, "x\n", "sendmail", "-Q", "x"); code != ExUsage || !strings.Contains(stderr, "sendmail: unknown option -Q") {
		t.Errorf("bad flag: %d %q", code, stderr)
	}
	if code, stderr := run(t, missing, "x\n", "sendmail", "a@b"); code != ExTempFail || !strings.Contains(stderr, "not running") {
		t.Errorf("daemon down: %d %q", code, stderr)
	}
	if code, stderr := run(t, missing, "", "/usr/bin/mailq"); code != ExTempFail || !strings.HasPrefix(stderr, "mailq: ") {
		t.Errorf("mailq, daemon down: %d %q", code, stderr)
	}
	if code, stderr := run(t, missing, "", "/usr/sbin/newaliases"); code != ExOK || !strings.Contains(stderr, "facteur newaliases") {
		t.Errorf("newaliases: %d %q", code, stderr)
	}
	if code, _ := run(t, missing, "", "sendmail", "-bh"); code != ExOK {
		t.Errorf("-bh: %d", code)
	}
	// A daemon that answers nonsense.
	sock := filepath.Join(dir, "odd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("what?\n"))
			c.Close()
		}
	}()
	if code, stderr := run(t, sock, "x\n", "sendmail", "a@b"); code != ExSoftware || !strings.Contains(stderr, "malformed reply") {
		t.Errorf("nonsense reply: %d %q", code, stderr)
	}
	if code, stderr := run(t, sock, "x\n", "sendmail", "a\nb"); code != ExDataErr || !strings.Contains(stderr, "line break") {
		t.Errorf("recipient with a newline: %d %q", code, stderr)
	}
}

func TestExitStatusOfReplies(t *testing.T) {
	tests := []struct {
		line string
		want int
	}{
		{"250 2.0.0 Ok: queued as X", ExOK},
		{"451 4.3.0 Temporary lookup failure", ExTempFail},
		{"421 4.3.2 Too many connections", ExTempFail},
		{"550 5.1.1 <x@y>: Recipient address rejected: User unknown", ExNoUser},
		{"501 5.1.3 Bad recipient address syntax", ExDataErr},
		{"501 5.1.7 Bad sender address syntax", ExDataErr},
		{"553 5.7.1 <x@y>: Sender address rejected: not owned by user", ExNoPerm},
		{"554 5.7.1 <x@[1.2.3.4]>: Relay access denied", ExNoPerm},
		{"552 5.3.4 Message size exceeds fixed limit", ExDataErr},
		{"554 5.4.6 Too many hops", ExDataErr},
		{"550 5.5.2 Bare CR or LF not allowed", ExDataErr},
		{"554 5.5.1 No recipient addresses found in message header", ExDataErr},
		{"554 5.0.0 something else", ExUnavailable},
		{"550 no enhanced code", ExUnavailable},
	}
	for _, tt := range tests {
		r, err := readReply(bufioReader(tt.line + "\n"))
		if err != nil {
			t.Fatalf("%q: %v", tt.line, err)
		}
		if got := exitStatus(r); got != tt.want {
			t.Errorf("%q: exit %d, want %d", tt.line, got, tt.want)
		}
	}
}

func TestCopyMessageStopsAtLoneDot(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\n.\nb\n", "a\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n"},
		{"a\n..\nb\n", "a\n..\nb\n"},
		{"a\n.b\n", "a\n.b\n"},
		{"a\n.", "a\n"},
		{"a .\n.x", "a .\n.x"},
		{"no newline", "no newline"},
		{strings.Repeat("x", 70000) + "\n.\nafter", strings.Repeat("x", 70000) + "\n"},
		{strings.Repeat("x", 65536) + ".\n", strings.Repeat("x", 65536) + ".\n"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := copyMessage(&out, strings.NewReader(tt.in), true); err != nil {
			t.Fatal(err)
		}
		if out.String() != tt.want {
			t.Errorf("%.40q: got %.40q, want %.40q", tt.in, out.String(), tt.want)
		}
		out.Reset()
		copyMessage(&out, strings.NewReader(tt.in), false)
		if out.String() != tt.in {
			t.Errorf("-i %.40q: got %.40q", tt.in, out.String())
		}
	}
}

func TestCRLFWriter(t *testing.T) {
	var out bytes.Buffer
	w := &crlfWriter{w: &out}
	for _, p := range []string{"EHLO x\n", "MAIL FROM:<a@b>\r", "\nDATA\r\n", "a\n.\n"} {
		w.Write([]byte(p))
	}
	if want := "EHLO x\r\nMAIL FROM:<a@b>\r\nDATA\r\na\r\n.\r\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestLocate(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := write("full.toml", "database_url = \"postgres://secret\"\nspool_dir = \"/srv/spool\"\n[listen]\nsmtp = \":25\"\npickup = \"/run/facteur/pickup.sock\"\n[log]\nlevel = \"debug\"\n", 0o600)
	spoolOnly := write("spool.toml", "spool_dir = \"/srv/spool\"\n", 0o600)
	empty := write("empty.toml", "", 0o600)
	for _, tt := range []struct {
		config string
		env    map[string]string
		want   string
	}{
		{full, nil, "/run/facteur/pickup.sock"},
		{spoolOnly, nil, "/srv/spool/pickup.sock"},
		{empty, nil, DefaultSocket},
		{full, map[string]string{"FACTEUR_PICKUP": "/x.sock"}, "/run/facteur/pickup.sock"}, // -C wins
		{"", map[string]string{"FACTEUR_PICKUP": "/x.sock", "FACTEUR_CONFIG": full}, "/x.sock"},
		{"", map[string]string{"FACTEUR_CONFIG": spoolOnly}, "/srv/spool/pickup.sock"},
	} {
		env = tt.env
		got, err := Locate(tt.config, getenv)
		if err != nil || got != tt.want {
			t.Errorf("Locate(%q, %v) = %q, %v; want %q", tt.config, tt.env, got, err, tt.want)
		}
	}
	if _, err := Locate(filepath.Join(dir, "nosuch.toml"), getenv); err == nil {
		t.Error("a missing -C file must be an error")
	}
	if bad := write("bad.toml", "spool_dir = [", 0o600); true {
		env = map[string]string{"FACTEUR_CONFIG": bad}
		if _, err := Locate("", getenv); err == nil {
			t.Error("a malformed configuration must be an error")
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
