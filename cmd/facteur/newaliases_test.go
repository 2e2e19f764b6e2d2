package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/local"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/queue"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

const localHost = "mx.example.test"

func TestNewaliasesArgs(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"/usr/bin/newaliases"}, []string{"facteur", "newaliases", "--if-local"}},
		{[]string{"newaliases", "-v"}, []string{"facteur", "newaliases", "--if-local"}},
		{[]string{"newaliases", "-oA", "/etc/mail/aliases"}, []string{"facteur", "newaliases", "--if-local", "/etc/mail/aliases"}},
		{[]string{"newaliases", "-oAhash:/etc/aliases"}, []string{"facteur", "newaliases", "--if-local", "/etc/aliases"}},
		{[]string{"newaliases", "-C", "/etc/f.toml"}, []string{"facteur", "--config", "/etc/f.toml", "newaliases", "--if-local"}},
		{[]string{"newaliases", "-bp"}, nil},                                                              // mailq: the sendmail front end's
		{[]string{"/usr/sbin/sendmail", "-bi"}, nil},                                                      // sendmail -bi: the front end's
		{[]string{"facteur", "newaliases", "/x"}, nil},                                                    // the subcommand itself
		{[]string{"newaliases", "/etc/aliases"}, nil},                                                     // not a newaliases(1) argument
		{[]string{"newaliases", "-oA"}, nil},                                                              // missing value
		{[]string{"newaliases", "-C", "c", "-x"}, nil},                                                    // unknown option
		{[]string{"newaliases", "-oA/a", "-oA/b"}, []string{"facteur", "newaliases", "--if-local", "/b"}}, // the last wins
	} {
		got, ok := newaliasesArgs(tc.in)
		if ok != (tc.want != nil) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("newaliasesArgs(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

// aliasesV1 is the first version of the imported file: %[1]s is a
// directory for files.
const aliasesV1 = `# test aliases
postmaster: root
root: nobody
abuse: root
staff: nobody, Bob@Example.ORG,
	"|/bin/cat > /dev/null", %[1]s/staff.mbox, :include:%[1]s/staff.incl
old: nobody
Upper: \nobody
"bad name": nobody
broken line without a colon
`

// aliasRow is what the test reads of an alias.
type aliasRow struct {
	Destinations []string
	Source       *string
}

func aliasRows(t *testing.T, db *storetest.DB, domain string) map[string]aliasRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT local_part, destinations, source FROM alias WHERE domain = $1`, domain)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]aliasRow{}
	for rows.Next() {
		var name string
		var r aliasRow
		if err := rows.Scan(&name, &r.Destinations, &r.Source); err != nil {
			t.Fatal(err)
		}
		out[name] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeAliases(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestNewaliasesImportsAndReplaces(t *testing.T) {
	c := newDataCLI(t)
	c.a.cfg.Hostname = localHost
	dir := t.TempDir() // root's and 0700 when run as root: a trusted place
	file := filepath.Join(dir, "aliases")
	writeAliases(t, file, fmt.Sprintf(aliasesV1, dir), 0o644)
	trusted := os.Geteuid() == 0

	// The domain must exist and be local.
	if out, err, code := c.run("", "newaliases", file); code != exitFailure || !strings.Contains(fmt.Sprint(err), "--create-domain") {
		t.Fatalf("newaliases without the domain: status %d, %v %s", code, err, out)
	}
	c.ok(nil, "", "domain", "add", localHost)
	if _, err, code := c.run("", "newaliases", file); code != exitFailure || !strings.Contains(fmt.Sprint(err), "not marked local") {
		t.Fatalf("newaliases into a domain not marked local: status %d, %v", code, err)
	}
	c.ok(nil, "", "domain", "update", localHost, "--local")
	// An alias made with the CLI: newaliases leaves it alone.
	c.ok(nil, "", "alias", "add", "abuse@"+localHost, "nobody")
	c.ok(nil, "", "alias", "add", "cli-only@"+localHost, "nobody")

	var rep aliasImport
	c.ok(&rep, "", "--json", "newaliases", file)
	wantImported := []string{"postmaster@" + localHost, "root@" + localHost, "staff@" + localHost, "old@" + localHost, "upper@" + localHost}
	if !trusted {
		wantImported = []string{"postmaster@" + localHost, "root@" + localHost, "old@" + localHost, "upper@" + localHost}
	}
	if !reflect.DeepEqual(rep.Imported, wantImported) || rep.Trusted != trusted || rep.File != file || rep.Domain != localHost {
		t.Errorf("report: %+v", rep)
	}
	var skipped []string
	for _, s := range rep.Skipped {
		skipped = append(skipped, fmt.Sprintf("%d:%s", s.Line, s.Name))
	}
	wantSkipped := "[10: 9:bad name 4:abuse]"
	if !trusted {
		wantSkipped = "[10: 5:staff 9:bad name 4:abuse]"
	}
	if fmt.Sprint(skipped) != wantSkipped {
		t.Errorf("skipped %v, want %s: %+v", skipped, wantSkipped, rep.Skipped)
	}
	rows := aliasRows(t, c.db, localHost)
	if r := rows["abuse"]; r.Source != nil || !reflect.DeepEqual(r.Destinations, []string{"nobody"}) {
		t.Errorf("the CLI's alias was changed: %+v", r)
	}
	if r := rows["upper"]; r.Source == nil || *r.Source != file || !reflect.DeepEqual(r.Destinations, []string{"nobody"}) {
		t.Errorf("upper: %+v", r)
	}
	if trusted {
		want := []string{"nobody", "bob@example.org", "|/bin/cat > /dev/null", dir + "/staff.mbox", ":include:" + dir + "/staff.incl"}
		if r := rows["staff"]; !reflect.DeepEqual(r.Destinations, want) {
			t.Errorf("staff: %q, want %q", r.Destinations, want)
		}
	}

	// The imported aliases resolve through the real resolver, with the
	// system's users.
	st := store.New(c.db.Pool)
	res := lookups.New(st, lookups.Options{Hostname: localHost, LocalUser: lookups.SystemUser, CacheTTL: -1})
	ctx := context.Background()
	r, found, err := res.Resolve(ctx, "Upper@"+localHost)
	if err != nil || !found || len(r.Recipients) != 1 || r.Recipients[0].Class != lookups.ClassLocal ||
		r.Recipients[0].Address != "nobody@"+localHost || r.Recipients[0].Transport != "local" {
		t.Errorf("Resolve(upper) = %+v, %v, %v", r.Recipients, found, err)
	}
	if trusted {
		r, found, err = res.Resolve(ctx, "staff@"+localHost)
		var got []string
		for _, rc := range r.Recipients {
			got = append(got, rc.Class.String()+" "+rc.Address+" "+rc.Transport)
		}
		want := []string{"local nobody@" + localHost + " local", "remote bob@example.org smtp", "command |/bin/cat > /dev/null local",
			"file " + dir + "/staff.mbox local", "include :include:" + dir + "/staff.incl local"}
		if err != nil || !found || !reflect.DeepEqual(got, want) {
			t.Errorf("Resolve(staff) = %q, %v, %v; want %q", got, found, err, want)
		}
	}

	// Version 2: old is gone, root changes; abuse taken over.
	v2 := strings.Replace(strings.Replace(fmt.Sprintf(aliasesV1, dir), "old: nobody\n", "", 1), "root: nobody", "root: nobody, ops@example.org", 1)
	writeAliases(t, file, v2, 0o644)
	c.ok(&rep, "", "--json", "newaliases", "--take-over", file)
	if !reflect.DeepEqual(rep.Removed, []string{"old@" + localHost}) {
		t.Errorf("removed %v, want old@", rep.Removed)
	}
	rows = aliasRows(t, c.db, localHost)
	if _, ok := rows["old"]; ok {
		t.Error("old is still there")
	}
	if r := rows["root"]; !reflect.DeepEqual(r.Destinations, []string{"nobody", "ops@example.org"}) {
		t.Errorf("root: %q", r.Destinations)
	}
	if r := rows["abuse"]; r.Source == nil || !reflect.DeepEqual(r.Destinations, []string{"root"}) {
		t.Errorf("abuse not taken over: %+v", r)
	}
	if r := rows["cli-only"]; r.Source != nil {
		t.Errorf("an alias that is not in the file changed: %+v", r)
	}

	// A dry run changes nothing.
	writeAliases(t, file, "only: nobody\n", 0o644)
	c.ok(&rep, "", "--json", "newaliases", "--dry-run", file)
	if !rep.DryRun || len(rep.Removed) != 5 {
		t.Errorf("dry run report: %+v", rep)
	}
	if after := aliasRows(t, c.db, localHost); !reflect.DeepEqual(after, rows) {
		t.Errorf("a dry run changed the aliases:\n%v\n%v", rows, after)
	}

	// A file others may write: commands and files are not imported, and
	// the entries that had them leave (they came from this file).
	if trusted {
		writeAliases(t, file, v2, 0o666)
		c.ok(&rep, "", "--json", "newaliases", file)
		if rep.Trusted || !slices.Contains(rep.Removed, "staff@"+localHost) {
			t.Errorf("untrusted file: %+v", rep)
		}
		if _, ok := aliasRows(t, c.db, localHost)["staff"]; ok {
			t.Error("staff, with a command, was imported from a file others may write")
		}
	}

	// --create-domain.
	c.ok(&rep, "", "--json", "newaliases", "--domain", "other.example.test", "--create-domain", file)
	var local bool
	if err := c.db.Pool.QueryRow(ctx, `SELECT local FROM domain WHERE name = 'other.example.test'`).Scan(&local); err != nil || !local || !rep.DomainCreated {
		t.Errorf("--create-domain: local %v, %v, %+v", local, err, rep)
	}
	// The same file into another domain leaves the first domain's import.
	if n := len(aliasRows(t, c.db, localHost)); n < 4 {
		t.Errorf("importing into another domain removed aliases of %s: %d left", localHost, n)
	}
}

// buildFacteur builds the facteur binary into a directory everyone can
// read and traverse (the local agent runs it as other users).
func buildFacteur(t *testing.T) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "facteur")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir, exe
}

// TestNewaliasesThroughSymlink runs newaliases(1) as package scripts do: a
// symbolic link named newaliases to the facteur binary.
func TestNewaliasesThroughSymlink(t *testing.T) {
	db := storetest.New(t)
	dir, exe := buildFacteur(t)
	link := filepath.Join(dir, "newaliases")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "facteur.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("database_url = %s\nhostname = %q\n", tomlQuote(db.URL), localHost)), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "aliases")
	writeAliases(t, file, "root: nobody, ops@example.org\npostmaster: root\n", 0o644)
	run := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(link, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "FACTEUR_CONFIG="+cfg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String()
	}
	// Not a local domain of facteur: nothing to do, and package scripts
	// must not fail.
	if code, out := run("-oA", file); code != 0 || !strings.Contains(out, "not a local domain") {
		t.Fatalf("newaliases without a local domain: exit %d: %s", code, out)
	}
	if n := len(aliasRows(t, db, localHost)); n != 0 {
		t.Fatalf("%d aliases imported without a local domain", n)
	}
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO domain (name, local) VALUES ($1, true)`, localHost); err != nil {
		t.Fatal(err)
	}
	code, out := run("-C", cfg, "-oAhash:"+file)
	if code != 0 || !strings.Contains(out, "imported 2 aliases from "+file) {
		t.Fatalf("newaliases -oA: exit %d: %s", code, out)
	}
	rows := aliasRows(t, db, localHost)
	if r := rows["root"]; r.Source == nil || *r.Source != file || !reflect.DeepEqual(r.Destinations, []string{"nobody", "ops@example.org"}) {
		t.Errorf("root: %+v", r)
	}
	// A missing file is an error, as for sendmail's newaliases.
	if code, out := run("-oA", filepath.Join(dir, "missing")); code == 0 {
		t.Errorf("newaliases with a missing file: exit 0: %s", out)
	}
}

// sysUser is a throwaway system user.
type sysUser struct {
	name     string
	uid, gid int
	home     string
}

var useraddMu sync.Mutex

func runUseradd(args ...string) ([]byte, error) {
	useraddMu.Lock()
	defer useraddMu.Unlock()
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		out, err = exec.Command(args[0], args[1:]...).CombinedOutput()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "lock") {
			return out, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out, err
}

// newSysUser creates a user with its home under base; the test needs root
// (and fails without it when FACTEUR_REQUIRE_PEERS=1).
func newSysUser(t *testing.T, base string) sysUser {
	t.Helper()
	b := make([]byte, 5)
	rand.Read(b)
	name := fmt.Sprintf("ft%x", b)
	home := filepath.Join(base, name)
	if out, err := runUseradd("useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", "--user-group", name); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := runUseradd("userdel", name); err != nil {
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

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
		t.Fatal("this test delivers as system users and needs root (FACTEUR_REQUIRE_PEERS=1)")
	}
	t.Skip("this test delivers as system users and needs root")
}

func ownerOf(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// TestLocalDeliveryEndToEnd runs the real path: /etc/aliases-format file
// imported by newaliases, a message queued by cleanup for the alias,
// delivered by the queue manager through the local agent and its helper
// (the built facteur binary run as each user): to a local user's mailbox
// in the spool, through that user's .forward to another local user (the
// copy re-enters cleanup and the queue), and to a command and a file of the
// alias, which run as nobody, never root.
func TestLocalDeliveryEndToEnd(t *testing.T) {
	needRoot(t)
	c := newDataCLI(t)
	c.a.cfg.Hostname = localHost
	dir, exe := buildFacteur(t)
	out := filepath.Join(dir, "out")
	mailSpool := filepath.Join(dir, "mail")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{out, 0o1777}, {mailSpool, 0o2775}} {
		if err := os.Mkdir(d.path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	if g, err := user.LookupGroup("mail"); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(mailSpool, 0, gid); err != nil {
			t.Fatal(err)
		}
	}
	u := newSysUser(t, dir)
	v := newSysUser(t, dir)
	nob, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}

	aliasDir := t.TempDir() // root's, 0700
	aliases := filepath.Join(aliasDir, "aliases")
	writeAliases(t, aliases, fmt.Sprintf("team: %s, \"|id -u > %s/alias.uid; cat > %s/alias.msg\", %s/alias.mbox\n",
		u.name, out, out, out), 0o644)
	var rep aliasImport
	c.ok(&rep, "", "--json", "newaliases", "--create-domain", aliases)
	if len(rep.Imported) != 1 || !rep.Trusted {
		t.Fatalf("import: %+v", rep)
	}
	// u forwards to v and keeps a copy.
	fwd := filepath.Join(u.home, ".forward")
	if err := os.WriteFile(fwd, []byte(v.name+"\n\\"+u.name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(fwd, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	st := store.New(c.db.Pool)
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := lookups.New(st, lookups.Options{Hostname: localHost, LocalUser: lookups.SystemUser, CacheTTL: -1})
	var m *queue.Manager
	cl := cleanup.New(st, sp, res, cleanup.Options{Hostname: localHost, Node: "n1", Wake: func() { m.Wake() }}, log)
	agent, err := local.New(local.Options{MailSpoolDir: mailSpool, Helper: []string{exe, local.HelperCommand},
		Hostname: localHost, LocalDomain: localHost, LockDelay: 20 * time.Millisecond, Timeout: 30 * time.Second}, cl)
	if err != nil {
		t.Fatal(err)
	}
	m = queue.New(st, sp, queue.Options{Node: "n1", Hostname: localHost, PollInterval: 200 * time.Millisecond, Log: log,
		Agents: map[string]deliver.Agent{"local": agent},
		Submitter: &queue.StoreSubmitter{Store: st, Spool: sp, Resolver: res, Node: "n1", Hostname: localHost,
			Wake: func() { m.Wake() }, Log: log}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("queue manager: %v", err)
		}
	})

	body := "From: Alice <alice@example.net>\r\nTo: team@" + localHost + "\r\nSubject: end to end\r\n" +
		"Message-ID: <e2e@example.net>\r\n\r\nFrom the team.\r\n"
	id, err := cl.Enqueue(ctx, &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "alice@example.net", Recipients: []envelope.Recipient{{Address: "team@" + localHost}}},
		Client:   cleanup.Client{Addr: "192.0.2.1", Helo: "client.example", Protocol: "ESMTP"},
	}, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}

	uBox, vBox := filepath.Join(mailSpool, u.name), filepath.Join(mailSpool, v.name)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, e1 := os.Stat(vBox)
		_, e2 := os.Stat(filepath.Join(out, "alias.mbox"))
		_, e3 := os.Stat(uBox)
		_, e4 := os.Stat(filepath.Join(out, "alias.uid"))
		if e1 == nil && e2 == nil && e3 == nil && e4 == nil {
			break
		}
		if time.Now().After(deadline) {
			var logRows []string
			rows, _ := c.db.Pool.Query(context.Background(), `SELECT recipient || ' ' || status || ' ' || reply FROM delivery_log`)
			for rows != nil && rows.Next() {
				var s string
				rows.Scan(&s)
				logRows = append(logRows, s)
			}
			t.Fatalf("queue %s not delivered after 60 s (%v %v %v %v); delivery_log: %q", id, e1, e2, e3, e4, logRows)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the helpers' writes settle before reading

	if got := strings.TrimSpace(readTestFile(t, filepath.Join(out, "alias.uid"))); got != nob.Uid || got == "0" {
		t.Errorf("the alias's command ran as uid %s, want nobody's %s", got, nob.Uid)
	}
	if uid := ownerOf(t, filepath.Join(out, "alias.mbox")); strconv.Itoa(uid) != nob.Uid {
		t.Errorf("the alias's file was written by uid %d, want nobody's %s", uid, nob.Uid)
	}
	if m := readTestFile(t, filepath.Join(out, "alias.msg")); !strings.Contains(m, "X-Original-To: team@"+localHost+"\n") {
		t.Errorf("the command's input:\n%s", m)
	}
	if ownerOf(t, uBox) != u.uid || ownerOf(t, vBox) != v.uid {
		t.Errorf("mailboxes owned by %d and %d, want %d and %d", ownerOf(t, uBox), ownerOf(t, vBox), u.uid, v.uid)
	}
	if m := readTestFile(t, uBox); !strings.HasPrefix(m, "From alice@example.net ") || !strings.Contains(m, "\n>From the team.\n") {
		t.Errorf("%s's mailbox:\n%s", u.name, m)
	}
	if m := readTestFile(t, vBox); !strings.Contains(m, "Delivered-To: "+v.name+"@"+localHost+"\n") ||
		!strings.Contains(m, "Delivered-To: "+u.name+"@"+localHost+"\n") || !strings.Contains(m, "Subject: end to end\n") {
		t.Errorf("%s's mailbox (forwarded by %s):\n%s", v.name, u.name, m)
	}
}

func readTestFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
