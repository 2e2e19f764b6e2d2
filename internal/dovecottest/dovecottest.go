// Package dovecottest runs a private Dovecot (2.3) for tests: LMTP on a unix
// socket and IMAP on a loopback port, users in a passwd-file, mail in
// Maildirs under a mail root laid out as facteur's maildir agent writes it
// (mail_location = maildir:<mail root>/%d/%n), and a small IMAP client to
// read what was delivered.
//
// Dovecot refuses to store mail as uid 0. When the tests run as root, mail
// belongs to the vmail user, which MailOwner creates (useradd --system) when
// it is missing, as .ci/run and `facteur dev` do; otherwise it belongs to the
// current user, and Dovecot runs unprivileged.
//
// A test skips when Dovecot is not installed, unless FACTEUR_REQUIRE_PEERS=1,
// which makes it fail.
package dovecottest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Binary is where Debian's dovecot-core installs the master process.
const Binary = "/usr/sbin/dovecot"

// Require skips t when the named program is missing, or fails it when
// FACTEUR_REQUIRE_PEERS=1.
func Require(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is required (FACTEUR_REQUIRE_PEERS=1) but not installed: %v", program, err)
		}
		t.Skipf("%s not installed (apt-get install dovecot-core dovecot-lmtpd dovecot-imapd): %v", program, err)
	}
	return p
}

// MailOwner returns the uid and gid that own Maildirs in tests: the vmail
// user when running as root (created if missing), else the current user.
func MailOwner(t testing.TB) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid()
	}
	u, err := user.Lookup("vmail")
	for try := 0; err != nil; try++ {
		// Another test process may be creating it at the same time, and
		// useradd fails while /etc/passwd is locked: try again.
		out, cerr := exec.Command("useradd", "--system", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "vmail").CombinedOutput()
		if u, err = user.Lookup("vmail"); err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("dovecottest: create the vmail user: %v: %s", cerr, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// User is one mailbox of the test server.
type User struct {
	Address  string // user@domain: the login and the LMTP recipient
	Password string
	// QuotaBytes is the user's storage limit (Dovecot's quota plugin with
	// the maildir backend, which keeps Maildir++ maildirsize); 0 is none.
	QuotaBytes int64
}

// Options configure Start.
type Options struct {
	Users []User
	// QuotaFullTempfail answers over-quota recipients 452 4.2.2 instead of
	// 552 5.2.2.
	QuotaFullTempfail bool
}

// Server is a running Dovecot.
type Server struct {
	Dir        string // configuration, state, logs and sockets
	MailRoot   string // <MailRoot>/<domain>/<local> is each user's Maildir
	LMTPSocket string // unix socket of the LMTP service
	IMAPAddr   string // 127.0.0.1:port
	Config     string // dovecot.conf
	UID, GID   int    // the mail owner
	LogPath    string

	cmd *exec.Cmd
}

// Start writes a configuration in a new directory, starts `dovecot -F` and
// waits for its sockets; it stops Dovecot and removes the directory when t
// ends, and prints Dovecot's log if t failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Require(t, Binary)
	for _, p := range []string{"/usr/lib/dovecot/lmtp", "/usr/lib/dovecot/imap"} {
		Require(t, p)
	}
	uid, gid := MailOwner(t)

	// A short path: unix socket names are limited to 107 bytes, and
	// t.TempDir() names can be long. The tree must be traversable by
	// Dovecot's unprivileged processes (login, mail as the mail owner).
	dir, err := os.MkdirTemp("", "fdc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Dir:        dir,
		MailRoot:   filepath.Join(dir, "mail"),
		LMTPSocket: filepath.Join(dir, "run", "lmtp"),
		Config:     filepath.Join(dir, "dovecot.conf"),
		LogPath:    filepath.Join(dir, "dovecot.log"),
		UID:        uid,
		GID:        gid,
	}
	for _, d := range []string{s.MailRoot, filepath.Join(dir, "run"), filepath.Join(dir, "state")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(s.MailRoot, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.MailRoot, 0o700); err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	for _, u := range opts.Users {
		local, domain, ok := strings.Cut(u.Address, "@")
		if !ok || strings.ContainsAny(u.Address+u.Password, ":\n") {
			t.Fatalf("dovecottest: bad user %q", u.Address)
		}
		extra := ""
		if u.QuotaBytes > 0 {
			extra = fmt.Sprintf("userdb_quota_rule=*:bytes=%d", u.QuotaBytes)
		}
		fmt.Fprintf(&users, "%s:{PLAIN}%s:%d:%d::%s::%s\n", u.Address, u.Password, uid, gid,
			filepath.Join(s.MailRoot, domain, local), extra)
	}
	usersFile := filepath.Join(dir, "users")
	if err := os.WriteFile(usersFile, []byte(users.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	s.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := config(s, usersFile, port, opts)
	if err := os.WriteFile(s.Config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	s.cmd = exec.Command(bin, "-F", "-c", s.Config)
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("dovecottest: start dovecot: %v", err)
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			logs, _ := os.ReadFile(s.LogPath)
			t.Logf("dovecot output:\n%s\ndovecot.log:\n%s", out.String(), logs)
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			logs, _ := os.ReadFile(s.LogPath)
			t.Fatalf("dovecottest: dovecot exited at start: %s\n%s", out.String(), logs)
		default:
		}
		if s.ready() {
			return s
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(s.LogPath)
			t.Fatalf("dovecottest: dovecot not ready after 15s: %s\n%s", out.String(), logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready reports whether the LMTP socket and the IMAP port answer.
func (s *Server) ready() bool {
	for _, a := range [][2]string{{"unix", s.LMTPSocket}, {"tcp", s.IMAPAddr}} {
		c, err := net.DialTimeout(a[0], a[1], time.Second)
		if err != nil {
			return false
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.Contains(line, "Dovecot") && !strings.HasPrefix(line, "220 ") {
			return false
		}
	}
	return true
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func config(s *Server, usersFile string, port int, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by internal/dovecottest
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[2]s
info_log_path = %[2]s
instance_name = facteur-test-%[3]s
protocols = lmtp imap
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:%[4]s/%%d/%%n
mail_plugins = quota
lmtp_save_to_detail_mailbox = no
passdb {
  driver = passwd-file
  args = %[5]s
}
userdb {
  driver = passwd-file
  args = %[5]s
}
plugin {
  quota = maildir:User quota
}
quota_full_tempfail = %[6]s
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[7]d
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
`, s.Dir, s.LogPath, filepath.Base(s.Dir), s.MailRoot, usersFile, yesNo(opts.QuotaFullTempfail), port)
	if os.Geteuid() != 0 {
		// Unprivileged: no user switching, no chroot.
		u, _ := user.Current()
		name, group := strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
		if u != nil {
			name = u.Username
		}
		if g, err := user.LookupGroupId(group); err == nil {
			group = g.Name
		}
		fmt.Fprintf(&b, `default_internal_user = %[1]s
default_internal_group = %[2]s
default_login_user = %[1]s
service imap-login {
  chroot =
}
service anvil {
  chroot =
}
`, name, group)
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Fetch logs in over IMAP as login and returns every message of INBOX, in
// order, as Dovecot serves them (CRLF line ends).
func (s *Server) Fetch(ctx context.Context, login, password string) ([][]byte, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", s.IMAPAddr)
	if err != nil {
		return nil, fmt.Errorf("imap dial: %w", err)
	}
	defer c.Close()
	dl := time.Now().Add(20 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.SetDeadline(dl)
	ic := &imapConn{r: bufio.NewReader(c), w: c}
	if _, err := ic.line(); err != nil { // greeting
		return nil, err
	}
	if _, err := ic.cmd("a1", "LOGIN %s %s", quote(login), quote(password)); err != nil {
		return nil, err
	}
	untagged, err := ic.cmd("a2", "SELECT INBOX")
	if err != nil {
		return nil, err
	}
	n := 0
	for _, u := range untagged {
		if m := existsRE.FindStringSubmatch(string(u)); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
	}
	var msgs [][]byte
	if n > 0 {
		untagged, err = ic.cmd("a3", "FETCH 1:%d BODY.PEEK[]", n)
		if err != nil {
			return nil, err
		}
		for _, u := range untagged {
			if lit, ok := ic.literals[string(u)]; ok {
				msgs = append(msgs, lit)
			}
		}
	}
	_, _ = ic.cmd("a4", "LOGOUT")
	if len(msgs) != n {
		return msgs, fmt.Errorf("imap: %d messages in INBOX, fetched %d", n, len(msgs))
	}
	return msgs, nil
}

var existsRE = regexp.MustCompile(`^\* (\d+) EXISTS`)

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// imapConn is just enough IMAP4rev1 (RFC 3501) for Fetch: tagged commands,
// untagged responses and literals.
type imapConn struct {
	r        *bufio.Reader
	w        io.Writer
	literals map[string][]byte // untagged response line → its literal
}

var literalRE = regexp.MustCompile(`\{(\d+)\}\r\n$`)

// line reads one response line, with a literal it announces (RFC 3501
// 4.3) kept aside.
func (c *imapConn) line() (string, error) {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("imap read: %w", err)
	}
	if m := literalRE.FindStringSubmatch(l); m != nil {
		n, _ := strconv.Atoi(m[1])
		lit := make([]byte, n)
		if _, err := io.ReadFull(c.r, lit); err != nil {
			return "", fmt.Errorf("imap read literal: %w", err)
		}
		rest, err := c.r.ReadString('\n') // the rest of the response, ")"
		if err != nil {
			return "", fmt.Errorf("imap read: %w", err)
		}
		if c.literals == nil {
			c.literals = map[string][]byte{}
		}
		key := l + rest
		c.literals[key] = lit
		return key, nil
	}
	return l, nil
}

// cmd sends a command and returns the untagged responses before its tagged
// OK, or an error for NO or BAD.
func (c *imapConn) cmd(tag, format string, args ...any) ([]string, error) {
	if _, err := fmt.Fprintf(c.w, tag+" "+format+"\r\n", args...); err != nil {
		return nil, fmt.Errorf("imap write: %w", err)
	}
	var untagged []string
	for {
		l, err := c.line()
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				return untagged, errors.New("imap: " + strings.TrimSpace(l))
			}
			return untagged, nil
		}
		untagged = append(untagged, l)
	}
}

// Log returns Dovecot's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}
