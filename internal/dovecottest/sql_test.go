package dovecottest_test

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/lmtp"
	"github.com/facteur/facteur/mta/deliver/maildir"
	"github.com/facteur/facteur/pfaimport"
	"github.com/facteur/facteur/pfaimport/pfaimporttest"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

func ptr[T any](v T) *T { return &v }

func message(sender, subject string) *deliver.Message {
	body := "From: <" + sender + ">\r\nTo: <someone@example.org>\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.net>\r\n\r\n" +
		strings.Repeat("Some text, so that the message has a size worth counting.\r\n", 40)
	return &deliver.Message{
		QueueID: "T" + strconv.FormatInt(time.Now().UnixNano(), 36), Sender: sender,
		Size: int64(len(body)), ArrivedAt: time.Now(), BodyType: "7BIT", Kind: "mail",
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// TestDovecotSharesTheDatabase runs Dovecot with docs/dovecot against
// facteur's tables: logins with facteur-made and PostfixAdmin-style hashes
// and app passwords, refusals for inactive mailboxes and domains, mail from
// facteur's maildir and LMTP agents over IMAP, quota limits from the
// userdb, and usage exported into quota_usage going down after an expunge.
func TestDovecotSharesTheDatabase(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx, cancel := context.WithTimeout(store.WithActor(context.Background(), "test"), 2*time.Minute)
	defer cancel()

	cheap, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	sha := passwd.CheapOptions()
	sha.Scheme = passwd.SchemeSHA512Crypt
	shaHasher, err := passwd.New(sha)
	if err != nil {
		t.Fatal(err)
	}
	hash := func(h *passwd.Hasher, pw string) string {
		t.Helper()
		s, err := h.Hash(pw)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	for _, d := range []store.Domain{{Name: "example.org", Active: true}, {Name: "closed.example", Active: false}} {
		if _, err := st.CreateDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// bob's hash is what PostfixAdmin writes by default: a bare $6$ string.
	bobHash := strings.TrimPrefix(hash(shaHasher, "bob-secret"), "{SHA512-CRYPT}")
	if !strings.HasPrefix(bobHash, "$6$") {
		t.Fatalf("not a bare SHA512-CRYPT hash: %q", bobHash)
	}
	for _, m := range []store.Mailbox{
		{Address: "alice@example.org", Password: "{PLAIN}placeholder", QuotaBytes: ptr(int64(10 << 20)), Active: true},
		{Address: "bob@example.org", Password: bobHash, Maildir: "example.org/bob.maildir/", Active: true},
		{Address: "carol@example.org", Password: hash(cheap, "carol-secret"), Active: false},
		{Address: "dave@closed.example", Password: hash(cheap, "dave-secret"), Active: true},
		{Address: "small@example.org", Password: hash(cheap, "small-secret"), QuotaBytes: ptr(int64(1024)), Active: true},
	} {
		if _, err := st.CreateMailbox(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// What `facteur mailbox passwd` does: hash with lookups/passwd (ARGON2ID)
	// and store it.
	if err := st.SetMailboxPassword(ctx, "alice@example.org", hash(cheap, "alice-secret")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []store.AppPassword{
		{Mailbox: "alice@example.org", Name: "Phone", Password: hash(cheap, "phone-secret"), Active: true},
		{Mailbox: "alice@example.org", Name: "old", Password: hash(cheap, "old-secret"), Active: true,
			ExpiresAt: ptr(time.Now().Add(-time.Hour))},
		{Mailbox: "alice@example.org", Name: "off", Password: hash(cheap, "off-secret"), Active: false},
		{Mailbox: "carol@example.org", Name: "phone", Password: hash(cheap, "carol-phone"), Active: true},
	} {
		if _, err := st.CreateAppPassword(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	srv := dovecottest.StartSQL(t, dovecottest.SQLOptions{DatabaseURL: db.URL})
	// The configuration parses without a warning (an unquoted '#' would be
	// a comment, a misspelt setting an error).
	if out, err := exec.CommandContext(ctx, "doveconf", "-c", srv.Config, "-n").CombinedOutput(); err != nil ||
		strings.Contains(strings.ToLower(string(out)), "warning") {
		t.Errorf("doveconf -n: %v\n%s", err, out)
	}

	t.Run("logins", func(t *testing.T) {
		for _, c := range []struct {
			login, password string
			ok              bool
		}{
			{"alice@example.org", "alice-secret", true},   // ARGON2ID, as facteur writes it
			{"Alice@Example.ORG", "alice-secret", true},   // logins are lower-cased
			{"bob@example.org", "bob-secret", true},       // bare $6$, read as CRYPT
			{"alice@example.org", "bob-secret", false},    // wrong password
			{"carol@example.org", "carol-secret", false},  // inactive mailbox
			{"dave@closed.example", "dave-secret", false}, // inactive domain
			{"nobody@example.org", "x", false},
			{"alice@example.org#phone", "phone-secret", true}, // app password
			{"alice@example.org#PHONE", "phone-secret", true}, // app names are case-insensitive
			{"alice@example.org", "phone-secret", false},      // app passwords need the app login
			{"alice@example.org#phone", "alice-secret", false},
			{"alice@example.org#old", "old-secret", false},    // expired
			{"alice@example.org#off", "off-secret", false},    // inactive
			{"carol@example.org#phone", "carol-phone", false}, // inactive mailbox
		} {
			is, err := srv.Login(ctx, c.login, c.password)
			if c.ok && err != nil {
				t.Errorf("login %s: %v", c.login, err)
			}
			if !c.ok && err == nil {
				t.Errorf("login %s with %s succeeded; want refused", c.login, c.password)
			}
			if err == nil {
				is.Close()
			}
		}
		if t.Failed() {
			t.Log(srv.Log())
		}
	})

	t.Run("userdb", func(t *testing.T) {
		out, err := srv.Doveadm(ctx, "user", "alice@example.org")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"home\t" + srv.MailRoot + "/example.org/alice\n",
			"mail\tmaildir:" + srv.MailRoot + "/example.org/alice\n",
			"uid\t" + strconv.Itoa(srv.UID) + "\n", "gid\t" + strconv.Itoa(srv.GID) + "\n",
			"quota_rule\t*:bytes=10485760\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("doveadm user alice: no %q in\n%s", want, out)
			}
		}
		out, err = srv.Doveadm(ctx, "user", "bob@example.org")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "quota_rule") || !strings.Contains(out, "/example.org/bob.maildir\n") {
			t.Errorf("doveadm user bob (no quota, own maildir):\n%s", out)
		}
		if out, err := srv.Doveadm(ctx, "user", "carol@example.org"); err == nil {
			t.Errorf("doveadm user carol (inactive) succeeded:\n%s", out)
		}
		out, err = srv.Doveadm(ctx, "user", "*")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(out)
		sort.Strings(got)
		if strings.Join(got, " ") != "alice@example.org bob@example.org small@example.org" {
			t.Errorf("iterate_query lists %v", got)
		}
	})

	// Mail from facteur: the maildir agent writes mailbox.maildir under the
	// mail root, with Dovecot's usage (quota_usage) as its quota source;
	// the LMTP agent talks to the facteur-lmtp listener.
	usage := func(addr string) (store.QuotaUsage, bool) {
		q, err := st.GetQuotaUsage(ctx, addr)
		if err != nil {
			return q, false
		}
		return q, true
	}
	md, err := maildir.New(maildir.Options{Root: srv.MailRoot, UID: srv.UID, GID: srv.GID, Hostname: "mx.example",
		QuotaSource: maildir.UsageFunc(func(ctx context.Context, addr string) (int64, int64, bool, error) {
			q, ok := usage(addr)
			return q.Bytes, q.Messages, ok, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := st.GetMailbox(ctx, "alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	res := md.Deliver(ctx, "", message("x@example.net", "by maildir"), []deliver.Recipient{
		{Address: alice.Address, Orig: alice.Address, Mailbox: &deliver.Mailbox{Maildir: alice.Maildir, QuotaBytes: alice.QuotaBytes}}})
	if res[0].Status != deliver.Delivered {
		t.Fatalf("maildir agent: %v %s", res[0].Status, res[0].Reply)
	}
	la, err := lmtp.New(lmtp.Options{LocalName: "mx.example"})
	if err != nil {
		t.Fatal(err)
	}
	rc := func(a string) deliver.Recipient { return deliver.Recipient{Address: a, Orig: a} }
	res = la.Deliver(ctx, "unix:"+srv.LMTPSocket, message("y@example.net", "by lmtp"),
		[]deliver.Recipient{rc("alice@example.org"), rc("carol@example.org"), rc("small@example.org"), rc("bob@example.org")})
	for i, want := range []struct {
		st   deliver.Status
		code int
	}{{deliver.Delivered, 250}, {deliver.Bounced, 550}, {deliver.Bounced, 552}, {deliver.Delivered, 250}} {
		if res[i].Status != want.st || res[i].Reply.Code != want.code {
			t.Errorf("lmtp recipient %d: %v %s; want %v %d", i, res[i].Status, res[i].Reply, want.st, want.code)
		}
	}

	// Both messages over IMAP, through the app password as well.
	for _, login := range [][2]string{{"alice@example.org", "alice-secret"}, {"alice@example.org#phone", "phone-secret"}} {
		msgs, err := srv.Fetch(ctx, login[0], login[1])
		if err != nil {
			t.Fatalf("fetch as %s: %v\n%s", login[0], err, srv.Log())
		}
		if len(msgs) != 2 || !strings.Contains(string(msgs[0]), "Subject: by maildir") ||
			!strings.Contains(string(msgs[1]), "Subject: by lmtp") {
			t.Fatalf("as %s, INBOX holds %d messages:\n%q", login[0], len(msgs), msgs)
		}
	}

	// Quota: the limit from quota_bytes, usage counted by Dovecot.
	is, err := srv.Login(ctx, "alice@example.org", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	untagged, err := is.Cmd("GETQUOTAROOT INBOX")
	if err != nil {
		t.Fatal(err)
	}
	storageRE := regexp.MustCompile(`\* QUOTA "User quota" \(.*STORAGE (\d+) 10240\b`)
	var before int
	for _, u := range untagged {
		if m := storageRE.FindStringSubmatch(u); m != nil {
			before, _ = strconv.Atoi(m[1])
		}
	}
	if before == 0 {
		t.Fatalf("GETQUOTAROOT: want STORAGE <used> 10240 (KiB), got %q", untagged)
	}
	out, err := srv.Doveadm(ctx, "quota", "get", "-u", "alice@example.org")
	if err != nil || !regexp.MustCompile(`STORAGE\s+\d+\s+10240\s`).MatchString(out) ||
		!regexp.MustCompile(`MESSAGE\s+2\s`).MatchString(out) {
		t.Errorf("doveadm quota get: %v\n%s", err, out)
	}

	// quota_clone exported the usage into quota_usage ...
	waitUsage := func(what string, ok func(q store.QuotaUsage) bool) store.QuotaUsage {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			q, found := usage("alice@example.org")
			if found && ok(q) {
				return q
			}
			if time.Now().After(deadline) {
				t.Fatalf("quota_usage of alice: %+v (found %v); want %s\n%s", q, found, what, srv.Log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	q1 := waitUsage("2 messages", func(q store.QuotaUsage) bool { return q.Messages == 2 && q.Bytes > 0 })

	// ... and it goes down after an IMAP expunge.
	for _, c := range []string{"SELECT INBOX", "STORE 1 +FLAGS.SILENT (\\Deleted)", "EXPUNGE"} {
		if _, err := is.Cmd("%s", c); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
	}
	is.Close()
	q2 := waitUsage("1 message", func(q store.QuotaUsage) bool { return q.Messages == 1 })
	if q2.Bytes >= q1.Bytes || q2.Bytes <= 0 {
		t.Errorf("quota_usage bytes %d after the expunge; was %d", q2.Bytes, q1.Bytes)
	}
	if !q2.UpdatedAt.After(q1.UpdatedAt) {
		t.Errorf("quota_usage.updated_at %v not after %v", q2.UpdatedAt, q1.UpdatedAt)
	}
}

// TestDovecotLogsInImportedUsers imports the PostfixAdmin fixture and logs
// in over IMAP with the passwords of several PostfixAdmin `encrypt`
// settings, as the importer rewrote them ({SCHEME} added or renamed):
// Dovecot verifies what facteur imported, even the schemes facteur itself
// cannot (DES crypt, CRAM-MD5).
func TestDovecotLogsInImportedUsers(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, err := pgx.Connect(ctx, pfaimporttest.Load(t, "../../testdata/postfixadmin"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	if _, err := pfaimport.Import(ctx, src, st, pfaimport.Options{Apply: true}); err != nil {
		t.Fatal(err)
	}
	srv := dovecottest.StartSQL(t, dovecottest.SQLOptions{DatabaseURL: db.URL})
	for _, c := range []struct {
		login string
		ok    bool
	}{
		{"alice@example.org", true},  // md5crypt
		{"bob@free.example", true},   // php_crypt:SHA512, bare $6$
		{"carol@example.org", true},  // php_crypt:BLOWFISH
		{"erin@example.org", true},   // md5
		{"frank@example.org", true},  // cleartext
		{"grace@example.org", true},  // mysql_encrypt: DES crypt
		{"niaj@example.org", true},   // dovecot:CRAM-MD5
		{"olivia@example.org", true}, // sha512.b64
		{"peggy@example.org", true},  // authlib md5raw
		{"rupert@example.org", true}, // authlib md5
		{"trent@example.org", false}, // inactive mailbox
		{"walter@limited.example", false},
	} {
		local, _, _ := strings.Cut(c.login, "@")
		pw := "pw-" + local
		if local == "walter" {
			pw = "pw-alice"
		}
		is, err := srv.Login(ctx, c.login, pw)
		if err == nil {
			is.Close()
		}
		if (err == nil) != c.ok {
			t.Errorf("login %s: %v; want ok %v", c.login, err, c.ok)
		}
	}
	if t.Failed() {
		t.Log(srv.Log())
	}
}
