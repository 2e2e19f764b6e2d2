package lookups_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/facteur/facteur/lookups"
)

// recipientLine is the golden form of a recipient: class, address and
// transport, then the mailbox details that apply.
func recipientLine(rc lookups.Recipient) string {
	s := fmt.Sprintf("%s %s %s", rc.Class, rc.Address, rc.Transport)
	if rc.Mailbox != "" {
		s += " box=" + rc.Mailbox
	}
	if rc.Extension != "" {
		s += " ext=" + rc.Extension
	}
	if rc.Maildir != "" {
		s += " dir=" + rc.Maildir
	}
	if rc.QuotaBytes != 0 {
		s += fmt.Sprintf(" quota=%d", rc.QuotaBytes)
	}
	return s
}

type resolveCase struct {
	name   string
	addr   string
	found  bool
	domain lookups.DomainClass
	rule   string
	want   []string // recipientLine of each recipient, in order
	err    error    // a permanent error the resolution must wrap
}

// resolveCases is the golden table: every resolution rule and precedence.
var resolveCases = []resolveCase{
	// Mailboxes, case, extensions.
	{name: "mailbox", addr: "john@example.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},
	{name: "local part and domain are case-insensitive", addr: "John@Example.TEST", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},
	{name: "tag is kept for delivery", addr: "JOHN+Tag@example.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox john+tag@example.test maildir box=john@example.test ext=tag dir=example.test/john/ quota=1000000"}},
	{name: "empty tag", addr: "john+@example.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox john+@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},
	{name: "IDNA domain", addr: "U@Bücher.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox u@xn--bcher-kva.test maildir box=u@xn--bcher-kva.test dir=xn--bcher-kva.test/u/"}},
	{name: "unknown user of a virtual domain", addr: "nobody@example.test", found: false, domain: lookups.DomainVirtual},
	{name: "unknown user with tag", addr: "nobody+x@example.test", found: false, domain: lookups.DomainVirtual},
	{name: "inactive mailbox is not found", addr: "bob@example.test", found: false, domain: lookups.DomainVirtual},

	// Search order and precedence.
	{name: "step 1 alias beats step 2 mailbox", addr: "john+news@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"mailbox jane@example.test lmtp:[10.0.0.5]:24 box=jane@example.test dir=example.test/jane/"}},
	{name: "step 1 mailbox beats step 2 alias", addr: "sales+archive@example.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox sales+archive@example.test maildir box=sales+archive@example.test dir=archive/sales/"}},
	{name: "alias beats mailbox of the same address", addr: "shadowed@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"mailbox jane@example.test lmtp:[10.0.0.5]:24 box=jane@example.test dir=example.test/jane/"}},
	{name: "forward and keep", addr: "keep@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox keep@example.test maildir box=keep@example.test dir=example.test/keep/",
			"remote ext@remote.test smtp",
		}},
	{name: "forward and keep with tag", addr: "keep+t@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox keep+t@example.test maildir box=keep@example.test ext=t dir=example.test/keep/",
			"remote ext+t@remote.test smtp",
		}},
	{name: "two mailboxes forwarding to each other with copies", addr: "k1@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox k1@example.test maildir box=k1@example.test dir=example.test/k1/",
			"mailbox k2@example.test maildir box=k2@example.test dir=example.test/k2/",
		}},
	{name: "catch-all", addr: "anyone@catch.test", found: true, domain: lookups.DomainVirtual, rule: "catch-all",
		want: []string{"mailbox boss@example.test maildir box=boss@example.test dir=example.test/boss/"}},
	{name: "mailbox beats catch-all", addr: "real@catch.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox real@catch.test maildir box=real@catch.test dir=catch.test/real/"}},
	{name: "catch-all beats postmaster fallback", addr: "postmaster@catch.test", found: true, domain: lookups.DomainVirtual, rule: "catch-all",
		want: []string{"mailbox boss@example.test maildir box=boss@example.test dir=example.test/boss/"}},
	{name: "catch-all to @domain keeps the local part and tag", addr: "john+t@fwd.test", found: true, domain: lookups.DomainVirtual, rule: "catch-all",
		want: []string{"mailbox john+t@example.test maildir box=john@example.test ext=t dir=example.test/john/ quota=1000000"}},
	{name: "catch-all to @domain, unknown there", addr: "nobody@fwd.test", found: true, domain: lookups.DomainVirtual, rule: "catch-all",
		want: []string{"unknown nobody@example.test error:5.1.1 user unknown"}},

	// Aliases: 1:N, recursion, duplicates, propagation.
	{name: "alias 1:N with a remote destination", addr: "sales@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000",
			"mailbox jane@example.test lmtp:[10.0.0.5]:24 box=jane@example.test dir=example.test/jane/",
			"remote partner@remote.test smtp",
		}},
	{name: "alias extension propagates to destinations", addr: "sales+x@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox john+x@example.test maildir box=john@example.test ext=x dir=example.test/john/ quota=1000000",
			"mailbox jane+x@example.test lmtp:[10.0.0.5]:24 box=jane@example.test ext=x dir=example.test/jane/",
			"remote partner+x@remote.test smtp",
		}},
	{name: "recursive alias without duplicates", addr: "team@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000",
			"mailbox jane@example.test lmtp:[10.0.0.5]:24 box=jane@example.test dir=example.test/jane/",
			"remote partner@remote.test smtp",
		}},
	{name: "alias through an alias domain", addr: "viaalias@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},
	{name: "alias to @domain", addr: "fwd@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"mailbox fwd@lmtp.test lmtp:unix:/run/dovecot/lmtp box=fwd@lmtp.test dir=lmtp.test/fwd/"}},
	{name: "chain within the depth limit", addr: "e1@loop.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},
	{name: "alias to an unknown local address bounces", addr: "deadend@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"unknown nobody@example.test error:5.1.1 user unknown"}},
	{name: "alias to an inactive mailbox bounces", addr: "tobob@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"unknown bob@example.test error:5.1.1 user unknown"}},
	{name: "inactive alias is not found", addr: "gone@example.test", found: false, domain: lookups.DomainVirtual},

	// Loops and limits.
	{name: "loop", addr: "a@loop.test", err: lookups.ErrLoop},
	{name: "too deep", addr: "d1@loop.test", err: lookups.ErrTooDeep},
	{name: "too many recipients", addr: "fan1001@example.test", err: lookups.ErrTooMany},

	// Alias domains.
	{name: "alias domain", addr: "john@alias.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},
	{name: "alias domain with tag and alias", addr: "Sales+Y@Alias.Test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{
			"mailbox john+y@example.test maildir box=john@example.test ext=y dir=example.test/john/ quota=1000000",
			"mailbox jane+y@example.test lmtp:[10.0.0.5]:24 box=jane@example.test ext=y dir=example.test/jane/",
			"remote partner+y@remote.test smtp",
		}},
	{name: "alias domain, unknown user", addr: "nobody@alias.test", found: false, domain: lookups.DomainVirtual},
	{name: "inactive alias domain is not ours", addr: "john@offalias.test", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote john@offalias.test smtp"}},
	{name: "alias domain of an inactive domain is not ours", addr: "john@toofftarget.test", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote john@toofftarget.test smtp"}},

	// Domains that are not (or no longer) ours.
	{name: "remote domain", addr: "Someone@Remote.TEST", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote someone@remote.test smtp"}},
	{name: "remote domain with a transport row", addr: "x@routed.test", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote x@routed.test smtp:[mx.routed.test]:2525"}},
	{name: "remote address with a transport row", addr: "special@remote.test", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote special@remote.test error:5.7.1 go away"}},
	{name: "inactive domain is not ours", addr: "john@off.test", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote john@off.test smtp"}},
	{name: "alias to a remote domain with a transport row", addr: "routed@example.test", found: true, domain: lookups.DomainVirtual, rule: "alias",
		want: []string{"remote x@routed.test smtp:[mx.routed.test]:2525"}},

	// Relay (backup-MX) domains.
	{name: "relay domain uses its transport column", addr: "anyone@backup.test", found: true, domain: lookups.DomainRelay, rule: "relay",
		want: []string{"relay anyone@backup.test smtp:[primary.backup.test]:25"}},
	{name: "relay domain uses its transport row", addr: "anyone@relay2.test", found: true, domain: lookups.DomainRelay, rule: "relay",
		want: []string{"relay anyone@relay2.test relay:[gateway.relay2.test]"}},
	{name: "relay domain default transport", addr: "anyone@relay3.test", found: true, domain: lookups.DomainRelay, rule: "relay",
		want: []string{"relay anyone@relay3.test smtp"}},
	{name: "aliases apply in relay domains", addr: "special@backup.test", found: true, domain: lookups.DomainRelay, rule: "alias",
		want: []string{"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000"}},

	{name: "forward and keep in a relay domain relays the copy", addr: "keep@backup.test", found: true, domain: lookups.DomainRelay, rule: "alias",
		want: []string{
			"relay keep@backup.test smtp:[primary.backup.test]:25",
			"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000",
		}},

	// Transport precedence.
	{name: "mailbox transport beats the address row", addr: "jane@example.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox jane@example.test lmtp:[10.0.0.5]:24 box=jane@example.test dir=example.test/jane/"}},
	{name: "mailbox transport beats every row", addr: "ovr@tr.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox ovr@tr.test maildir box=ovr@tr.test dir=tr.test/ovr/"}},
	{name: "address row beats domain row", addr: "addr@tr.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox addr@tr.test lmtp:unix:/run/address-row box=addr@tr.test dir=tr.test/addr/"}},
	{name: "address row with extension beats address row", addr: "addr+x@tr.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox addr+x@tr.test discard box=addr@tr.test ext=x dir=tr.test/addr/"}},
	{name: "domain row beats domain column", addr: "other@tr.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox other@tr.test lmtp:unix:/run/domain-row box=other@tr.test dir=tr.test/other/"}},
	{name: "inactive transport row is skipped", addr: "inact@tr.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox inact@tr.test lmtp:unix:/run/domain-row box=inact@tr.test dir=tr.test/inact/"}},
	{name: "domain column beats the default", addr: "fwd@lmtp.test", found: true, domain: lookups.DomainVirtual, rule: "mailbox",
		want: []string{"mailbox fwd@lmtp.test lmtp:unix:/run/dovecot/lmtp box=fwd@lmtp.test dir=lmtp.test/fwd/"}},

	// Local domains: commands, files, system users.
	{name: "local domain alias with commands, files and users", addr: "root@host.test", found: true, domain: lookups.DomainLocal, rule: "alias",
		want: []string{
			"command |/usr/bin/procmail -a x local",
			"file /var/log/root.mbox local",
			"include :include:/etc/mail/staff local",
			"local admin@host.test local",
			"unknown ghost@host.test error:5.1.1 user unknown",
			"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000",
		}},
	{name: "system user of a local domain", addr: "operator+x@host.test", found: true, domain: lookups.DomainLocal, rule: "local-user",
		want: []string{"local operator+x@host.test local ext=x"}},
	{name: "unknown user of a local domain", addr: "ghost@host.test", found: false, domain: lookups.DomainLocal},
	{name: "alias of a local domain keeping a copy for its system user", addr: "daemon@host.test", found: true, domain: lookups.DomainLocal, rule: "alias",
		want: []string{
			"local daemon@host.test local",
			"mailbox john@example.test maildir box=john@example.test dir=example.test/john/ quota=1000000",
		}},
	{name: "alias of a local domain naming itself without a system user", addr: "self@host.test", found: true, domain: lookups.DomainLocal, rule: "alias",
		want: []string{"unknown self@host.test error:5.1.1 user unknown"}},
	{name: "configured local domain without a row", addr: "admin@mx.example.test", found: true, domain: lookups.DomainLocal, rule: "local-user",
		want: []string{"local admin@mx.example.test local"}},

	// Postmaster (RFC 5321 4.5.1).
	{name: "bare postmaster", addr: "Postmaster", found: true, domain: lookups.DomainLocal, rule: "postmaster",
		want: []string{"mailbox hostmaster@example.test maildir box=hostmaster@example.test dir=example.test/hostmaster/"}},
	{name: "postmaster of a domain without alias", addr: "postmaster@lmtp.test", found: true, domain: lookups.DomainVirtual, rule: "postmaster",
		want: []string{"mailbox hostmaster@example.test maildir box=hostmaster@example.test dir=example.test/hostmaster/"}},
	{name: "postmaster of a local domain", addr: "POSTMASTER@host.test", found: true, domain: lookups.DomainLocal, rule: "postmaster",
		want: []string{"mailbox hostmaster@example.test maildir box=hostmaster@example.test dir=example.test/hostmaster/"}},
	{name: "postmaster of an alias domain", addr: "postmaster@alias.test", found: true, domain: lookups.DomainVirtual, rule: "postmaster",
		want: []string{"mailbox hostmaster@example.test maildir box=hostmaster@example.test dir=example.test/hostmaster/"}},
	{name: "postmaster of a remote domain is remote", addr: "postmaster@remote.test", found: false, domain: lookups.DomainRemote, rule: "remote",
		want: []string{"remote postmaster@remote.test smtp"}},

	// Malformed.
	{name: "no domain", addr: "john", err: lookups.ErrBadAddress},
	{name: "bad domain", addr: "john@-bad-.test", err: lookups.ErrBadAddress},
	{name: "empty local part", addr: "@example.test", err: lookups.ErrBadAddress},
}

func TestResolveGolden(t *testing.T) {
	_, st := newFixture(t)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	for _, c := range resolveCases {
		t.Run(c.name, func(t *testing.T) {
			// Twice: the second answer comes from the cache and must agree.
			for pass := range 2 {
				res, found, err := r.Resolve(ctx, c.addr)
				if c.err != nil {
					if !errors.Is(err, c.err) || !lookups.Permanent(err) {
						t.Fatalf("pass %d: Resolve(%q) error = %v, want %v (permanent)", pass, c.addr, err, c.err)
					}
					if found {
						t.Fatalf("pass %d: Resolve(%q) found with an error", pass, c.addr)
					}
					return
				}
				if err != nil {
					t.Fatalf("pass %d: Resolve(%q): %v", pass, c.addr, err)
				}
				var got []string
				for _, rc := range res.Recipients {
					got = append(got, recipientLine(rc))
				}
				if found != c.found || res.Domain != c.domain || res.Rule != c.rule || !slices.Equal(got, c.want) {
					t.Errorf("pass %d: Resolve(%q) = found %v, domain %v, rule %q, recipients\n\t%s\nwant found %v, domain %v, rule %q, recipients\n\t%s\ntrace:\n%s",
						pass, c.addr, found, res.Domain, res.Rule, strings.Join(got, "\n\t"),
						c.found, c.domain, c.rule, strings.Join(c.want, "\n\t"), strings.Join(res.Explain, "\n"))
				}
				if len(res.Explain) == 0 {
					t.Errorf("pass %d: Resolve(%q) has no explanation", pass, c.addr)
				}
			}
		})
	}
	if s := r.Stats(); s.Hits == 0 || s.Misses == 0 {
		t.Errorf("stats %+v: want both hits and misses", s)
	}
}

func TestResolveFanoutAtTheLimit(t *testing.T) {
	_, st := newFixture(t)
	r := lookups.New(st, testOptions())
	res, found, err := r.Resolve(context.Background(), "fan1000@example.test")
	if err != nil || !found {
		t.Fatalf("Resolve: found %v, err %v", found, err)
	}
	if len(res.Recipients) != 1000 {
		t.Fatalf("%d recipients, want 1000", len(res.Recipients))
	}
	for i, rc := range res.Recipients {
		if want := fmt.Sprintf("r%d@remote.test", i+1); rc.Address != want || rc.Class != lookups.ClassRemote || rc.Transport != "smtp" {
			t.Fatalf("recipient %d = %+v, want remote %s smtp", i, rc, want)
		}
	}
	// A smaller limit makes the same alias too big.
	opts := testOptions()
	opts.MaxFanout = 999
	if _, _, err := lookups.New(st, opts).Resolve(context.Background(), "fan1000@example.test"); !errors.Is(err, lookups.ErrTooMany) {
		t.Fatalf("MaxFanout 999: err = %v, want ErrTooMany", err)
	}
}

func TestResolveDepthOption(t *testing.T) {
	_, st := newFixture(t)
	opts := testOptions()
	opts.MaxDepth = 4
	r := lookups.New(st, opts)
	// e1 -> e2 -> e3 -> e4 -> e5 -> john: 5 aliases deep.
	if _, _, err := r.Resolve(context.Background(), "e1@loop.test"); !errors.Is(err, lookups.ErrTooDeep) {
		t.Fatalf("MaxDepth 4: err = %v, want ErrTooDeep", err)
	}
	opts.MaxDepth = 5
	if _, found, err := lookups.New(st, opts).Resolve(context.Background(), "e1@loop.test"); err != nil || !found {
		t.Fatalf("MaxDepth 5: found %v, err %v", found, err)
	}
}

func TestResolveRecipientDelimiterSetting(t *testing.T) {
	db, st := newFixture(t)
	ctx := context.Background()
	r := lookups.New(st, lookups.Options{CacheSize: -1})
	if _, found, _ := r.Resolve(ctx, "john-x@example.test"); found {
		t.Fatal("john-x found with delimiter +")
	}
	if _, err := db.Pool.Exec(ctx, "INSERT INTO setting (key, value) VALUES ('recipient_delimiter', '+-')"); err != nil {
		t.Fatal(err)
	}
	res, found, err := r.Resolve(ctx, "john-x@example.test")
	if err != nil || !found || len(res.Recipients) != 1 || res.Recipients[0].Mailbox != "john@example.test" || res.Recipients[0].Extension != "x" {
		t.Fatalf("with delimiter +-: %+v, found %v, err %v", res.Recipients, found, err)
	}
	if _, err := db.Pool.Exec(ctx, "UPDATE setting SET value = '' WHERE key = 'recipient_delimiter'"); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := r.Resolve(ctx, "john+x@example.test"); found {
		t.Fatal("john+x found with extensions turned off")
	}
}

func TestResolveWithoutPostmaster(t *testing.T) {
	_, st := newFixture(t)
	r := lookups.New(st, lookups.Options{})
	for _, a := range []string{"postmaster", "postmaster@lmtp.test"} {
		if _, found, err := r.Resolve(context.Background(), a); err != nil || found {
			t.Errorf("%s without a configured postmaster: found %v, err %v", a, found, err)
		}
	}
	// With a hostname, the default is postmaster@hostname, here a remote address.
	r = lookups.New(st, lookups.Options{Hostname: "mx.elsewhere.test"})
	res, found, err := r.Resolve(context.Background(), "postmaster")
	if err != nil || !found || len(res.Recipients) != 1 || res.Recipients[0].Address != "postmaster@mx.elsewhere.test" {
		t.Fatalf("bare postmaster with hostname: %+v, found %v, err %v", res.Recipients, found, err)
	}
}

func TestResolveResultIsACopy(t *testing.T) {
	_, st := newFixture(t)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	res, _, err := r.Resolve(ctx, "sales@example.test")
	if err != nil {
		t.Fatal(err)
	}
	res.Recipients[0].Address = "changed@example.test"
	res2, _, err := r.Resolve(ctx, "sales@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if res2.Recipients[0].Address != "john@example.test" {
		t.Fatalf("a caller's change reached the cache: %s", res2.Recipients[0].Address)
	}
}

// fakeSRS reverses the addresses of its map (in lower case, as the resolver
// hands them over) and refuses any other.
type fakeSRS map[string]string

func (f fakeSRS) Reverse(addr string) (string, error) {
	if orig, ok := f[addr]; ok {
		return orig, nil
	}
	return "", errors.New("bad hash")
}

func TestResolveSRS(t *testing.T) {
	_, st := newFixture(t)
	ctx := context.Background()
	opts := testOptions()
	opts.SRS = fakeSRS{
		"srs0=hh=tt=remote.test=a+b@example.test":  "a+b@remote.test",
		"srs0=hh=tt=remote.test=c@srs.example.net": "c@remote.test",
		"srs0=hh=tt=remote.test=e@elsewhere.test":  "e@remote.test",
	}
	opts.SRSDomain = "SRS.example.net"
	r := lookups.New(st, opts)
	for _, c := range []struct {
		addr, want string // want "": not reversed
	}{
		// In a domain of ours, '+' inside is not an extension.
		{"SRS0=HH=TT=remote.test=a+b@example.test", "a+b@remote.test"},
		// In the SRS domain, which has no domain row.
		{"SRS0=hh=tt=remote.test=c@srs.example.net", "c@remote.test"},
		// Not ours: a remote address, even with a reversible local part.
		{"SRS0=hh=tt=remote.test=e@elsewhere.test", ""},
		// Does not verify: resolved as any other address.
		{"SRS0=xx=tt=remote.test=a@example.test", ""},
	} {
		res, found, err := r.Resolve(ctx, c.addr)
		if err != nil {
			t.Errorf("%s: %v", c.addr, err)
			continue
		}
		if c.want == "" {
			if res.Rule == lookups.RuleSRS {
				t.Errorf("%s reversed: %+v", c.addr, res)
			}
			continue
		}
		if !found || res.Rule != lookups.RuleSRS || len(res.Recipients) != 1 ||
			res.Recipients[0].Address != c.want || res.Recipients[0].Class != lookups.ClassRemote {
			t.Errorf("%s: found %v, %+v; want %s, remote", c.addr, found, res, c.want)
		}
	}
	// A forged one in the SRS domain: unknown there, not a relay attempt.
	if res, found, err := r.Resolve(ctx, "SRS0=xx=tt=remote.test=c@srs.example.net"); err != nil || found || res.Domain == lookups.DomainRemote {
		t.Errorf("forged SRS address in the SRS domain: found %v, %+v, %v", found, res, err)
	}
	// Without SRS, an SRS address of ours is an ordinary unknown address.
	if res, found, err := lookups.New(st, testOptions()).Resolve(ctx, "SRS0=HH=TT=remote.test=a+b@example.test"); err != nil || found || res.Rule == lookups.RuleSRS {
		t.Errorf("without SRS: found %v, %+v, %v", found, res, err)
	}
}
