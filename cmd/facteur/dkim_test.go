package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/dkimsign"
)

func TestCLIDKIMGenerateListShowRemove(t *testing.T) {
	c := newDataCLI(t)
	c.ok(nil, "", "domain", "add", "a.example")

	// generate prints the record to publish, in both forms.
	out := c.ok(nil, "", "dkim", "generate", "A.Example", "--selector", "s1")
	if !strings.Contains(out, "name:   s1._domainkey.a.example\n") ||
		!strings.Contains(out, "record: v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA") ||
		!strings.Contains(out, "s1._domainkey.a.example. IN TXT ( \"v=DKIM1; k=rsa; p=") ||
		strings.Contains(out, "PRIVATE") {
		t.Fatalf("generate printed\n%s", out)
	}
	// The stored private key is the published public key's pair.
	var pemText, pub string
	if err := c.db.Pool.QueryRow(context.Background(),
		`SELECT private_key, public_key FROM dkim_key WHERE domain = 'a.example' AND selector = 's1'`).Scan(&pemText, &pub); err != nil {
		t.Fatal(err)
	}
	if _, k, err := dkimsign.ParsePrivateKey(pemText); err != nil || k.PublicKey != pub || !strings.Contains(out, pub[:200]) {
		t.Fatalf("stored key: %v", err)
	}

	var key map[string]any
	c.ok(&key, "", "--json", "dkim", "generate", "a.example", "--algorithm", "ed25519", "--selector", "s2", "--active=false")
	if key["selector"] != "s2" || key["algorithm"] != "ed25519-sha256" || key["active"] != false ||
		!strings.HasPrefix(key["dns_record"].(string), "v=DKIM1; k=ed25519; p=") || key["PrivateKey"] != nil {
		t.Fatalf("generate --json printed %v", key)
	}
	for k := range key {
		if strings.Contains(strings.ToLower(k), "private") {
			t.Fatalf("JSON carries %s", k)
		}
	}
	// The default selector is f<date>.
	c.ok(&key, "", "--json", "dkim", "generate", "a.example", "--algorithm", "ed25519", "--active=false")
	if want := "f" + time.Now().UTC().Format("20060102"); key["selector"] != want {
		t.Fatalf("default selector %v, want %s", key["selector"], want)
	}

	c.fails("domain nowhere.example does not exist", "", "dkim", "generate", "nowhere.example")
	c.fails("already exists", "", "dkim", "generate", "a.example", "--selector", "s1", "--algorithm", "ed25519")
	c.fails("unknown DKIM algorithm", "", "dkim", "generate", "a.example", "--algorithm", "dsa")
	c.fails("selector \"bad selector\"", "", "dkim", "generate", "a.example", "--selector", "bad selector", "--algorithm", "ed25519")

	// list marks the signing key: the newest active one.
	human := c.ok(nil, "", "dkim", "list")
	lines := strings.Split(strings.TrimSpace(human), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "DOMAIN") || !strings.Contains(human, "s1") ||
		strings.Count(human, " yes ") != 2 {
		t.Fatalf("list printed\n%s", human)
	}
	// show: the signing key by default, else the one named.
	if out := c.ok(nil, "", "dkim", "show", "a.example"); !strings.Contains(out, "s1._domainkey.a.example") {
		t.Fatalf("show printed\n%s", out)
	}
	c.ok(nil, "", "dkim", "activate", "a.example", "s2")
	if out := c.ok(nil, "", "dkim", "show", "a.example"); !strings.Contains(out, "s2._domainkey.a.example") || !strings.Contains(out, "k=ed25519") {
		t.Fatalf("show after activate printed\n%s", out)
	}
	if out := c.ok(nil, "", "dkim", "show", "a.example", "S1"); !strings.Contains(out, "name:   s1._domainkey.a.example") {
		t.Fatalf("show s1 printed\n%s", out)
	}
	c.ok(nil, "", "dkim", "deactivate", "a.example", "s2")
	c.ok(nil, "", "dkim", "rm", "a.example", "s1")
	c.fails("not found", "", "dkim", "rm", "a.example", "s1")
	c.fails("not found", "", "dkim", "show", "a.example", "s1")
	if n := c.count(`SELECT count(*) FROM dkim_key`); n != 2 {
		t.Fatalf("%d keys left", n)
	}
	c.ok(nil, "", "domain", "add", "b.example")
	c.fails("has no DKIM key", "", "dkim", "show", "b.example")
	// Every change is audited, without the private key.
	if n := c.count(`SELECT count(*) FROM audit_log WHERE table_name = 'dkim_key' AND actor LIKE 'cli:%'`); n != 6 {
		t.Fatalf("%d audit rows", n)
	}
	if n := c.count(`SELECT count(*) FROM audit_log WHERE coalesce(new::text, '') || coalesce(old::text, '') LIKE '%PRIVATE KEY%'`); n != 0 {
		t.Fatalf("private key in audit_log")
	}
}
