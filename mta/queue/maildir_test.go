package queue

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/maildir"
	"github.com/facteur/facteur/store"
)

// The manager with the real Maildir agent and mailboxes found through
// lookups: a mailbox recipient lands in new/, a recipient whose mailbox
// was deleted after queueing bounces (5.1.1) with a DSN.
func TestMaildirDeliveryThroughTheRealAgent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateMailbox(ctx, store.Mailbox{Address: "bob@example.com", Name: "Bob", Password: "{PLAIN}x", Active: true}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	mo := maildir.Options{Root: root, Hostname: "mx.test"}
	if os.Geteuid() == 0 {
		mo.UID, mo.GID = 65534, 65534 // nobody: never root
	}
	agent, err := maildir.New(mo)
	if err != nil {
		t.Fatal(err)
	}
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com", transport: "maildir"}, {addr: "gone@example.com", transport: "maildir"}}, msgOpts{})
	e.start(Options{Agents: map[string]deliver.Agent{"maildir": agent, "smtp": e.agent},
		Mailboxes: ResolverMailboxes{Resolver: e.res}})
	e.waitFor("the message to finish", 10*time.Second, func() bool { return e.queueEmpty() && len(e.agent.callsOf(KindDSN)) == 1 })

	files, _ := filepath.Glob(filepath.Join(root, "example.com", "bob", "new", "*"))
	if len(files) != 1 {
		t.Fatalf("new/ holds %d files, want 1", len(files))
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Delivered-To: bob@example.com") || !strings.Contains(string(b), "Hello "+id) {
		t.Errorf("delivered file:\n%s", b)
	}
	p := parseDSN(t, e.agent.callsOf(KindDSN)[0])
	if len(p.Recipients) != 1 || p.Recipients[0].FinalRecipient != "gone@example.com" || p.Recipients[0].Status.String() != "5.1.1" {
		t.Errorf("DSN recipients %+v", p.Recipients)
	}
	if got := e.logStatuses(id); len(got) != 2 || got[0] != "bob@example.com sent 2.0.0" && got[1] != "bob@example.com sent 2.0.0" {
		t.Errorf("delivery_log %v", got)
	}
}
