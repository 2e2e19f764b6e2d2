package local

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
)

// TestMain runs the helper when the agent re-executes the test binary
// (through /proc/self/exe, the default Options.Helper) as
// "local-deliver MODE ...", as cmd/facteur does for the real binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperCommand {
		os.Exit(HelperMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// requireRoot skips a test that switches users when not root, and fails it
// when FACTEUR_REQUIRE_PEERS=1 (CI must run these).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
		t.Fatal("this test delivers as other users and needs root (FACTEUR_REQUIRE_PEERS=1)")
	}
	t.Skip("this test delivers as other users and needs root")
}

// sysUser is a throwaway system user made for a test.
type sysUser struct {
	name     string
	uid, gid int
	home     string
}

// useraddMu serialises useradd/userdel within this process; other
// processes are handled by retrying on the passwd lock.
var useraddMu sync.Mutex

// newSysUser creates a system user with a home directory under base (which
// must be traversable by everyone) and removes it when the test ends.
func newSysUser(t *testing.T, base string) sysUser {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ft%x", b)
	home := filepath.Join(base, name)
	if out, err := retryUseradd("useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", "--user-group", name); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := retryUseradd("userdel", name); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	return sysUser{name: name, uid: uid, gid: gid, home: home}
}

func retryUseradd(args ...string) ([]byte, error) {
	useraddMu.Lock()
	defer useraddMu.Unlock()
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		out, err = exec.Command(args[0], args[1:]...).CombinedOutput()
		// 10: cannot lock /etc/passwd (another process holds it); 1 on
		// some versions with a "lock" message.
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "lock") {
			return out, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out, err
}

// sharedDir returns a new directory that every user can traverse, removed
// when the test ends (t.TempDir's parents are private to root).
func sharedDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "facteur-local-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// debianSpool makes a mail spool directory as Debian has /var/mail: owned
// by root and the mail group, mode 2775 (users write it through the mail
// group). Without root, a directory of our own.
func debianSpool(t *testing.T, base string) string {
	t.Helper()
	d := filepath.Join(base, "spool")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return d
	}
	g, err := user.LookupGroup("mail")
	if err != nil {
		t.Fatalf("group mail: %v", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.Chown(d, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o2775); err != nil {
		t.Fatal(err)
	}
	return d
}

// testMessage is a message as the queue hands it over (CRLF).
const testMessage = "Received: from client.example by mx.example.test; Tue, 1 Jul 2025 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.net>\r\n" +
	"To: someone@mx.example.test\r\n" +
	"Subject: local delivery\r\n" +
	"Message-ID: <m1@example.net>\r\n" +
	"\r\n" +
	"Hello.\r\n" +
	"From the start of this line, quoting applies.\r\n" +
	">From this one is left alone (mboxo).\r\n" +
	"Bye.\r\n"

func newMessage(body string) *deliver.Message {
	return &deliver.Message{
		QueueID: "4XyZqueue01", Sender: "alice@example.net", Size: int64(len(body)), Kind: "mail",
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
		Log:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("queue_id", "4XyZqueue01"),
	}
}

func deliverOne(t *testing.T, a *Agent, msg *deliver.Message, addr, orig string) deliver.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := a.Deliver(ctx, "", msg, []deliver.Recipient{{Address: addr, Orig: orig}})
	if len(res) != 1 {
		t.Fatalf("Deliver returned %d results for 1 recipient", len(res))
	}
	return res[0]
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
