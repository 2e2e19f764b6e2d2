package dovecot

import (
	"strings"
	"testing"
)

func params() Params {
	return Params{DovecotDir: "/etc/dovecot/", PGConnect: "host=/run/postgresql dbname=facteur user=dovecot",
		MailRoot: "/var/mail/vhosts/", MailUser: "vmail", MailGroup: "vmail", MailUID: 105, MailGID: 108,
		FacteurUser: "facteur"}
}

func TestRenderFillsEveryPlaceholder(t *testing.T) {
	out, err := Render(params())
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(Names) {
		t.Fatalf("%d files rendered; want %d", len(out), len(Names))
	}
	for name, b := range out {
		if placeholderRE.Match(b) {
			t.Errorf("%s: placeholder left: %s", name, placeholderRE.Find(b))
		}
	}
	conf := string(out["99-facteur.conf"])
	for _, want := range []string{"args = /etc/dovecot/dovecot-sql.conf.ext\n", "first_valid_uid = 105\n",
		"mail_location = maildir:/var/mail/vhosts/%d/%n\n", `username_filter = "*#*"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("99-facteur.conf lacks %q", want)
		}
	}
	if !strings.Contains(string(out["dovecot-sql.conf.ext"]), "'maildir:/var/mail/vhosts/' ||") {
		t.Errorf("user_query does not use the mail root:\n%s", out["dovecot-sql.conf.ext"])
	}
}

func TestRenderRefusesBrokenValues(t *testing.T) {
	for name, mod := range map[string]func(*Params){
		"relative root":  func(p *Params) { p.MailRoot = "mail" },
		"quote in root":  func(p *Params) { p.MailRoot = "/var/mail/o'x" },
		"root uid":       func(p *Params) { p.MailUID = 0 },
		"newline":        func(p *Params) { p.PGConnect = "dbname=x\nuser=y" },
		"empty user":     func(p *Params) { p.FacteurUser = "" },
		"relative confs": func(p *Params) { p.DovecotDir = "dovecot" },
	} {
		p := params()
		mod(&p)
		if _, err := Render(p); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}
