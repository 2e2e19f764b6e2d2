package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store/storetest"
)

// dataCLI runs facteur commands in process against a fresh database, with
// cheap password hashing.
type dataCLI struct {
	t  *testing.T
	db *storetest.DB
	a  *app
}

func newDataCLI(t *testing.T) *dataCLI {
	t.Helper()
	db := storetest.New(t)
	cheap := passwd.CheapOptions()
	cfg := &Config{DatabaseURL: db.URL, Passwords: PasswordsConfig{
		Scheme: cheap.Scheme, Argon2Memory: cheap.Argon2Memory, Argon2Time: cheap.Argon2Time,
		Argon2Threads: cheap.Argon2Threads, BcryptCost: cheap.BcryptCost,
	}}
	cfg.applyDefaults()
	a := &app{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(a.close)
	return &dataCLI{t: t, db: db, a: a}
}

// run executes one command line with stdin and returns its standard output,
// its error and the exit status run() would give.
func (c *dataCLI) run(stdin string, args ...string) (string, error, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := newRoot(c.a)
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(ctx)
	code := exitOK
	if err != nil {
		code = exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return out.String(), err, code
}

// ok runs a command that must succeed and decodes its --json output into v
// (when v is not nil).
func (c *dataCLI) ok(v any, stdin string, args ...string) string {
	c.t.Helper()
	out, err, code := c.run(stdin, args...)
	if err != nil || code != 0 {
		c.t.Fatalf("facteur %s: status %d, error %v", strings.Join(args, " "), code, err)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			c.t.Fatalf("facteur %s: output is not the JSON expected: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return out
}

// fails runs a command that must fail with exit status 1 and a one-line
// error containing want.
func (c *dataCLI) fails(want, stdin string, args ...string) {
	c.t.Helper()
	out, err, code := c.run(stdin, args...)
	if err == nil || code != exitFailure {
		c.t.Fatalf("facteur %s: status %d, error %v, want status 1\n%s", strings.Join(args, " "), code, err, out)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, want) {
		c.t.Fatalf("facteur %s: error %q, want one line containing %q", strings.Join(args, " "), msg, want)
	}
}

// count returns the result of a counting query.
func (c *dataCLI) count(sql string, args ...any) int {
	c.t.Helper()
	var n int
	if err := c.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		c.t.Fatal(err)
	}
	return n
}

func TestCLIDomainRoundTrip(t *testing.T) {
	c := newDataCLI(t)
	var d map[string]any
	c.ok(&d, "", "--json", "domain", "add", "Bücher.Example.", "--max-mailboxes", "2", "--default-quota", "1G",
		"--description", "books")
	if d["name"] != "xn--bcher-kva.example" || d["max_mailboxes"] != 2.0 || d["default_quota_bytes"] != float64(1<<30) ||
		d["max_aliases"] != nil || d["mailboxes"] != 0.0 || d["active"] != true || d["description"] != "books" {
		t.Fatalf("domain add printed %v", d)
	}
	c.fails("already exists", "", "domain", "add", "xn--bcher-kva.example")
	c.fails("domain", "", "domain", "add", "not a domain")
	c.fails("--max-quota", "", "domain", "add", "x.test", "--max-quota", "lots")
	if n := c.count(`SELECT count(*) FROM domain`); n != 1 {
		t.Fatalf("%d domains after refused adds", n)
	}

	c.ok(nil, "", "domain", "add", "other.test", "--local", "--active=false")
	var list []map[string]any
	c.ok(&list, "", "--json", "domain", "list")
	if len(list) != 2 || list[0]["name"] != "other.test" || list[0]["local"] != true || list[0]["active"] != false ||
		list[1]["name"] != "xn--bcher-kva.example" {
		t.Fatalf("domain list printed %v", list)
	}
	c.ok(&list, "", "--json", "domain", "list", "--search", "BCHER")
	if len(list) != 1 {
		t.Fatalf("domain list --search printed %v", list)
	}
	human := c.ok(nil, "", "domain", "list")
	lines := strings.Split(strings.TrimSpace(human), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "DOMAIN ") ||
		strings.Index(lines[0], "ACTIVE") != strings.Index(lines[1], "no") {
		t.Fatalf("human domain list not aligned:\n%s", human)
	}

	c.ok(&d, "", "--json", "domain", "update", "bücher.example", "--max-mailboxes", "unlimited", "--max-aliases", "5",
		"--transport", "lmtp:unix:/run/dovecot/lmtp")
	if d["max_mailboxes"] != nil || d["max_aliases"] != 5.0 || d["transport"] != "lmtp:unix:/run/dovecot/lmtp" ||
		d["default_quota_bytes"] != float64(1<<30) {
		t.Fatalf("domain update printed %v", d)
	}
	c.fails("nothing to change", "", "domain", "update", "bücher.example")
	c.fails("not found", "", "domain", "update", "nowhere.test", "--description", "x")
	c.ok(&d, "", "--json", "domain", "show", "XN--BCHER-KVA.example")
	if d["name"] != "xn--bcher-kva.example" || d["transport"] != "lmtp:unix:/run/dovecot/lmtp" {
		t.Fatalf("domain show printed %v", d)
	}
	if out := c.ok(nil, "", "domain", "show", "bücher.example"); !strings.Contains(out, "unicode:") ||
		!strings.Contains(out, "bücher.example") {
		t.Fatalf("human domain show lacks the Unicode name:\n%s", out)
	}

	// A domain with mailboxes needs --force.
	c.ok(nil, "pw\n", "mailbox", "add", "a@bücher.example", "--password-stdin")
	c.fails("--force", "", "domain", "rm", "bücher.example")
	var del map[string]string
	c.ok(&del, "", "--json", "domain", "rm", "bücher.example", "--force")
	if del["deleted"] != "domain" || del["key"] != "xn--bcher-kva.example" {
		t.Fatalf("domain rm printed %v", del)
	}
	if n := c.count(`SELECT count(*) FROM mailbox`); n != 0 {
		t.Fatalf("%d mailboxes left after domain rm", n)
	}
	c.fails("not found", "", "domain", "show", "bücher.example")
	c.fails("not found", "", "domain", "rm", "bücher.example")

	// Every write was audited as the CLI's operator.
	if n := c.count(`SELECT count(*) FROM audit_log WHERE actor NOT LIKE 'cli:%'`); n != 0 {
		t.Fatalf("%d audit rows without a cli: actor", n)
	}
	if n := c.count(`SELECT count(*) FROM audit_log WHERE actor = $1`, dataActor()); n == 0 {
		t.Fatal("no audit row names the CLI's operator")
	}
}

func TestCLIMailboxRoundTrip(t *testing.T) {
	c := newDataCLI(t)
	c.ok(nil, "", "domain", "add", "bücher.example", "--max-mailboxes", "2", "--max-quota", "1G", "--default-quota", "128MiB")
	var m map[string]any
	c.ok(&m, "s3cret\n", "--json", "mailbox", "add", "John@Bücher.Example", "--name", "John", "--quota", "512M", "--password-stdin")
	if m["address"] != "john@xn--bcher-kva.example" || m["name"] != "John" || m["quota_bytes"] != float64(512<<20) ||
		m["maildir"] != "xn--bcher-kva.example/john/" || m["active"] != true {
		t.Fatalf("mailbox add printed %v", m)
	}
	if _, ok := m["password"]; ok {
		t.Fatal("mailbox add printed the password hash")
	}
	h, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	verify := func(pw string) bool {
		var hash string
		if err := c.db.Pool.QueryRow(context.Background(), `SELECT password FROM mailbox WHERE address = 'john@xn--bcher-kva.example'`).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(hash, "{ARGON2ID}") {
			t.Fatalf("stored hash %q", hash)
		}
		ok, _, err := h.Verify(hash, pw)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !verify("s3cret") || verify("wrong") {
		t.Fatal("the stored hash does not verify the password given")
	}

	// Bad input: one line, status 1, nothing written.
	c.fails("address", "pw\n", "mailbox", "add", "not an address", "--password-stdin")
	c.fails("domain nowhere.test does not exist", "pw\n", "mailbox", "add", "x@nowhere.test", "--password-stdin")
	c.fails("limit", "pw\n", "mailbox", "add", "big@bücher.example", "--quota", "2G", "--password-stdin")
	c.fails("empty password", "\n", "mailbox", "add", "x@bücher.example", "--password-stdin")
	c.fails("--password-stdin", "pw\n", "mailbox", "add", "x@bücher.example")
	c.fails("already exists", "pw\n", "mailbox", "add", "JOHN@xn--bcher-kva.example", "--password-stdin")
	c.ok(nil, "pw\n", "mailbox", "add", "jane@bücher.example", "--password-stdin")
	c.fails("at most 2 mailboxes", "pw\n", "mailbox", "add", "third@bücher.example", "--password-stdin")
	if n := c.count(`SELECT count(*) FROM mailbox`); n != 2 {
		t.Fatalf("%d mailboxes, want 2", n)
	}

	var list []map[string]any
	c.ok(&list, "", "--json", "mailbox", "list", "--domain", "Bücher.example")
	if len(list) != 2 || list[0]["address"] != "jane@xn--bcher-kva.example" || list[1]["address"] != "john@xn--bcher-kva.example" {
		t.Fatalf("mailbox list printed %v", list)
	}
	if list[0]["quota_bytes"] != float64(128<<20) {
		t.Fatalf("jane got quota %v, want the domain's default", list[0]["quota_bytes"])
	}
	c.ok(&list, "", "--json", "mailbox", "list", "--search", "john", "--limit", "1")
	if len(list) != 1 {
		t.Fatalf("mailbox list --search printed %v", list)
	}

	c.ok(&m, "", "--json", "mailbox", "update", "john@bücher.example", "--quota", "256M", "--active=false", "--transport", "smtp:[backend.test]")
	if m["quota_bytes"] != float64(256<<20) || m["active"] != false || m["transport"] != "smtp:[backend.test]" || m["name"] != "John" {
		t.Fatalf("mailbox update printed %v", m)
	}
	c.fails("limit", "", "mailbox", "update", "john@bücher.example", "--quota", "unlimited")
	c.fails("nothing to change", "", "mailbox", "update", "john@bücher.example")
	c.ok(&m, "", "--json", "mailbox", "show", "JOHN@bücher.example")
	if m["quota_bytes"] != float64(256<<20) || m["used_bytes"] != 0.0 {
		t.Fatalf("mailbox show printed %v", m)
	}

	c.ok(nil, "n3w-pass\n", "mailbox", "passwd", "john@bücher.example", "--password-stdin")
	if !verify("n3w-pass") || verify("s3cret") {
		t.Fatal("mailbox passwd did not change the password")
	}
	c.fails("not found", "x\n", "mailbox", "passwd", "nobody@bücher.example", "--password-stdin")

	var del map[string]string
	c.ok(&del, "", "--json", "mailbox", "rm", "john@bücher.example")
	if del["key"] != "john@xn--bcher-kva.example" {
		t.Fatalf("mailbox rm printed %v", del)
	}
	c.fails("not found", "", "mailbox", "rm", "john@bücher.example")
	// The password hash never reaches the audit log.
	if n := c.count(`SELECT count(*) FROM audit_log WHERE old ? 'password' OR new ? 'password'`); n != 0 {
		t.Fatalf("%d audit rows with a password", n)
	}
}

func TestCLIAliasAndAliasDomainRoundTrip(t *testing.T) {
	c := newDataCLI(t)
	c.ok(nil, "", "domain", "add", "example.com", "--max-aliases", "2")
	c.ok(nil, "", "domain", "add", "host.example", "--local")
	c.ok(nil, "pw\n", "mailbox", "add", "john@example.com", "--password-stdin")

	var al map[string]any
	c.ok(&al, "", "--json", "alias", "add", "Info@Example.COM", "a@x.test,B@X.test", "c@x.test", "--description", "desk")
	if al["address"] != "info@example.com" || strings.Join(dataToStrings(al["destinations"]), " ") != "a@x.test b@x.test c@x.test" ||
		al["description"] != "desk" {
		t.Fatalf("alias add printed %v", al)
	}
	c.ok(&al, "", "--json", "alias", "update", "info@example.com", "--add", "D@x.test", "--remove", "A@X.TEST")
	if strings.Join(dataToStrings(al["destinations"]), " ") != "b@x.test c@x.test d@x.test" {
		t.Fatalf("alias update printed %v", al)
	}
	c.ok(&al, "", "--json", "alias", "update", "info@example.com", "--destinations", "z@x.test", "--active=false")
	if strings.Join(dataToStrings(al["destinations"]), " ") != "z@x.test" || al["active"] != false {
		t.Fatalf("alias update --destinations printed %v", al)
	}
	c.fails("not both", "", "alias", "update", "info@example.com", "--destinations", "z@x.test", "--add", "y@x.test")
	c.fails("no destination", "", "alias", "update", "info@example.com", "--remove", "z@x.test")

	// Shadowing a mailbox needs the forward-and-keep form.
	c.fails("shadow", "", "alias", "add", "john@example.com", "jane@x.test")
	c.ok(nil, "", "alias", "add", "john@example.com", "john@example.com", "jane@x.test")
	// Over the alias limit.
	c.fails("at most 2 aliases", "", "alias", "add", "@example.com", "catch@x.test")
	// Commands only on local domains.
	c.fails("local domains", "", "alias", "add", "run@example.com", "|/usr/bin/procmail -a x,y")
	c.ok(&al, "", "--json", "alias", "add", "run@host.example", "|/usr/bin/procmail -a x,y", "Root")
	if strings.Join(dataToStrings(al["destinations"]), " | ") != "|/usr/bin/procmail -a x,y | root" {
		t.Fatalf("local alias printed %v", al)
	}
	c.fails("domain nowhere.test does not exist", "", "alias", "add", "x@nowhere.test", "a@x.test")
	c.fails("local@domain", "", "alias", "add", "nodomain", "a@x.test")

	var list []map[string]any
	c.ok(&list, "", "--json", "alias", "list", "--domain", "example.com")
	if len(list) != 2 || list[0]["address"] != "info@example.com" || list[1]["address"] != "john@example.com" {
		t.Fatalf("alias list printed %v", list)
	}
	c.ok(&list, "", "--json", "alias", "list", "--search", "jane@")
	if len(list) != 1 || list[0]["address"] != "john@example.com" {
		t.Fatalf("alias list --search printed %v", list)
	}
	c.ok(&al, "", "--json", "alias", "show", "INFO@example.com")
	if al["active"] != false {
		t.Fatalf("alias show printed %v", al)
	}
	c.ok(nil, "", "alias", "rm", "info@example.com")
	c.fails("not found", "", "alias", "show", "info@example.com")

	// Alias domains.
	var ad map[string]any
	c.ok(&ad, "", "--json", "alias-domain", "add", "Example.NET", "example.com")
	if ad["alias_domain"] != "example.net" || ad["target_domain"] != "example.com" || ad["active"] != true {
		t.Fatalf("alias-domain add printed %v", ad)
	}
	c.fails("itself", "", "alias-domain", "add", "example.org", "example.org")
	c.fails("domain example.net does not exist", "", "alias-domain", "add", "example.info", "example.net")
	c.fails("already a domain", "", "alias-domain", "add", "host.example", "example.com")
	c.fails("already an alias domain", "", "domain", "add", "example.net")
	c.ok(&ad, "", "--json", "alias-domain", "update", "example.net", "--target", "host.example", "--active=false")
	if ad["target_domain"] != "host.example" || ad["active"] != false {
		t.Fatalf("alias-domain update printed %v", ad)
	}
	c.ok(&list, "", "--json", "alias-domain", "list", "--domain", "host.example")
	if len(list) != 1 {
		t.Fatalf("alias-domain list printed %v", list)
	}
	c.ok(&ad, "", "--json", "alias-domain", "show", "example.net")
	c.ok(nil, "", "alias-domain", "rm", "example.net")
	c.fails("not found", "", "alias-domain", "rm", "example.net")
}

func TestCLITransportSenderGrantClientAccessRoundTrip(t *testing.T) {
	c := newDataCLI(t)
	c.ok(nil, "", "domain", "add", "example.com")
	c.ok(nil, "pw\n", "mailbox", "add", "john@example.com", "--password-stdin")

	var tr map[string]any
	c.ok(&tr, "", "--json", "transport", "add", "Example.COM", "smtp:[relay.test]:587", "--description", "via relay")
	if tr["key"] != "example.com" || tr["nexthop"] != "smtp:[relay.test]:587" {
		t.Fatalf("transport add printed %v", tr)
	}
	c.fails("next", "", "transport", "add", "x.test", "pigeon:") // refused by the database's check
	c.fails("give a domain or an address", "", "transport", "add", "@example.com", "smtp")
	c.ok(&tr, "", "--json", "transport", "update", "example.com", "--nexthop", "discard", "--active=false")
	if tr["nexthop"] != "discard" || tr["active"] != false {
		t.Fatalf("transport update printed %v", tr)
	}
	var list []map[string]any
	c.ok(&list, "", "--json", "transport", "list", "--domain", "example.com")
	if len(list) != 1 {
		t.Fatalf("transport list printed %v", list)
	}
	c.ok(&tr, "", "--json", "transport", "show", "example.com")
	c.ok(nil, "", "transport", "rm", "example.com")
	c.fails("not found", "", "transport", "show", "example.com")

	var g map[string]any
	c.ok(&g, "", "--json", "sender-grant", "add", "John@example.com", "@Example.NET")
	id := dataJSONNumber(g["id"])
	if g["mailbox"] != "john@example.com" || g["sender"] != "@example.net" || id == "" {
		t.Fatalf("sender-grant add printed %v", g)
	}
	c.fails("already exists", "", "sender-grant", "add", "john@example.com", "@example.net")
	c.fails("mailbox nobody@example.com does not exist", "", "sender-grant", "add", "nobody@example.com", "@example.net")
	c.fails("sender", "", "sender-grant", "add", "john@example.com", "example.net")
	c.ok(&g, "", "--json", "sender-grant", "update", id, "--sender", "Sales@Example.com")
	if g["sender"] != "sales@example.com" {
		t.Fatalf("sender-grant update printed %v", g)
	}
	c.ok(&list, "", "--json", "sender-grant", "list", "--mailbox", "john@example.com")
	if len(list) != 1 {
		t.Fatalf("sender-grant list printed %v", list)
	}
	c.ok(&g, "", "--json", "sender-grant", "show", id)
	c.fails("not an id", "", "sender-grant", "show", "abc")
	c.ok(nil, "", "sender-grant", "rm", id)
	c.fails("not found", "", "sender-grant", "rm", id)

	var ca map[string]any
	c.ok(&ca, "", "--json", "client-access", "add", "192.0.2.0/24", "permit_relay", "--description", "office")
	if ca["network"] != "192.0.2.0/24" || ca["action"] != "permit_relay" {
		t.Fatalf("client-access add printed %v", ca)
	}
	caID := dataJSONNumber(ca["id"])
	c.ok(&ca, "", "--json", "client-access", "add", "2001:db8::1", "reject")
	if ca["network"] != "2001:db8::1/128" {
		t.Fatalf("client-access add of one address printed %v", ca)
	}
	c.fails("host bits", "", "client-access", "add", "192.0.2.1/24", "reject")
	c.fails("action", "", "client-access", "add", "198.51.100.0/24", "allow")
	c.ok(&ca, "", "--json", "client-access", "update", caID, "--action", "permit_qmqp")
	if ca["action"] != "permit_qmqp" || ca["description"] != "office" {
		t.Fatalf("client-access update printed %v", ca)
	}
	c.ok(&list, "", "--json", "client-access", "list")
	if len(list) != 2 {
		t.Fatalf("client-access list printed %v", list)
	}
	c.ok(nil, "", "client-access", "rm", caID)
	c.fails("not found", "", "client-access", "show", caID)
}

func TestCLIAdminRoundTrip(t *testing.T) {
	c := newDataCLI(t)
	c.ok(nil, "", "domain", "add", "a.test")
	c.ok(nil, "", "domain", "add", "b.test")

	var ad map[string]any
	c.ok(&ad, "root-pw\n", "--json", "admin", "add", "Boss", "--superadmin", "--password-stdin")
	if ad["username"] != "boss" || ad["superadmin"] != true || ad["totp_enabled"] != false {
		t.Fatalf("admin add printed %v", ad)
	}
	if _, ok := ad["password"]; ok {
		t.Fatal("admin add printed the password hash")
	}
	c.ok(&ad, "pw\n", "--json", "admin", "add", "helper", "--domain", "A.test", "--password-stdin")
	if strings.Join(dataToStrings(ad["domains"]), " ") != "a.test" || ad["superadmin"] != false {
		t.Fatalf("admin add --domain printed %v", ad)
	}
	// An unknown domain writes nothing.
	c.fails("domain nowhere.test does not exist", "pw\n", "admin", "add", "ghost", "--domain", "a.test", "--domain", "nowhere.test", "--password-stdin")
	if n := c.count(`SELECT count(*) FROM admin WHERE username = 'ghost'`); n != 0 {
		t.Fatal("a refused admin add left a row")
	}
	c.fails("already exists", "pw\n", "admin", "add", "BOSS", "--password-stdin")

	c.ok(&ad, "", "--json", "admin", "domains", "add", "helper", "b.test")
	if strings.Join(dataToStrings(ad["domains"]), " ") != "a.test b.test" {
		t.Fatalf("admin domains add printed %v", ad)
	}
	c.fails("already exists", "", "admin", "domains", "add", "helper", "b.test")
	c.fails("not found", "", "admin", "domains", "rm", "helper", "a.test", "nowhere.test")
	c.ok(&ad, "", "--json", "admin", "domains", "rm", "helper", "a.test")
	if strings.Join(dataToStrings(ad["domains"]), " ") != "b.test" {
		t.Fatalf("admin domains rm printed %v", ad)
	}

	var list []map[string]any
	c.ok(&list, "", "--json", "admin", "list", "--domain", "b.test")
	if len(list) != 1 || list[0]["username"] != "helper" {
		t.Fatalf("admin list printed %v", list)
	}
	c.ok(&ad, "", "--json", "admin", "update", "helper", "--active=false", "--superadmin")
	if ad["active"] != false || ad["superadmin"] != true {
		t.Fatalf("admin update printed %v", ad)
	}
	c.fails("nothing to change", "", "admin", "update", "helper")

	var before, after string
	read := func() string {
		var h string
		if err := c.db.Pool.QueryRow(context.Background(), `SELECT password FROM admin WHERE username = 'helper'`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	before = read()
	c.ok(nil, "other-pw\n", "admin", "passwd", "helper", "--password-stdin")
	after = read()
	h, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := h.Verify(after, "other-pw"); err != nil || !ok || before == after {
		t.Fatalf("admin passwd: stored %q (before %q), verify %v %v", after, before, ok, err)
	}
	c.fails("not found", "x\n", "admin", "passwd", "nobody", "--password-stdin")

	c.ok(&ad, "", "--json", "admin", "show", "helper")
	c.ok(nil, "", "admin", "rm", "helper")
	c.fails("not found", "", "admin", "show", "helper")
	if n := c.count(`SELECT count(*) FROM domain_admin`); n != 0 {
		t.Fatalf("%d domain_admin rows after admin rm", n)
	}
}

func dataToStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// dataJSONNumber prints a decoded JSON integer as the CLI takes it back.
func dataJSONNumber(v any) string {
	f, ok := v.(float64)
	if !ok {
		return ""
	}
	b, _ := json.Marshal(int64(f))
	return string(b)
}
