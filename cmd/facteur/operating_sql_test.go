package main

import (
	"context"
	"testing"

	"github.com/facteur/facteur/store/storetest"
)

// operatingSeed is the data the queries of the README's "Operating facteur" section are run
// against: a little of everything they look at, recent enough for their
// time windows.
const operatingSeed = `
INSERT INTO domain (name) VALUES ('example.com');
INSERT INTO mailbox (address, quota_bytes) VALUES ('john@example.com', 1000000), ('big@example.com', 2000000);
INSERT INTO quota_usage (username, bytes, messages) VALUES ('john@example.com', 950000, 40), ('big@example.com', 500000, 9);
INSERT INTO queue_message (id, node, spool_key, sender, size, arrived_at, held, hold_reason) VALUES
    ('OPHELD000001', 'mx1', 'k1', 'john@example.com', 1234, now() - interval '3 hours', true, 'spam run'),
    ('OPDEFER00002', 'mx1', 'k2', 'john@example.com', 4321, now() - interval '2 days', false, NULL);
INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, status, attempts, last_reply, last_relay,
        dsn_pending, dsn_action) VALUES
    ('OPHELD000001', 'bob@partner.example', 'bob@partner.example', 'partner.example', 'smtp', 'queued', 0, '', '', false, NULL),
    ('OPDEFER00002', 'carol@partner.example', 'carol@partner.example', 'partner.example', 'smtp', 'deferred', 4,
        '451 4.7.1 Greylisted', 'mx.partner.example[192.0.2.25]:25', false, NULL),
    ('OPDEFER00002', 'dave@partner.example', 'dave@partner.example', 'partner.example', 'smtp', 'bounced', 1,
        '550 5.1.1 no such user', 'mx.partner.example[192.0.2.25]:25', true, 'failed');
INSERT INTO delivery_log (at, queue_id, node, sender, recipient, domain, transport, relay, delay_seconds, dsn, status, reply) VALUES
    (current_date - 1 + interval '10 hours', 'OPDEFER00002', 'mx1', 'john@example.com', 'carol@partner.example', 'partner.example',
        'smtp', 'mx.partner.example[192.0.2.25]:25', 30, '4.7.1', 'deferred', '451 4.7.1 Greylisted'),
    (now() - interval '1 minute', 'OPDEFER00002', 'mx1', 'john@example.com', 'carol@partner.example', 'partner.example',
        'smtp', 'mx.partner.example[192.0.2.25]:25', 7200, '4.7.1', 'deferred', '451 4.7.1 Greylisted'),
    (now() - interval '1 minute', 'OPDEFER00002', 'mx1', 'john@example.com', 'dave@partner.example', 'partner.example',
        'smtp', 'mx.partner.example[192.0.2.25]:25', 7200, '5.1.1', 'bounced', '550 5.1.1 no such user'),
    (now() - interval '1 minute', 'OPSENT000003', 'mx1', 'john@example.com', 'eve@other.example', 'other.example',
        'smtp:[relay.example]:587', 'relay.example[192.0.2.80]:587', 1.5, '2.0.0', 'sent', '250 2.0.0 Ok'),
    (now() - interval '1 minute', 'OPSENT000004', 'mx1', 'alice@else.example', 'john@example.com', 'example.com',
        'maildir', 'maildir', 0.2, '2.0.0', 'sent', '250 2.0.0 delivered to maildir');
INSERT INTO accepted_log (queue_id, at, node, sender, recipients, size, auth_user) VALUES
    ('OPSENT000003', now() - interval '2 minutes', 'mx1', 'john@example.com', 1, 2000, 'john@example.com');
INSERT INTO audit_log (actor, operation, table_name, row_key, old, new) VALUES
    ('cli:root', 'UPDATE', 'queue_message', 'OPHELD000001', '{}', '{"action": "hold", "held": true}');
`

// TestOperatingSQLRuns runs every sql block of the README's "Operating
// facteur" section against a fresh migrated database holding a
// little data; each must succeed, and each SELECT must return rows, so that
// a query that no longer matches the schema or its data fails here.
func TestOperatingSQLRuns(t *testing.T) {
	blocks := readmeSectionBlocks(t, "Operating facteur", "sql")
	if len(blocks) < 10 {
		t.Fatalf("README.md \"Operating facteur\" has %d sql blocks, want at least ten operator queries", len(blocks))
	}
	db := storetest.New(t)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Conn().PgConn().Exec(ctx, operatingSeed).ReadAll(); err != nil {
		t.Fatalf("seed: %v", err)
	}
	for i, sql := range blocks {
		// The simple protocol, as psql sends a query.
		results, err := conn.Conn().PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Errorf("README.md operating sql block %d failed: %v\n%s", i+1, err, sql)
			continue
		}
		for _, r := range results {
			if tag := r.CommandTag; tag.Select() && tag.RowsAffected() == 0 {
				t.Errorf("README.md operating sql block %d returned no row of the test data:\n%s", i+1, sql)
			}
		}
	}
}
