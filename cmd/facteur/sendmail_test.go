package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/facteur/facteur/store/storetest"
)

func TestRootFlags(t *testing.T) {
	tests := []struct {
		args   []string
		config string
		i      int
	}{
		{[]string{"sendmail", "-t"}, "", 0},
		{[]string{"-c", "x.toml", "sendmail"}, "x.toml", 2},
		{[]string{"--config", "x.toml", "--json", "mailq"}, "x.toml", 3},
		{[]string{"--config=x.toml", "mailq"}, "x.toml", 1},
		{[]string{"-cx.toml", "mailq"}, "x.toml", 1},
		{[]string{"serve", "--roles", "pickup"}, "", 0},
		{[]string{"-c"}, "", 0},
	}
	for _, tt := range tests {
		config, i := rootFlags(tt.args)
		if config != tt.config || i != tt.i {
			t.Errorf("rootFlags(%q) = %q, %d; want %q, %d", tt.args, config, i, tt.config, tt.i)
		}
	}
	for _, args := range [][]string{{"facteur", "serve"}, {"facteur", "-c", "x", "domain", "list"}, {"facteur"}} {
		if _, ok := sendmailDispatch(args); ok {
			t.Errorf("sendmailDispatch(%q) took a facteur command", args)
		}
	}
}

// TestSendmailThroughServeAndSymlinks runs the real thing: `facteur serve
// --roles pickup` in its own process, and the facteur binary invoked as
// sendmail, mailq and newaliases through symlinks, and as `facteur
// sendmail` and `facteur -c FILE mailq`.
func TestSendmailThroughServeAndSymlinks(t *testing.T) {
	db := storetest.New(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO domain (name) VALUES ('host.example'), ('example.com');
		INSERT INTO mailbox (address, local_part, domain, maildir) VALUES
			('bob@example.com', 'bob', 'example.com', ''), ('carol@example.com', 'carol', 'example.com', '');
		INSERT INTO alias (address, local_part, domain, destinations) VALUES
			('root@host.example', 'root', 'host.example', ARRAY['bob@example.com']);`); err != nil {
		t.Fatal(err)
	}
	// A short directory: a unix socket path holds at most 107 bytes.
	dir, err := os.MkdirTemp("/tmp", "fp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe := filepath.Join(dir, "facteur")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, name := range []string{"sendmail", "mailq", "newaliases"} {
		if err := os.Symlink(exe, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "pickup.sock")
	cfg := filepath.Join(dir, "facteur.toml")
	conf := fmt.Sprintf("database_url = %s\nspool_dir = %s\nhostname = \"host.example\"\n[log]\nformat = \"json\"\n[listen]\npickup = %s\n",
		tomlQuote(db.URL), tomlQuote(filepath.Join(dir, "spool")), tomlQuote(sock))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	var serveLog syncBuffer
	serve := exec.Command(exe, "-c", cfg, "serve", "--roles", "pickup")
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve.Wait() }()
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			serve.Process.Kill()
			<-served
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", serveLog.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pickup socket not up after 30 s: %v\n%s", err, serveLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	run := func(stdin string, argv ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "FACTEUR_CONFIG="+cfg)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%q: %v", argv, err)
		}
		return code, out.String(), errb.String()
	}
	msg, err := os.ReadFile(filepath.Join("..", "..", "testdata", "mail", "cron-output.eml"))
	if err != nil {
		t.Fatal(err)
	}

	// sendmail -t < testdata/mail/cron-output.eml, through the symlink.
	if code, _, stderr := run(string(msg), filepath.Join(dir, "sendmail"), "-t", "-oi"); code != 0 {
		t.Fatalf("sendmail -t: exit %d: %s", code, stderr)
	}
	// facteur sendmail -bs.
	code, out, stderr := run("HELO me\nMAIL FROM:<root@host.example>\nRCPT TO:<carol@example.com>\nDATA\nSubject: bs\n\nhi\n.\nQUIT\n",
		exe, "sendmail", "-bs")
	if code != 0 || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("facteur sendmail -bs: exit %d, %s:\n%s", code, stderr, out)
	}
	var n int
	var localUser string
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), min(local_user) FROM queue_message WHERE protocol = 'local'`).Scan(&n, &localUser); err != nil || n != 2 {
		t.Fatalf("queued local messages: %d, %v; want 2", n, err)
	}
	if localUser != "root" {
		t.Errorf("local user %q, want root", localUser)
	}

	// mailq, through the symlink and as `facteur -c FILE mailq`.
	summary := regexp.MustCompile(`(?m)^-- \d+ Kbytes in 2 Requests\.$`)
	for _, argv := range [][]string{{filepath.Join(dir, "mailq")}, {exe, "-c", cfg, "mailq"}, {filepath.Join(dir, "sendmail"), "-bp"}} {
		code, out, stderr := run("", argv...)
		if code != 0 || !strings.HasPrefix(out, "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n") ||
			!summary.MatchString(out) || !strings.Contains(out, "carol@example.com") {
			t.Errorf("%q: exit %d, %s:\n%s", argv, code, stderr, out)
		}
	}
	if code, _, stderr := run("", filepath.Join(dir, "newaliases")); code != 0 || !strings.Contains(stderr, "facteur newaliases") {
		t.Errorf("newaliases: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run("", filepath.Join(dir, "sendmail"), "-Z", "bob@example.com"); code != 64 || !strings.Contains(stderr, "unknown option -Z") {
		t.Errorf("bad flag: exit %d: %s", code, stderr)
	}

	// The daemon stops; sendmail says try again later.
	serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("pickup socket left after stop: %v", err)
	}
	if code, _, stderr := run("x\n", filepath.Join(dir, "sendmail"), "bob@example.com"); code != 75 || !strings.Contains(stderr, "not running") {
		t.Errorf("daemon down: exit %d: %s", code, stderr)
	}
}
