package local

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
)

func TestCopyQuoted(t *testing.T) {
	long := strings.Repeat("x", 70<<10) // longer than the read buffer
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "\n"},
		{"final newline added", "a\nb", "a\nb\n\n"},
		{"CRLF to LF", "a\r\nb\r\n", "a\nb\n\n"},
		{"From quoted", "From me\nFrom\nFrom:x\n", ">From me\nFrom\nFrom:x\n\n"},
		{"first line quoted", "From x", ">From x\n\n"},
		{">From kept (mboxo)", ">From x\n>>From y\n", ">From x\n>>From y\n\n"},
		{"From inside a line", "say From here\n", "say From here\n\n"},
		{"lone CR kept", "a\rb\n", "a\rb\n\n"},
		{"long line then From", long + " From x\nFrom y\n", long + " From x\n>From y\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := bufio.NewWriter(&b)
			if err := copyQuoted(w, strings.NewReader(tc.in)); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			if got := b.String(); got != tc.want {
				if len(got) > 200 {
					got = got[len(got)-200:]
				}
				t.Errorf("copyQuoted(%.40q) = ...%q", tc.in, got)
			}
		})
	}
}

func testMboxOptions() mboxOptions {
	return mboxOptions{locks: []string{LockDot, LockFcntl, LockFlock}, attempts: 3, delay: 10 * time.Millisecond,
		stale: time.Hour, owner: -1,
		now: func() time.Time { return time.Date(2025, 7, 1, 9, 5, 3, 0, time.UTC) }}
}

func TestAppendMboxFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user")
	o := testMboxOptions()
	for _, sender := range []string{"alice@example.net", ""} {
		rep := appendMbox(path, o, fromSender(sender), strings.NewReader("Subject: x\n\nFrom here.\nbye"))
		if rep.Status != deliver.Delivered.String() {
			t.Fatalf("appendMbox: %+v", rep)
		}
	}
	want := "From alice@example.net Tue Jul  1 09:05:03 2025\nSubject: x\n\n>From here.\nbye\n\n" +
		"From MAILER-DAEMON Tue Jul  1 09:05:03 2025\nSubject: x\n\n>From here.\nbye\n\n"
	if got := readFile(t, path); got != want {
		t.Errorf("mbox:\n%q\nwant\n%q", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new mailbox mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dot-lock left behind: %v", err)
	}
}

// failingReader returns data, then an error: the message cannot be read to
// its end.
type failingReader struct{ data io.Reader }

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.data.Read(p)
	if errors.Is(err, io.EOF) {
		return n, errors.New("spool file vanished")
	}
	return n, err
}

func TestAppendMboxTruncatesOnFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user")
	before := "From a@b Mon Jun 30 10:00:00 2025\nSubject: earlier\n\nold\n\n"
	if err := os.WriteFile(path, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	// Big enough that part of it reaches the file before the error.
	body := strings.Repeat("line of the message\n", 20000)
	rep := appendMbox(path, testMboxOptions(), "x@y", &failingReader{strings.NewReader(body)})
	if rep.Status != deliver.Deferred.String() || rep.Code != 451 {
		t.Errorf("appendMbox with a failing message = %+v, want deferred 451", rep)
	}
	if got := readFile(t, path); got != before {
		t.Errorf("mailbox not truncated back: %d bytes, want %d", len(got), len(before))
	}
}

func TestAppendMboxRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dir, "sym")
	if err := os.Symlink(target, sym); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard")
	if err := os.Link(target, hard); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sym, hard} {
		rep := appendMbox(p, testMboxOptions(), "x@y", strings.NewReader("hi\n"))
		if rep.Status != deliver.Deferred.String() {
			t.Errorf("appendMbox(%s) = %+v, want a deferral", filepath.Base(p), rep)
		}
	}
	if got := readFile(t, target); got != "precious\n" {
		t.Errorf("target written through a link: %q", got)
	}
	// The owner check.
	o := testMboxOptions()
	o.owner = int64(os.Geteuid()) + 1
	if rep := appendMbox(target+"2", o, "x@y", strings.NewReader("hi\n")); rep.Status != deliver.Delivered.String() {
		t.Errorf("creating a new mailbox with an owner check: %+v", rep)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("not yours\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep := appendMbox(other, o, "x@y", strings.NewReader("hi\n")); rep.Status != deliver.Deferred.String() ||
		!strings.Contains(rep.Text, "owned by uid") {
		t.Errorf("appending to a mailbox of another owner: %+v", rep)
	}
}

func TestDotlockBusyAndStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user")
	lock := path + ".lock"
	if err := os.WriteFile(lock, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := testMboxOptions()
	o.now = time.Now
	start := time.Now()
	rep := appendMbox(path, o, "x@y", strings.NewReader("hi\n"))
	if rep.Status != deliver.Deferred.String() || rep.Enhanced.String() != "4.2.0" || !strings.Contains(rep.Text, "locked") {
		t.Errorf("with a fresh dot-lock held: %+v", rep)
	}
	if el := time.Since(start); el < 2*o.delay {
		t.Errorf("gave up after %v, before its %d attempts", el, o.attempts)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Errorf("a fresh lock of another process was removed: %v", err)
	}
	// The same lock, older than the stale age: taken over.
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(lock, old, old); err != nil {
		t.Fatal(err)
	}
	rep = appendMbox(path, o, "x@y", strings.NewReader("hi\n"))
	if rep.Status != deliver.Delivered.String() {
		t.Errorf("with a stale dot-lock: %+v", rep)
	}
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock left behind: %v", err)
	}
}

func TestDotlockMayFailForFiles(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes any directory: the unwritable directory cannot be made")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)
	o := testMboxOptions()
	if rep := appendMbox(path, o, "x@y", strings.NewReader("hi\n")); rep.Status != deliver.Deferred.String() {
		t.Errorf("mailbox whose dot-lock cannot be made: %+v", rep)
	}
	o.dotlockMayFail = true
	if rep := appendMbox(path, o, "x@y", strings.NewReader("hi\n")); rep.Status != deliver.Delivered.String() {
		t.Errorf("file whose dot-lock cannot be made: %+v", rep)
	}
}
