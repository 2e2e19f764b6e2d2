package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/facteur/facteur/store/storetest"
)

// readmeBlocks returns the fenced code blocks of README.md in language lang.
func readmeBlocks(t *testing.T, lang string) []string {
	return readmeSectionBlocks(t, "", lang)
}

// readmeSectionBlocks returns the fenced code blocks in language lang of the
// README.md section under the level-2 heading section ("" for the whole
// file).
func readmeSectionBlocks(t *testing.T, section, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if section != "" {
		start := strings.Index(text, "\n## "+section+"\n")
		if start < 0 {
			t.Fatalf("README.md has no section %q", section)
		}
		text = text[start+1:]
		if end := strings.Index(text[3:], "\n## "); end >= 0 {
			text = text[:end+3]
		}
	}
	re := regexp.MustCompile("(?ms)^```" + regexp.QuoteMeta(lang) + "[ \t]*\n(.*?)^```[ \t]*$")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// readmeSeed is the data the README's queries are written against.
const readmeSeed = `
INSERT INTO domain (name) VALUES ('example.test');
INSERT INTO mailbox (address, name, quota_bytes) VALUES
    ('postmaster@example.test', 'Postmaster', 1000000), ('john@example.test', 'John', 2000000);
INSERT INTO alias (address, destinations) VALUES ('abuse@example.test', ARRAY['postmaster@example.test']);
INSERT INTO quota_usage (username, bytes, messages) VALUES ('john@example.test', 1500000, 12);
INSERT INTO admin (username, password, superadmin) VALUES ('admin@example.test', '{PLAIN}x', true), ('alice@example.test', '{PLAIN}x', false);
INSERT INTO domain_admin (username, domain) VALUES ('alice@example.test', 'example.test');
INSERT INTO transport (key, nexthop) VALUES ('partner.example', 'smtp:[mx.partner.example]:25');
INSERT INTO queue_message (id, node, spool_key, sender, size) VALUES ('4XbC9dQk2mZ', 'mx1', 'k1', 'john@example.test', 1234);
INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, status)
    VALUES ('4XbC9dQk2mZ', 'bob@partner.example', 'bob@partner.example', 'partner.example', 'smtp:[mx.partner.example]:25', 'deferred');
INSERT INTO delivery_log (queue_id, recipient, domain, status, delay_seconds, reply)
    VALUES ('4XbC9dQk2mZ', 'bob@partner.example', 'partner.example', 'deferred', 3.5, '451 4.7.1 try later');
`

// TestReadmeSQLRuns runs every sql block of README.md, in order, against a
// fresh database holding a little data; each statement must succeed and
// return or touch at least one row.
func TestReadmeSQLRuns(t *testing.T) {
	blocks := readmeSectionBlocks(t, "SQL for operators", "sql")
	if len(blocks) < 8 {
		t.Fatalf("README.md has %d sql blocks, want the operator examples (at least 8)", len(blocks))
	}
	db := storetest.New(t)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Conn().PgConn().Exec(ctx, readmeSeed).ReadAll(); err != nil {
		t.Fatalf("seed: %v", err)
	}
	for i, sql := range blocks {
		// The simple protocol, as psql sends a script: several statements,
		// BEGIN and COMMIT included.
		results, err := conn.Conn().PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Errorf("README sql block %d failed: %v\n%s", i+1, err, sql)
			continue
		}
		for _, r := range results {
			tag := r.CommandTag
			if (tag.Select() || tag.Insert() || tag.Update() || tag.Delete()) && tag.RowsAffected() == 0 {
				t.Errorf("README sql block %d: %q touched no row of the test data:\n%s", i+1, tag.String(), sql)
			}
		}
	}
}

// TestReadmeConfigurationLoads checks that the configuration example of
// README.md uses only keys facteur knows.
func TestReadmeConfigurationLoads(t *testing.T) {
	blocks := readmeBlocks(t, "toml")
	if len(blocks) == 0 {
		t.Fatal("README.md has no toml block")
	}
	for i, b := range blocks {
		path := filepath.Join(t.TempDir(), "facteur.toml")
		if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path)
		if err != nil {
			t.Errorf("README toml block %d: %v", i+1, err)
			continue
		}
		if !strings.HasPrefix(cfg.DatabaseURL, "postgres://") || cfg.Listen.SMTP == "" {
			t.Errorf("README toml block %d did not load as written: %+v", i+1, cfg)
		}
	}
}
