package admin

import (
	"testing"

	"github.com/facteur/facteur/store"
)

// world is the fixture of the authorisation tests: ada administers a.test;
// bob administers b.test and bücher.test (xn--bcher-kva.test), the
// "foreign" domains; root is a superadmin.
type world struct {
	*env
	root, ada, adaTok, bob *client
	dave                   *client // a domain admin of a.test whose account settings change
	userA                  *client // the mailbox user u@a.test
	userV                  *client // the mailbox user v@a.test (the web UI's self-service positives)
	adaToken               string
	ids                    map[string]int64
}

const (
	davePW         = "dave-password-1"
	testTOTPSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
)

const idnForeign = "xn--bcher-kva.test" // bücher.test

func seed(t *testing.T, mod func(*Options)) *world {
	e := newEnv(t, mod)
	ctx := store.WithActor(e.ctx, "test:seed")
	st := e.st
	w := &world{env: e, ids: map[string]int64{}}

	must[store.Setting](t)(st.PutSetting(ctx, store.SettingDefaultAliasTarget, "hostmaster@example.net"))
	max := int32(100)
	for _, d := range []string{"a.test", "b.test", idnForeign} {
		must[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: d, Active: true, MaxMailboxes: &max}))
	}
	must[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "root", Password: e.hash(rootPW), Superadmin: true, Active: true}, nil))
	must[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "ada", Password: e.hash(adaPW), Active: true}, []string{"a.test"}))
	must[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "dave", Password: e.hash(davePW), Active: true}, []string{"a.test"}))
	must[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "bob", Password: e.hash(bobPW), Active: true}, []string{"b.test", idnForeign}))

	for _, ad := range [][2]string{{"alias-a.test", "a.test"}, {"alias-b.test", "b.test"}, {"alias-c.test", idnForeign}} {
		must[store.AliasDomain](t)(st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: ad[0], TargetDomain: ad[1], Active: true}))
	}
	pw := e.hash(mailboxPW)
	for _, d := range []string{"a.test", "b.test", idnForeign} {
		for _, l := range []string{"u", "v", "w"} {
			must[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: l + "@" + d, Name: l, Password: pw, Active: true}))
		}
		must[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "al@" + d, Destinations: []string{"x@example.net"}, Active: true}))
		must[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "al2@" + d, Destinations: []string{"x@example.net"}, Active: true}))
		must[store.Vacation](t)(st.CreateVacation(ctx, store.Vacation{Mailbox: "u@" + d, Subject: "away", Active: true}))
		must[store.Vacation](t)(st.CreateVacation(ctx, store.Vacation{Mailbox: "w@" + d, Subject: "away", Active: true}))
		g := must[store.SenderGrant](t)(st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "u@" + d, Sender: "s@" + d, Active: true}))
		w.ids["grant:"+d] = g.ID
		g = must[store.SenderGrant](t)(st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "u@" + d, Sender: "s2@" + d, Active: true}))
		w.ids["grant2:"+d] = g.ID
		ap := must[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "u@" + d, Name: "phone", Password: pw, Active: true}))
		w.ids["app:"+d] = ap.ID
		ap = must[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "u@" + d, Name: "laptop", Password: pw, Active: true}))
		w.ids["app2:"+d] = ap.ID
		ap = must[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "u@" + d, Name: "old", Password: pw, Active: true}))
		w.ids["app3:"+d] = ap.ID
		ap = must[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "v@" + d, Name: "phone", Password: pw, Active: true}))
		w.ids["appv:"+d] = ap.ID
		// u@ forwards and keeps a copy.
		must[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "u@" + d, Destinations: []string{"u@" + d, "fwd@example.net"}, Active: true}))
	}
	must[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "@b.test", Destinations: []string{"u@b.test"}, Active: true}))
	must[store.Transport](t)(st.CreateTransport(ctx, store.Transport{Key: "b.test", Nexthop: "smtp:[relay.b.test]", Active: true}))
	must[store.Transport](t)(st.CreateTransport(ctx, store.Transport{Key: "u@b.test", Nexthop: "smtp:[relay2.b.test]", Active: true}))

	w.root = e.login("root", rootPW)
	w.ada = e.login("ada", adaPW)
	w.bob = e.login("bob", bobPW)
	w.dave = e.login("dave", davePW)
	w.userA = e.loginMailbox("u@a.test", mailboxPW)
	var tc tokenCreated
	r := w.ada.do("POST", "/api/v1/tokens", map[string]any{"name": "panel"})
	want(t, r, 201, "ada's token")
	r.json(t, &tc)
	w.adaToken = tc.Secret
	w.ids["token:ada"] = tc.Token.ID
	r = w.bob.do("POST", "/api/v1/tokens", map[string]any{"name": "panel"})
	want(t, r, 201, "bob's token")
	r.json(t, &tc)
	w.ids["token:bob"] = tc.Token.ID
	w.adaTok = e.tokenClient(w.adaToken)
	// The token's first use records last_used_at (at most once a minute):
	// do it now, so that later requests in the same minute write nothing.
	want(t, w.adaTok.do("GET", "/api/v1/whoami", nil), 200, "ada's token whoami")
	return w
}

// Variants of foreign names: case, trailing dot, and IDN U-labels versus
// A-labels, for b.test and bücher.test.
func foreignDomains() []string {
	return []string{"b.test", "B.TEST", "b.test.", "B.Test.", "bücher.test", "BÜCHER.TEST", "Bücher.Test.",
		idnForeign, "XN--BCHER-KVA.TEST", idnForeign + "."}
}

func foreignAddresses(local string) []string {
	var out []string
	for i, d := range foreignDomains() {
		l := local
		if i%2 == 1 {
			l = toUpper(local)
		}
		out = append(out, l+"@"+d)
	}
	return out
}

func toUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}
