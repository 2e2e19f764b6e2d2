package durability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/test/harness"
)

// spoolFullCheck sends one message while the spool is full and reports
// whether MAIL already refused it; it fails t unless the refusal is
// 452 4.3.1, at MAIL or at the end of DATA, and nothing is left behind.
func spoolFullCheck(t *testing.T, s *harness.Stack, c *harness.Client, body string) (atMail bool) {
	t.Helper()
	code, text, err := c.Cmd("MAIL FROM:<someone@foreign.test>")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case code == 452 && strings.HasPrefix(text, "452 4.3.1"):
		c.MustCmd(t, "RSET", "250 ")
		return true
	case code != 250:
		t.Fatalf("MAIL with the spool full: %q, want 452 4.3.1 (or 250 and 452 4.3.1 at the end of DATA)", text)
	}
	c.MustCmd(t, "RCPT TO:<"+harness.Alice+">", "250 ")
	c.MustCmd(t, "DATA", "354 ")
	c.Write(body + ".\r\n")
	c.Expect(t, "452 4.3.1 ")
	if n := s.SpoolFiles(); n != 0 {
		t.Errorf("%d spool files left behind", n)
	}
	if n := s.Queued(); n != 0 {
		t.Errorf("%d messages queued", n)
	}
	return false
}

// noteMailCheck records where a full spool was refused, and fails t unless
// it was at MAIL (smtpd's Options.SpaceCheck, as serve wires it): a client
// must not send a whole message to learn that there is no room for it.
func noteMailCheck(t *testing.T, atMail bool, fig *harness.Figures) {
	t.Helper()
	if atMail {
		fig.Set("452 4.3.1 at", "MAIL")
		return
	}
	fig.Set("452 4.3.1 at", "end of DATA")
	t.Error("smtpd answered MAIL with 250 while the spool was full; want 452 4.3.1 at MAIL")
}

// TestSpoolFullGives452AndRecovers makes the spool's file system full
// through the fault hook (every new spool file fails with ENOSPC, and the
// free space smtpd's check reads is 0): the client gets 452 4.3.1 at MAIL,
// nothing is left, and mail is accepted again in the same session as soon
// as space returns.
func TestSpoolFullGives452AndRecovers(t *testing.T) {
	var full atomic.Bool
	var s *harness.Stack
	free := func() (uint64, error) {
		if full.Load() {
			return 0, nil
		}
		return s.Spool.Free()
	}
	s = harness.NewStack(t, harness.StackOptions{
		Smtpd: smtpd.Options{SpaceCheck: smtpd.FreeSpaceCheck(free, 1<<20)},
		Spool: spool.Options{Hooks: spool.Hooks{
			Before: func(step spool.Step, _ string) error {
				if full.Load() && step == spool.StepCreate {
					return syscall.ENOSPC
				}
				return nil
			}}}})
	c := s.Greeted(t, s.MX)
	c.MustCmd(t, "EHLO client.test", "250 ")
	full.Store(true)
	atMail := spoolFullCheck(t, s, c, harness.Message("someone@foreign.test", harness.Alice, "<full@client.test>", "full"))
	full.Store(false)
	if out, _, err := c.Send("someone@foreign.test", []string{harness.Alice},
		harness.Message("someone@foreign.test", harness.Alice, "<room@client.test>", "room again")); out != harness.Accepted {
		t.Fatalf("after space returned: %v", err)
	}
	var fig harness.Figures
	noteMailCheck(t, atMail, &fig)
	fig.Set("recovered", true)
	fig.Log(t, "spool full (hook)")
}

// TestSpoolOnFullTmpfs puts the spool on a small tmpfs (as root, when
// mount(2) is allowed; else the hook test above stands alone): below the
// spool's MinFree a new message is refused at MAIL (the stack wires smtpd's
// free-space check from MinFree, as serve does), a message larger than what is
// left fails half-written with a real ENOSPC, both with 452 4.3.1 and
// nothing left behind, and mail flows again once the filler is removed.
func TestSpoolOnFullTmpfs(t *testing.T) {
	harness.Long(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; TestSpoolFullGives452AndRecovers covers this through the hook")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs is not allowed here (%v: %s); the hook test covers a full spool", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	const minFree = 1 << 20
	s := harness.NewStack(t, harness.StackOptions{SpoolDir: filepath.Join(mnt, "spool"), Spool: spool.Options{MinFree: minFree}})
	filler := filepath.Join(mnt, "filler")
	fill := func(leave uint64) {
		t.Helper()
		os.Remove(filler)
		free, err := s.Spool.Free()
		if err != nil {
			t.Fatal(err)
		}
		if free <= leave {
			return
		}
		if err := os.WriteFile(filler, make([]byte, free-leave), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := s.Greeted(t, s.MX)
	c.MustCmd(t, "EHLO client.test", "250 ")
	var fig harness.Figures

	// Below MinFree: refused before a byte is written.
	fill(minFree / 2)
	atMail := spoolFullCheck(t, s, c, harness.Message("someone@foreign.test", harness.Alice, "<minfree@client.test>", "min free"))
	noteMailCheck(t, atMail, &fig)

	// Above MinFree, but the message does not fit: ENOSPC in the middle.
	fill(minFree + 256<<10)
	big := harness.Message("someone@foreign.test", harness.Alice, "<big@client.test>", "big") +
		strings.Repeat(strings.Repeat("x", 998)+"\r\n", 2500) // 2.5 MB
	if spoolFullCheck(t, s, c, big) {
		t.Log("the large message was refused at MAIL")
	}

	// Space returns.
	os.Remove(filler)
	for i := range 3 {
		if out, _, err := c.Send("someone@foreign.test", []string{harness.Alice},
			harness.Message("someone@foreign.test", harness.Alice, fmt.Sprintf("<after%d@client.test>", i), "after")); out != harness.Accepted {
			t.Fatalf("after space returned: %v", err)
		}
	}
	if out, _, err := c.Send("someone@foreign.test", []string{harness.Alice}, big); out != harness.Accepted {
		t.Fatalf("the large message after space returned: %v", err)
	}
	if n, _ := harness.CountFiles(t, filepath.Join(mnt, "spool", "incoming")); n != 0 {
		t.Errorf("%d temp files left in incoming/", n)
	}
	fig.Set("recovered", true)
	fig.Log(t, "spool full (tmpfs)")
}
