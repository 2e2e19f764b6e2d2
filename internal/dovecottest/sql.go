package dovecottest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/facteur/facteur/docs/dovecot"
)

// SQLOptions configure StartSQL.
type SQLOptions struct {
	// DatabaseURL is facteur's database (a storetest.DB's URL): Dovecot's
	// passdb, userdb and quota_clone use its tables.
	DatabaseURL string
	// QuotaFullTempfail answers over-quota recipients 452 4.2.2 instead of
	// 552 5.2.2.
	QuotaFullTempfail bool
}

// StartSQL starts Dovecot with facteur's own configuration (docs/dovecot,
// rendered with this server's paths and the mail owner) instead of Start's
// passwd-file: logins, Maildirs and quotas come from the mailbox,
// app_password and domain tables, usage goes to quota_usage, and
// Server.LMTPSocket is the facteur-lmtp listener that configuration defines.
// Maildirs are <MailRoot>/<mailbox.maildir>. Like Start, it stops Dovecot
// when t ends and prints its log if t failed.
func StartSQL(t testing.TB, opts SQLOptions) *Server {
	t.Helper()
	bin := Require(t, Binary)
	for _, p := range []string{"/usr/lib/dovecot/lmtp", "/usr/lib/dovecot/imap", "/usr/lib/dovecot/dict", "doveadm"} {
		Require(t, p)
	}
	for _, p := range []string{"/usr/lib/dovecot/modules/auth/libdriver_pgsql.so",
		"/usr/lib/dovecot/modules/dict/libdriver_pgsql.so", "/usr/lib/dovecot/modules/lib20_quota_clone_plugin.so"} {
		requireFile(t, p)
	}
	connect, err := LibpqConnect(opts.DatabaseURL)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	uid, gid := MailOwner(t)
	mailUser, mailGroup := names(t, uid, gid)
	facteurUser, _ := names(t, os.Geteuid(), os.Getegid())

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
		LMTPSocket: filepath.Join(dir, "run", "facteur-lmtp"),
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

	rendered, err := dovecot.Render(dovecot.Params{
		DovecotDir: dir, PGConnect: connect, MailRoot: s.MailRoot,
		MailUser: mailUser, MailGroup: mailGroup, MailUID: uid, MailGID: gid,
		FacteurUser: facteurUser,
	})
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	for name, b := range rendered {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	port := freePort(t)
	s.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var b strings.Builder
	fmt.Fprintf(&b, `# written by internal/dovecottest (StartSQL): the test host's settings,
# then facteur's configuration from docs/dovecot.
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[2]s
info_log_path = %[2]s
instance_name = facteur-test-%[3]s
protocols = lmtp imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_verbose = yes
# Tests log in with wrong passwords on purpose: no failure delay, and no
# per-IP penalty (the auth process cannot reach anvil's penalty socket).
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
quota_full_tempfail = %[4]s
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[5]d
  }
  inet_listener imaps {
    port = 0
  }
}
!include %[1]s/99-facteur.conf
`, dir, s.LogPath, filepath.Base(dir), yesNo(opts.QuotaFullTempfail), port)
	b.WriteString(unprivileged())
	if err := os.WriteFile(s.Config, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s.launch(t, bin)
	return s
}

// requireFile skips t when the file (a Dovecot module) is missing, or fails
// it when FACTEUR_REQUIRE_PEERS=1.
func requireFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is required (FACTEUR_REQUIRE_PEERS=1) but missing: %v", path, err)
		}
		t.Skipf("%s missing (apt-get install dovecot-core dovecot-imapd dovecot-lmtpd dovecot-pgsql): %v", path, err)
	}
}

// unprivileged returns the settings that let Dovecot run as a user other
// than root (no user switching, no chroot), or "" as root.
func unprivileged() string {
	if os.Geteuid() == 0 {
		return ""
	}
	u, _ := user.Current()
	name, group := strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
	if u != nil {
		name = u.Username
	}
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return fmt.Sprintf(`default_internal_user = %[1]s
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

// names returns the user and group names of uid and gid.
func names(t testing.TB, uid, gid int) (string, string) {
	t.Helper()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		t.Fatalf("dovecottest: user %d: %v", uid, err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		t.Fatalf("dovecottest: group %d: %v", gid, err)
	}
	return u.Username, g.Name
}

// LibpqConnect turns a PostgreSQL URL (or key=value string) into the libpq
// key=value form that Dovecot's pgsql driver takes as its connect setting.
func LibpqConnect(databaseURL string) (string, error) {
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return "", fmt.Errorf("database url: %w", err)
	}
	kv := [][2]string{{"host", cfg.Host}, {"port", strconv.Itoa(int(cfg.Port))},
		{"dbname", cfg.Database}, {"user", cfg.User}}
	if cfg.Password != "" {
		kv = append(kv, [2]string{"password", cfg.Password})
	}
	var parts []string
	for _, p := range kv {
		if p[1] == "" {
			continue
		}
		v := p[1]
		if strings.ContainsAny(v, ` '\`) {
			v = "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
		}
		parts = append(parts, p[0]+"="+v)
	}
	return strings.Join(parts, " "), nil
}

// launch runs `dovecot -F -c s.Config`, stops it when t ends, and waits
// until its LMTP socket and IMAP port answer.
func (s *Server) launch(t testing.TB, bin string) {
	t.Helper()
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
			return
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(s.LogPath)
			t.Fatalf("dovecottest: dovecot not ready after 15s: %s\n%s", out.String(), logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Doveadm runs doveadm against this server's configuration and returns its
// standard output.
func (s *Server) Doveadm(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "doveadm", append([]string{"-c", s.Config}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("doveadm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// IMAPSession is a logged-in IMAP connection for tests that need more than
// Fetch: quota, flags, expunge.
type IMAPSession struct {
	c   net.Conn
	ic  *imapConn
	tag int
}

// Login connects to the IMAP listener and logs in; a refused login is an
// error that quotes the server's tagged reply.
func (s *Server) Login(ctx context.Context, login, password string) (*IMAPSession, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", s.IMAPAddr)
	if err != nil {
		return nil, fmt.Errorf("imap dial: %w", err)
	}
	dl := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.SetDeadline(dl)
	is := &IMAPSession{c: c, ic: &imapConn{r: bufio.NewReader(c), w: c}}
	if _, err := is.ic.line(); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := is.Cmd("LOGIN %s %s", quote(login), quote(password)); err != nil {
		c.Close()
		return nil, err
	}
	return is, nil
}

// Cmd sends one command (format and args as fmt.Sprintf, without the tag)
// and returns the untagged responses before its tagged OK; NO or BAD is an
// error. Literals in responses are not kept.
func (is *IMAPSession) Cmd(format string, args ...any) ([]string, error) {
	is.tag++
	return is.ic.cmd("t"+strconv.Itoa(is.tag), format, args...)
}

// Close logs out and closes the connection.
func (is *IMAPSession) Close() {
	_, _ = is.Cmd("LOGOUT")
	is.c.Close()
}
