package msgauth_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/dkimsign"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/msgauth"
	"github.com/facteur/facteur/store"
)

// zones returns an in-process fake DNS; names may be given without the
// trailing dot.
func zones(m map[string]mockdns.Zone) *mockdns.Resolver {
	z := map[string]mockdns.Zone{}
	for k, v := range m {
		z[strings.ToLower(strings.TrimSuffix(k, "."))+"."] = v
	}
	return &mockdns.Resolver{Zones: z}
}

var servfail = errors.New("server misbehaving (SERVFAIL)")

func checker(r msgauth.Resolver) *msgauth.Checker {
	return msgauth.New(msgauth.Options{Resolver: r, Timeout: 5 * time.Second})
}

func TestSPFEveryResult(t *testing.T) {
	dns := zones(map[string]mockdns.Zone{
		"pass.example":      {TXT: []string{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"}},
		"soft.example":      {TXT: []string{"v=spf1 ip4:192.0.2.1 ~all"}},
		"neutral.example":   {TXT: []string{"v=spf1 ?all"}},
		"noall.example":     {TXT: []string{"v=spf1 ip4:203.0.113.9"}},
		"nospf.example":     {TXT: []string{"google-site-verification=abc"}},
		"broken.example":    {TXT: []string{"v=spf1 ip4:192.0.2.1 frobnicate -all"}},
		"twice.example":     {TXT: []string{"v=spf1 -all", "v=spf1 +all"}},
		"servfail.example":  {Err: servfail},
		"include.example":   {TXT: []string{"v=spf1 include:_spf.pass.example mx -all"}},
		"_spf.pass.example": {TXT: []string{"v=spf1 ip4:198.51.100.0/24 -all"}},
		"incl-tmp.example":  {TXT: []string{"v=spf1 include:servfail.example -all"}},
		"mx.example":        {TXT: []string{"v=spf1 mx -all"}, MX: []net.MX{{Host: "mail.mx.example.", Pref: 10}}},
		"mail.mx.example":   {A: []string{"203.0.113.25"}},
		"helo.example":      {TXT: []string{"v=spf1 a -all"}, A: []string{"192.0.2.77"}},
	})
	c := checker(dns)
	ip := netip.MustParseAddr
	cases := []struct {
		name           string
		ip             netip.Addr
		helo, mailFrom string
		want           msgauth.Result
		identity       string
		domain         string
	}{
		{"pass", ip("192.0.2.10"), "x", "alice@pass.example", msgauth.ResultPass, msgauth.IdentityMailFrom, "pass.example"},
		{"pass IPv6", ip("2001:db8::25"), "x", "alice@PASS.example", msgauth.ResultPass, msgauth.IdentityMailFrom, "pass.example"},
		{"pass IPv4-mapped", ip("::ffff:192.0.2.10"), "x", "alice@pass.example", msgauth.ResultPass, msgauth.IdentityMailFrom, "pass.example"},
		{"fail", ip("198.51.100.1"), "x", "alice@pass.example", msgauth.ResultFail, msgauth.IdentityMailFrom, "pass.example"},
		{"softfail", ip("198.51.100.1"), "x", "a@soft.example", msgauth.ResultSoftFail, msgauth.IdentityMailFrom, "soft.example"},
		{"neutral", ip("198.51.100.1"), "x", "a@neutral.example", msgauth.ResultNeutral, msgauth.IdentityMailFrom, "neutral.example"},
		{"neutral without all", ip("198.51.100.1"), "x", "a@noall.example", msgauth.ResultNeutral, msgauth.IdentityMailFrom, "noall.example"},
		{"none: no SPF record", ip("198.51.100.1"), "x", "a@nospf.example", msgauth.ResultNone, msgauth.IdentityMailFrom, "nospf.example"},
		{"none: no such domain", ip("198.51.100.1"), "x", "a@nxdomain.example", msgauth.ResultNone, msgauth.IdentityMailFrom, "nxdomain.example"},
		{"none: address literal", ip("198.51.100.1"), "x", "a@[192.0.2.1]", msgauth.ResultNone, msgauth.IdentityMailFrom, "[192.0.2.1]"},
		{"none: single label", ip("198.51.100.1"), "x", "a@localhost", msgauth.ResultNone, msgauth.IdentityMailFrom, "localhost"},
		{"temperror: SERVFAIL", ip("192.0.2.10"), "x", "a@servfail.example", msgauth.ResultTempError, msgauth.IdentityMailFrom, "servfail.example"},
		{"temperror: SERVFAIL in include", ip("198.51.100.1"), "x", "a@incl-tmp.example", msgauth.ResultTempError, msgauth.IdentityMailFrom, "incl-tmp.example"},
		{"permerror: unknown mechanism", ip("198.51.100.1"), "x", "a@broken.example", msgauth.ResultPermError, msgauth.IdentityMailFrom, "broken.example"},
		{"permerror: two records", ip("198.51.100.1"), "x", "a@twice.example", msgauth.ResultPermError, msgauth.IdentityMailFrom, "twice.example"},
		{"pass through include", ip("198.51.100.7"), "x", "a@include.example", msgauth.ResultPass, msgauth.IdentityMailFrom, "include.example"},
		{"pass through mx", ip("203.0.113.25"), "x", "a@mx.example", msgauth.ResultPass, msgauth.IdentityMailFrom, "mx.example"},
		{"null sender: HELO pass", ip("192.0.2.77"), "helo.example", "", msgauth.ResultPass, msgauth.IdentityHelo, "helo.example"},
		{"null sender: HELO fail", ip("192.0.2.78"), "HELO.example", "", msgauth.ResultFail, msgauth.IdentityHelo, "helo.example"},
		{"null sender: HELO literal", ip("192.0.2.78"), "[192.0.2.78]", "", msgauth.ResultNone, msgauth.IdentityHelo, "[192.0.2.78]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.CheckSPF(context.Background(), tc.ip, tc.helo, tc.mailFrom)
			if r.Result != tc.want || r.Identity != tc.identity || r.Domain != tc.domain {
				t.Fatalf("got %+v, want %s (%s, %s)", r, tc.want, tc.identity, tc.domain)
			}
			if (r.Result == msgauth.ResultTempError || r.Result == msgauth.ResultPermError) && r.Reason == "" {
				t.Fatalf("no reason for %s", r.Result)
			}
		})
	}
}

// slowResolver never answers before its context ends.
type slowResolver struct{ msgauth.Resolver }

func (slowResolver) LookupTXT(ctx context.Context, _ string) ([]string, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestSPFTimeoutIsTemporary(t *testing.T) {
	c := msgauth.New(msgauth.Options{Resolver: slowResolver{zones(nil)}, Timeout: 50 * time.Millisecond})
	start := time.Now()
	r := c.CheckSPF(context.Background(), netip.MustParseAddr("192.0.2.1"), "x", "a@slow.example")
	if r.Result != msgauth.ResultTempError || time.Since(start) > 5*time.Second {
		t.Fatalf("%+v after %v", r, time.Since(start))
	}
	d := c.EvaluateDMARC(context.Background(), "slow.example", r, nil)
	if d.Result != msgauth.ResultTempError || d.Action != msgauth.PolicyNone {
		t.Fatalf("DMARC: %+v", d)
	}
}

// testdataZones publishes the records of testdata/records.txt.
func testdataZones(t *testing.T, extra map[string]mockdns.Zone) *mockdns.Resolver {
	t.Helper()
	f, err := os.Open("testdata/records.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]mockdns.Zone{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rec, ok := strings.Cut(sc.Text(), " ")
		if ok {
			m[name] = mockdns.Zone{TXT: []string{rec}}
		}
	}
	for k, v := range extra {
		m[k] = v
	}
	return zones(m)
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDKIMTestdataFromIndependentSigners(t *testing.T) {
	c := checker(testdataZones(t, nil))
	type want struct {
		res    msgauth.Result
		domain string
	}
	cases := []struct {
		file string
		edit func(string) string
		want []want
	}{
		{"opendkim-rsa.eml", nil, []want{{msgauth.ResultPass, "od.example"}}},
		{"dkimpy-rsa.eml", nil, []want{{msgauth.ResultPass, "py.example"}}},
		{"dkimpy-ed25519.eml", nil, []want{{msgauth.ResultPass, "py.example"}}},
		{"dkimpy-both.eml", nil, []want{{msgauth.ResultPass, "py.example"}, {msgauth.ResultPass, "py.example"}}},
		// RFC 8301 3.1: rsa-sha1 never passes.
		{"opendkim-testmsg-sha1.eml", nil, []want{{msgauth.ResultPermError, "od.example"}}},
		{"opendkim-rsa.eml", func(s string) string { return strings.Replace(s, "Hello Bob", "Hello Eve", 1) },
			[]want{{msgauth.ResultFail, "od.example"}}},
		{"dkimpy-ed25519.eml", func(s string) string { return strings.Replace(s, "Subject: DKIM", "Subject: dkim", 1) },
			[]want{{msgauth.ResultFail, "py.example"}}},
		// Only the changed signature fails; the other still passes.
		{"dkimpy-both.eml", func(s string) string {
			return strings.Replace(s, "s=ed2026", "s=gone", 1)
		}, []want{{msgauth.ResultPermError, "py.example"}, {msgauth.ResultPass, "py.example"}}},
	}
	for _, tc := range cases {
		name := tc.file
		if tc.edit != nil {
			name += " changed"
		}
		t.Run(name, func(t *testing.T) {
			msg := readTestdata(t, tc.file)
			if tc.edit != nil {
				msg = tc.edit(msg)
			}
			rs := c.VerifyDKIM(context.Background(), strings.NewReader(msg))
			if len(rs) != len(tc.want) {
				t.Fatalf("results %+v", rs)
			}
			for i, w := range tc.want {
				if rs[i].Result != w.res || rs[i].Domain != w.domain {
					t.Fatalf("signature %d: %+v, want %s for %s", i, rs[i], w.res, w.domain)
				}
			}
		})
	}
}

func TestDKIMKeyLookupFailures(t *testing.T) {
	msg := readTestdata(t, "dkimpy-rsa.eml")
	for _, tc := range []struct {
		name string
		zone mockdns.Zone
		want msgauth.Result
	}{
		{"SERVFAIL is temporary", mockdns.Zone{Err: servfail}, msgauth.ResultTempError},
		{"revoked key", mockdns.Zone{TXT: []string{"v=DKIM1; k=rsa; p="}}, msgauth.ResultPermError},
		{"wrong key type", mockdns.Zone{TXT: []string{"v=DKIM1; k=ed25519; p=ZWR6nvTbxSRLUWtTaGpv+qscETbBeaxbM52moVZtF2Q="}}, msgauth.ResultPermError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checker(zones(map[string]mockdns.Zone{"py2026._domainkey.py.example": tc.zone}))
			rs := c.VerifyDKIM(context.Background(), strings.NewReader(msg))
			if len(rs) != 1 || rs[0].Result != tc.want || rs[0].Reason == "" {
				t.Fatalf("%+v", rs)
			}
		})
	}
	c := checker(zones(nil))
	if rs := c.VerifyDKIM(context.Background(), strings.NewReader(msg)); len(rs) != 1 || rs[0].Result != msgauth.ResultPermError {
		t.Fatalf("no key published: %+v", rs)
	}
	if rs := c.VerifyDKIM(context.Background(), strings.NewReader("From: a@b.example\r\n\r\nunsigned\r\n")); len(rs) != 0 {
		t.Fatalf("unsigned: %+v", rs)
	}
}

// memKeys is an in-memory dkimsign.Keys.
type memKeys map[string]store.DKIMKey

func (m memKeys) ActiveDKIMKey(_ context.Context, d string) (store.DKIMKey, bool, error) {
	k, ok := m[d]
	return k, ok, nil
}

var (
	genOnce sync.Once
	genRSA  dkimsign.Key
	genEd   dkimsign.Key
)

// signedByFacteur signs msg with mta/dkimsign as domain (RSA under "fr",
// Ed25519 under "fe") and returns the message and the records to publish.
func signedByFacteur(t *testing.T, domain, alg, msg string) (string, map[string]mockdns.Zone) {
	t.Helper()
	genOnce.Do(func() {
		var err error
		if genRSA, err = dkimsign.Generate("rsa"); err != nil {
			panic(err)
		}
		if genEd, err = dkimsign.Generate("ed25519"); err != nil {
			panic(err)
		}
	})
	k, sel := genRSA, "fr"
	if alg == "ed25519" {
		k, sel = genEd, "fe"
	}
	s := dkimsign.New(memKeys{domain: {Domain: domain, Selector: sel, Algorithm: k.Algorithm,
		PrivateKey: k.PrivatePEM, PublicKey: k.PublicKey, Active: true}}, dkimsign.Options{})
	h, err := s.Sign(context.Background(), domain, func(d string) bool { return d == domain }, strings.NewReader(msg))
	if err != nil || h == "" {
		t.Fatalf("sign: %q %v", h, err)
	}
	return h + msg, map[string]mockdns.Zone{sel + "._domainkey." + domain: {TXT: []string{k.DNSRecord}}}
}

func testMessage(from string) string {
	return "From: " + from + "\r\nTo: bob@facteur.example\r\nSubject: hello\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <x@y>\r\n\r\nHello Bob,\r\n\r\nbye.\r\n"
}

func TestDKIMSignedInTheTest(t *testing.T) {
	for _, alg := range []string{"rsa", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			msg, z := signedByFacteur(t, "a.example", alg, testMessage("alice@a.example"))
			c := checker(zones(z))
			if rs := c.VerifyDKIM(context.Background(), strings.NewReader(msg)); len(rs) != 1 || rs[0].Result != msgauth.ResultPass ||
				rs[0].Domain != "a.example" || rs[0].Identifier != "@a.example" {
				t.Fatalf("%+v", rs)
			}
			bad := strings.Replace(msg, "bye.", "bye!", 1)
			if rs := c.VerifyDKIM(context.Background(), strings.NewReader(bad)); len(rs) != 1 || rs[0].Result != msgauth.ResultFail {
				t.Fatalf("changed body: %+v", rs)
			}
		})
	}
}

func TestDMARCAlignmentAndPolicy(t *testing.T) {
	dns := zones(map[string]mockdns.Zone{
		"_dmarc.relaxed.example": {TXT: []string{"v=DMARC1; p=reject"}},
		"_dmarc.strict.example":  {TXT: []string{"v=DMARC1; p=reject; aspf=s; adkim=s"}},
		"_dmarc.quar.example":    {TXT: []string{"v=DMARC1; p=quarantine"}},
		"_dmarc.monitor.example": {TXT: []string{"v=DMARC1; p=none; rua=mailto:d@monitor.example"}},
		"_dmarc.pct.example":     {TXT: []string{"v=DMARC1; p=reject; pct=30"}},
		// Found at the organisational domain for its subdomains, with sp=.
		"_dmarc.org.co.uk":    {TXT: []string{"v=DMARC1; p=reject; sp=quarantine"}},
		"_dmarc.tmp.example":  {Err: servfail},
		"_dmarc.bad.example":  {TXT: []string{"v=DMARC1; p=maybe"}},
		"_dmarc.none.example": {TXT: []string{"something else"}},
	})
	spf := func(res msgauth.Result, domain string) msgauth.SPFResult {
		return msgauth.SPFResult{Result: res, Identity: msgauth.IdentityMailFrom, Domain: domain}
	}
	dk := func(res msgauth.Result, domain string) []msgauth.DKIMResult {
		return []msgauth.DKIMResult{{Result: res, Domain: domain}}
	}
	pass, fail := msgauth.ResultPass, msgauth.ResultFail
	cases := []struct {
		name       string
		from       string
		spf        msgauth.SPFResult
		dkim       []msgauth.DKIMResult
		rand       int
		want       msgauth.Result
		spfA, dkA  bool
		policy     msgauth.Policy
		action     msgauth.Policy
		recordFrom string
	}{
		{"relaxed SPF: MAIL FROM subdomain", "relaxed.example", spf(pass, "bounces.relaxed.example"), nil, 0,
			pass, true, false, "reject", "none", "relaxed.example"},
		{"relaxed DKIM: d= parent", "news.relaxed.example", spf(fail, "relaxed.example"), dk(pass, "relaxed.example"), 0,
			pass, false, true, "reject", "none", "relaxed.example"},
		{"strict SPF: subdomain is not aligned", "strict.example", spf(pass, "bounces.strict.example"), nil, 0,
			fail, false, false, "reject", "reject", "strict.example"},
		{"strict DKIM: exact domain aligns", "strict.example", spf(pass, "other.example"), dk(pass, "strict.example"), 0,
			pass, false, true, "reject", "none", "strict.example"},
		{"strict DKIM: parent does not", "strict.example", spf(pass, "other.example"), dk(pass, "example"), 0,
			fail, false, false, "reject", "reject", "strict.example"},
		{"DKIM fail does not align", "relaxed.example", spf(pass, "evil.example"), dk(fail, "relaxed.example"), 0,
			fail, false, false, "reject", "reject", "relaxed.example"},
		{"SPF softfail does not align", "relaxed.example", spf(msgauth.ResultSoftFail, "relaxed.example"), nil, 0,
			fail, false, false, "reject", "reject", "relaxed.example"},
		{"another organisation's signature", "relaxed.example", spf(fail, ""), dk(pass, "relaxed.example.evil.example"), 0,
			fail, false, false, "reject", "reject", "relaxed.example"},
		{"quarantine", "quar.example", spf(fail, "quar.example"), nil, 0,
			fail, false, false, "quarantine", "quarantine", "quar.example"},
		{"monitor only", "monitor.example", spf(fail, "monitor.example"), nil, 0,
			fail, false, false, "none", "none", "monitor.example"},
		{"pct sampled in", "pct.example", spf(fail, "x.example"), nil, 29,
			fail, false, false, "reject", "reject", "pct.example"},
		{"pct sampled out: one step down", "pct.example", spf(fail, "x.example"), nil, 30,
			fail, false, false, "reject", "quarantine", "pct.example"},
		{"organisational domain's sp=", "mail.org.co.uk", spf(fail, "x.example"), nil, 0,
			fail, false, false, "quarantine", "quarantine", "org.co.uk"},
		{"organisational domain itself: p=", "org.co.uk", spf(fail, "x.example"), nil, 0,
			fail, false, false, "reject", "reject", "org.co.uk"},
		{"relaxed across the public suffix: not aligned", "org.co.uk", spf(pass, "other.co.uk"), nil, 0,
			fail, false, false, "reject", "reject", "org.co.uk"},
		{"no record", "nodmarc.example", spf(fail, "x.example"), nil, 0,
			msgauth.ResultNone, false, false, "", "none", ""},
		{"not a DMARC record", "none.example", spf(fail, "x.example"), nil, 0,
			msgauth.ResultNone, false, false, "", "none", ""},
		{"temperror", "tmp.example", spf(fail, "x.example"), nil, 0,
			msgauth.ResultTempError, false, false, "", "none", "tmp.example"},
		{"permerror: bad p=", "bad.example", spf(fail, "x.example"), nil, 0,
			msgauth.ResultPermError, false, false, "", "none", "bad.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := msgauth.New(msgauth.Options{Resolver: dns, Rand: func(int) int { return tc.rand }})
			r := c.EvaluateDMARC(context.Background(), tc.from, tc.spf, tc.dkim)
			if r.Result != tc.want || r.SPFAligned != tc.spfA || r.DKIMAligned != tc.dkA || r.Policy != tc.policy ||
				r.Action != tc.action || r.RecordDomain != tc.recordFrom {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

func TestDMARCDispositionAndReply(t *testing.T) {
	rej := msgauth.DMARCResult{Result: msgauth.ResultFail, From: "a.example", Policy: msgauth.PolicyReject, Action: msgauth.PolicyReject}
	quar := msgauth.DMARCResult{Result: msgauth.ResultFail, From: "a.example", Policy: msgauth.PolicyQuarantine, Action: msgauth.PolicyQuarantine}
	pass := msgauth.DMARCResult{Result: msgauth.ResultPass, From: "a.example", Policy: msgauth.PolicyReject, Action: msgauth.PolicyNone}
	for _, tc := range []struct {
		r     msgauth.DMARCResult
		local string
		want  msgauth.Policy
	}{
		{rej, msgauth.LocalHonour, msgauth.PolicyReject},
		{rej, "", msgauth.PolicyReject},
		{rej, msgauth.LocalQuarantine, msgauth.PolicyQuarantine},
		{rej, msgauth.LocalRecord, msgauth.PolicyNone},
		{quar, msgauth.LocalHonour, msgauth.PolicyQuarantine},
		{quar, msgauth.LocalRecord, msgauth.PolicyNone},
		{pass, msgauth.LocalHonour, msgauth.PolicyNone},
		{msgauth.DMARCResult{}, msgauth.LocalHonour, msgauth.PolicyNone},
	} {
		if got := tc.r.Disposition(tc.local); got != tc.want {
			t.Errorf("%+v under %q: %s, want %s", tc.r, tc.local, got, tc.want)
		}
	}
	r, ok := rej.Reply(store.DMARCHonour)
	if !ok || r.Code != 550 || r.Enhanced != (envelope.Status{5, 7, 1}) || !strings.Contains(r.Text, "a.example") {
		t.Fatalf("reply %v %v", r, ok)
	}
	if _, ok := rej.Reply(store.DMARCQuarantine); ok {
		t.Fatal("a reject under local quarantine")
	}
	if _, ok := quar.Reply(store.DMARCHonour); ok {
		t.Fatal("a reject for p=quarantine")
	}
	if f := msgauth.QuarantineField(rej); f != "X-Facteur-Quarantine: dmarc; from=a.example; policy=reject\r\n" {
		t.Fatalf("quarantine field %q", f)
	}
}

// The whole inbound path: SPF, DKIM (signed by facteur), DMARC, the header.
func TestEndToEndAuthenticationResults(t *testing.T) {
	msg, z := signedByFacteur(t, "a.example", "ed25519", testMessage("Alice <alice@a.example>"))
	z["a.example"] = mockdns.Zone{TXT: []string{"v=spf1 ip4:192.0.2.0/24 -all"}}
	z["_dmarc.a.example"] = mockdns.Zone{TXT: []string{"v=DMARC1; p=reject"}}
	c := checker(zones(z))
	ctx := context.Background()

	spf := c.CheckSPF(ctx, netip.MustParseAddr("198.51.100.9"), "relay.example", "alice@a.example")
	dkims := c.VerifyDKIM(ctx, strings.NewReader(msg))
	dm := c.EvaluateDMARC(ctx, "a.example", spf, dkims)
	if spf.Result != msgauth.ResultFail || dm.Result != msgauth.ResultPass || !dm.DKIMAligned {
		t.Fatalf("forwarded mail: spf %+v dmarc %+v", spf, dm)
	}
	h := msgauth.AuthResultsHeader("mx.facteur.example", spf, dkims, dm)
	want := "Authentication-Results: mx.facteur.example;\r\n" +
		"\tspf=fail smtp.mailfrom=alice@a.example;\r\n" +
		"\tdkim=pass header.d=a.example header.i=@a.example;\r\n" +
		"\tdmarc=pass header.from=a.example\r\n"
	if h != want {
		t.Fatalf("header\n%q\nwant\n%q", h, want)
	}
	// It parses back (RFC 8601 syntax).
	v := strings.TrimPrefix(strings.ReplaceAll(strings.TrimSuffix(h, "\r\n"), "\r\n\t", " "), "Authentication-Results: ")
	id, rs, err := authres.Parse(v)
	if err != nil || id != "mx.facteur.example" || len(rs) != 3 {
		t.Fatalf("parse: %q %+v %v", id, rs, err)
	}

	// A spoofed From: of a.example from elsewhere is rejected.
	spoof := testMessage("ceo@a.example")
	spf = c.CheckSPF(ctx, netip.MustParseAddr("198.51.100.9"), "evil.example", "x@evil.example")
	dkims = c.VerifyDKIM(ctx, strings.NewReader(spoof))
	dm = c.EvaluateDMARC(ctx, "a.example", spf, dkims)
	if r, ok := dm.Reply(msgauth.LocalHonour); !ok || r.Code != 550 {
		t.Fatalf("spoof: %+v %v", dm, ok)
	}
	h = msgauth.AuthResultsHeader("mx.facteur.example", spf, dkims, dm)
	if !strings.Contains(h, "spf=none smtp.mailfrom=x@evil.example") || !strings.Contains(h, "dkim=none") ||
		!strings.Contains(h, "dmarc=fail header.from=a.example") {
		t.Fatalf("spoof header %q", h)
	}
	// HELO identity, and a reason that could try to break the field.
	h = msgauth.AuthResultsHeader("mx.facteur.example",
		msgauth.SPFResult{Result: msgauth.ResultPermError, Identity: msgauth.IdentityHelo, Helo: "h.example", Reason: "bad\r\nX-Evil: 1 \\\"; dkim=pass"},
		nil, msgauth.DMARCResult{})
	if strings.Contains(h, "\r\nX-Evil") || !strings.Contains(h, "spf=permerror") || !strings.Contains(h, "smtp.helo=h.example") ||
		strings.Contains(h, "dmarc") {
		t.Fatalf("helo header %q", h)
	}
	v = strings.TrimPrefix(strings.ReplaceAll(strings.TrimSuffix(h, "\r\n"), "\r\n\t", " "), "Authentication-Results: ")
	if _, rs, err := authres.Parse(v); err != nil || len(rs) != 2 {
		t.Fatalf("a hostile reason changed the results: %q %+v %v", h, rs, err)
	} else if d, ok := rs[1].(*authres.DKIMResult); !ok || d.Value != authres.ResultNone {
		t.Fatalf("a hostile reason changed the results: %q %+v", h, rs[1])
	}
}

func TestStripForged(t *testing.T) {
	in := "Received: from x\r\n" +
		"Authentication-Results: mx.facteur.example; dkim=pass header.d=bank.example\r\n" +
		"authentication-results: MX.Facteur.Example;\r\n\tspf=pass smtp.mailfrom=bank.example\r\n" +
		"Authentication-Results: (comment) mx.facteur.example; dmarc=pass\r\n" +
		"Authentication-Results: \"mx.facteur.example\"; dmarc=pass\r\n" +
		"Authentication-Results: mx.facteur.example.evil; dkim=pass\r\n" +
		"Authentication-Results: other.example; dkim=fail\r\n" +
		"X-Facteur-Quarantine: dmarc; from=x\r\n" +
		"Subject: Authentication-Results: mx.facteur.example; keep\r\n" +
		"\r\n" +
		"Authentication-Results: mx.facteur.example; in the body stays\r\n"
	want := "Received: from x\r\n" +
		"Authentication-Results: mx.facteur.example.evil; dkim=pass\r\n" +
		"Authentication-Results: other.example; dkim=fail\r\n" +
		"Subject: Authentication-Results: mx.facteur.example; keep\r\n" +
		"\r\n" +
		"Authentication-Results: mx.facteur.example; in the body stays\r\n"
	if got := string(msgauth.StripForged([]byte(in), "mx.facteur.example")); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if !msgauth.ForgedField([]byte("Authentication-Results : mx.facteur.example;\r\n none\r\n"), "mx.facteur.example") {
		t.Fatal("a field with a space before the colon was kept")
	}
}

func TestFromDomain(t *testing.T) {
	for _, tc := range []struct {
		header, want string
	}{
		{"From: Alice <alice@A.Example>\r\nTo: b@c\r\n\r\n", "a.example"},
		{"From: =?utf-8?q?B=C3=B6b?= <bob@xn--bcher-kva.example>\r\n", "xn--bcher-kva.example"},
		{"From: a@x.example, b@X.example\r\n\r\n", "x.example"},
		{"From: a@x.example, b@y.example\r\n\r\n", ""},
		{"From: a@x.example\r\nFrom: b@x.example\r\n\r\n", ""},
		{"To: a@x.example\r\n\r\n", ""},
		{"From: <>\r\n\r\n", ""},
	} {
		got, err := msgauth.FromDomain([]byte(tc.header))
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("%q: %q %v, want %q", tc.header, got, err, tc.want)
		}
	}
	// An unusable From: is a DMARC permerror, never a pass.
	c := checker(zones(nil))
	if r := c.EvaluateDMARC(context.Background(), "", msgauth.SPFResult{Result: msgauth.ResultPass, Domain: "x.example"}, nil); r.Result != msgauth.ResultPermError {
		t.Fatalf("%+v", r)
	}
}
