package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/facteur/facteur/pfaimport"
	"github.com/facteur/facteur/pfaimport/pfaimporttest"
)

// TestCLIImportPostfixAdmin runs `facteur import postfixadmin` on the
// PostfixAdmin fixture: a dry run writes nothing, --apply writes, a second
// --apply changes nothing; rows that cannot be imported make status 1.
func TestCLIImportPostfixAdmin(t *testing.T) {
	c := newDataCLI(t)
	from := pfaimporttest.Load(t, "../../testdata/postfixadmin")

	out, err, code := c.run("", "import", "postfixadmin", "--from", from)
	if code != exitFailure || err == nil || !strings.Contains(err.Error(), "rows not imported or in conflict") {
		t.Fatalf("dry run: status %d, %v", code, err)
	}
	for _, want := range []string{"PostfixAdmin schema 1844", "dry run: nothing written", "mailbox", "Not imported (7):",
		"alias dave@example.org: forwards without keeping a copy", "15 mailbox self-aliases left out",
		"table fetchmail (1 rows) is not imported"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run report lacks %q:\n%s", want, out)
		}
	}
	if n := c.count(`SELECT count(*) FROM mailbox`); n != 0 {
		t.Fatalf("the dry run wrote %d mailboxes", n)
	}

	out, _, code = c.run("", "--json", "import", "postfixadmin", "--from", from, "--apply")
	var r pfaimport.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != exitFailure || !r.Applied || r.Changed() == 0 {
		t.Fatalf("--apply: status %d, %v, %+v\n%s", code, err, r, out)
	}
	if n := c.count(`SELECT count(*) FROM mailbox`); n != 18 {
		t.Errorf("%d mailboxes imported; want 18", n)
	}
	if n := c.count(`SELECT count(*) FROM audit_log WHERE actor = 'import:postfixadmin' AND table_name = 'mailbox'`); n != 18 {
		t.Errorf("%d mailbox audit rows by import:postfixadmin", n)
	}

	out, _, _ = c.run("", "import", "postfixadmin", "--from", from, "--apply")
	if !strings.Contains(out, "\n0 rows written.") || strings.Contains(out, "Conflicts") {
		t.Errorf("second --apply:\n%s", out)
	}

	c.fails("--from", "", "import", "postfixadmin")
	c.fails("only PostgreSQL", "", "import", "postfixadmin", "--from", "mysql://u@h/postfix")
}
