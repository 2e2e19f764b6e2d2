package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/store/storetest"
)

// startRemote serves backend as a remote MX (mx.remote.test) on a loopback
// port until the test ends, and returns the port.
func startRemote(t *testing.T, backend gosmtp.Backend) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := gosmtp.NewServer(backend)
	s.Domain = "mx.remote.test"
	s.AllowInsecureAuth = true
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { s.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// startServeSMTP runs `facteur serve` on db with the settings serve tests
// share — a spool and pickup socket of its own, Maildirs under mailRoot,
// hostname mx.example.test, the mail owner, the smtp listener, no DNS, a
// 1 s queue poll — followed by extra (more tables). It returns the SMTP
// listener's address once it accepts connections.
func startServeSMTP(t *testing.T, db *storetest.DB, mailRoot, extra string) string {
	t.Helper()
	uid, gid := dovecottest.MailOwner(t)
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("/tmp", "fserve") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	smtpAddr := freePort(t)
	conf := fmt.Sprintf(`database_url = %s
spool_dir = %s
mail_root = %s
hostname = "mx.example.test"
mail_owner = "%d:%d"
[listen]
smtp = %q
pickup = %s
[dns]
resolver = "none"
[queue]
poll_interval = "1s"
%s`, tomlQuote(db.URL), tomlQuote(filepath.Join(dir, "spool")), tomlQuote(mailRoot), uid, gid,
		smtpAddr, tomlQuote(filepath.Join(sockDir, "pickup.sock")), extra)
	startServe(t, dir, conf)
	waitListening(t, "the smtp listener", smtpAddr)
	return smtpAddr
}
