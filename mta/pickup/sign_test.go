package pickup_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/facteur/facteur/internal/sendmailcli"
	"github.com/facteur/facteur/mta/dkimsign"
	"github.com/facteur/facteur/mta/pickup"
	"github.com/facteur/facteur/store"
)

// delivered returns a queued message as delivery agents read it: the
// fields kept in queue_message.prepend, then the spool file.
func (e *env) delivered(id string) string {
	e.t.Helper()
	var prepend string
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT prepend FROM queue_message WHERE id = $1`, id).Scan(&prepend); err != nil {
		e.t.Fatal(err)
	}
	return prepend + e.body(id)
}

// DESIGN "Signing authority": a local user gets the DKIM signature of a
// hosted domain only for the From: addresses it may use as envelope
// sender (local_sender), so a web server's user cannot sign as a customer.
func TestLocalUserSignsOnlyAsPermitted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the client as nobody")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	key, err := dkimsign.Generate("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvDeps(t, nil, func(d *pickup.Deps) { d.Signer = dkimsign.New(d.Store, dkimsign.Options{}) })
	ctx := context.Background()
	if _, err := e.st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "shop.example", Selector: "s1", Algorithm: key.Algorithm,
		PrivateKey: key.PrivatePEM, PublicKey: key.PublicKey, Active: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.dir, 0o711); err != nil {
		t.Fatal(err)
	}
	exe := buildSendmail(t, e.dir)
	run := func(stdin string, args ...string) (int, string) {
		cmd := exec.Command(exe, args...)
		cmd.Dir = "/"
		cmd.Env = []string{"FACTEUR_PICKUP=" + e.sock, "PATH=/usr/bin:/bin"}
		cmd.Stdin = strings.NewReader(stdin)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), errb.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, errb.String()
	}
	verify := func(msg string) []*dkim.Verification {
		t.Helper()
		vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
			if name == "s1._domainkey.shop.example" {
				return []string{key.DNSRecord}, nil
			}
			return nil, errors.New("no such name")
		}})
		if err != nil {
			t.Fatal(err)
		}
		return vs
	}
	shopMail := "From: Orders <orders@shop.example>\nSubject: your order\n\nThanks.\n"

	// nobody has no grant for shop.example: its From: is refused, though
	// the envelope sender (nobody's own address) is fine.
	code, stderr := run(shopMail, "bob@example.com")
	if code != sendmailcli.ExNoPerm || !strings.Contains(stderr, "553 5.7.1 <orders@shop.example>") {
		t.Fatalf("From: orders@shop.example without a grant: exit %d, %q", code, stderr)
	}
	if n := len(e.queue()); n != 0 {
		t.Fatalf("%d queued after the refusal", n)
	}
	// Granted: queued and signed by shop.example.
	if _, err := e.st.Pool().Exec(ctx, `INSERT INTO local_sender (unix_user, sender) VALUES ('nobody', '@shop.example')`); err != nil {
		t.Fatal(err)
	}
	if code, stderr := run(shopMail, "bob@example.com"); code != 0 {
		t.Fatalf("granted: exit %d: %s", code, stderr)
	}
	q := e.queue()
	if len(q) != 1 {
		t.Fatalf("%d queued", len(q))
	}
	msg := e.delivered(q[0].id)
	vs := verify(msg)
	if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "shop.example" {
		t.Fatalf("verification %+v of\n%s", vs, msg)
	}
	// Root may send as anyone, and so sign: through SMTP (-bs) too.
	code, out, stderr := e.sendmail("HELO x\nMAIL FROM:<>\nRCPT TO:<bob@example.com>\nDATA\nFrom: sales@shop.example\nSubject: s\n\nhi\n.\nQUIT\n", "-bs")
	if code != 0 || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("-bs as root: exit %d %s:\n%s", code, stderr, out)
	}
	q = e.queue()
	if vs := verify(e.delivered(q[1].id)); len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("root's message: %+v", vs)
	}
}
