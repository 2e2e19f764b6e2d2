package lookups_test

import (
	"context"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// fixture is the data every resolution test runs against, written by raw SQL
// as an operator would.
const fixture = `
INSERT INTO domain (name, max_message_bytes) VALUES ('example.test', 10485760);
INSERT INTO domain (name, transport) VALUES ('lmtp.test', 'lmtp:unix:/run/dovecot/lmtp');
INSERT INTO domain (name, active) VALUES ('off.test', false);
INSERT INTO domain (name, backup_mx, transport) VALUES ('backup.test', true, 'smtp:[primary.backup.test]:25');
INSERT INTO domain (name, backup_mx) VALUES ('relay2.test', true);
INSERT INTO domain (name, backup_mx) VALUES ('relay3.test', true);
INSERT INTO domain (name, local) VALUES ('host.test', true);
INSERT INTO domain (name) VALUES ('catch.test'), ('fwd.test'), ('loop.test'), ('xn--bcher-kva.test');
INSERT INTO domain (name, transport) VALUES ('tr.test', 'lmtp:unix:/run/domain-column');
INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.test', 'example.test');
INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES ('offalias.test', 'example.test', false);
INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('toofftarget.test', 'off.test');

INSERT INTO mailbox (address, quota_bytes) VALUES ('john@example.test', 1000000);
INSERT INTO mailbox (address, transport) VALUES ('jane@example.test', 'lmtp:[10.0.0.5]:24');
INSERT INTO mailbox (address, active) VALUES ('bob@example.test', false);
INSERT INTO mailbox (address, maildir) VALUES ('sales+archive@example.test', 'archive/sales/');
INSERT INTO mailbox (address) VALUES ('keep@example.test'), ('k1@example.test'), ('k2@example.test'),
    ('boss@example.test'), ('hostmaster@example.test'), ('shadowed@example.test'),
    ('fwd@lmtp.test'), ('real@catch.test'), ('u@xn--bcher-kva.test'),
    ('addr@tr.test'), ('other@tr.test'), ('inact@tr.test');
INSERT INTO mailbox (address, transport) VALUES ('ovr@tr.test', 'maildir');

INSERT INTO alias (address, destinations) VALUES
    ('sales@example.test', '{john@example.test,jane@example.test,partner@remote.test}'),
    ('team@example.test', '{sales@example.test,john@example.test}'),
    ('deadend@example.test', '{nobody@example.test}'),
    ('tobob@example.test', '{bob@example.test}'),
    ('out@example.test', '{someone@remote.test}'),
    ('routed@example.test', '{x@routed.test}'),
    ('viaalias@example.test', '{john@alias.test}'),
    ('fwd@example.test', '{@lmtp.test}'),
    ('john+news@example.test', '{jane@example.test}'),
    ('keep@example.test', '{keep@example.test,ext@remote.test}'),
    ('k1@example.test', '{k1@example.test,k2@example.test}'),
    ('k2@example.test', '{k2@example.test,k1@example.test}'),
    ('info@example.test', '{john@example.test}'),
    ('special@backup.test', '{john@example.test}'),
    ('keep@backup.test', '{keep@backup.test,john@example.test}'),
    ('@catch.test', '{boss@example.test}'),
    ('@fwd.test', '{@example.test}'),
    ('a@loop.test', '{b@loop.test}'),
    ('b@loop.test', '{c@loop.test}'),
    ('c@loop.test', '{a@loop.test}'),
    ('root@host.test', '{|/usr/bin/procmail -a x,/var/log/root.mbox,:include:/etc/mail/staff,admin,ghost,john@example.test}'),
    -- /etc/aliases' "daemon: \daemon, john@example.test" and "self: \self" (no such user)
    ('daemon@host.test', '{daemon,john@example.test}'),
    ('self@host.test', '{self}');
INSERT INTO alias (address, destinations, active) VALUES ('gone@example.test', '{john@example.test}', false);
INSERT INTO alias (address, destinations, active) VALUES ('oldinfo@example.test', '{john@example.test}', false);
-- a chain of 22 aliases d1 -> d2 -> ... -> d22 -> john
INSERT INTO alias (address, destinations)
    SELECT 'd' || i || '@loop.test', ARRAY['d' || (i + 1) || '@loop.test'] FROM generate_series(1, 21) i;
INSERT INTO alias (address, destinations) VALUES ('d22@loop.test', '{john@example.test}');
-- a chain of 5: e1 -> ... -> e5 -> john (within the depth limit)
INSERT INTO alias (address, destinations)
    SELECT 'e' || i || '@loop.test', ARRAY['e' || (i + 1) || '@loop.test'] FROM generate_series(1, 4) i;
INSERT INTO alias (address, destinations) VALUES ('e5@loop.test', '{john@example.test}');
-- fan-out: 1000 destinations pass, 1001 do not
INSERT INTO alias (address, destinations)
    SELECT 'fan1000@example.test', array_agg('r' || i || '@remote.test') FROM generate_series(1, 1000) i;
INSERT INTO alias (address, destinations)
    SELECT 'fan1001@example.test', array_agg('r' || i || '@remote.test') FROM generate_series(1, 1001) i;

INSERT INTO transport (key, nexthop) VALUES
    ('routed.test', 'smtp:[mx.routed.test]:2525'),
    ('relay2.test', 'relay:[gateway.relay2.test]'),
    ('jane@example.test', 'smtp:[ignored.test]'),
    ('tr.test', 'lmtp:unix:/run/domain-row'),
    ('addr@tr.test', 'lmtp:unix:/run/address-row'),
    ('addr+x@tr.test', 'discard'),
    ('special@remote.test', 'error:5.7.1 go away');
INSERT INTO transport (key, nexthop, active) VALUES ('inact@tr.test', 'error:5.0.0 inactive row', false);

INSERT INTO sender_grant (mailbox, sender) VALUES ('john@example.test', 'news@example.test'),
    ('john@example.test', '@lmtp.test');
INSERT INTO sender_grant (mailbox, sender, active) VALUES ('john@example.test', 'old@example.test', false);

INSERT INTO client_access (network, action) VALUES
    ('10.0.0.0/8', 'permit_relay'), ('10.1.2.3/32', 'reject'),
    ('192.168.0.0/16', 'reject'), ('192.168.1.0/24', 'permit_relay'), ('192.168.1.0/24', 'permit_qmqp'),
    ('192.168.9.0/24', 'permit_relay'), ('192.168.9.0/24', 'reject'),
    ('2001:db8::/32', 'permit_relay');
INSERT INTO client_access (network, action, active) VALUES ('172.16.0.0/12', 'permit_relay', false);
`

// shadowFixture is an alias that shadows a mailbox without keeping a copy:
// the database refuses to create it, but imported data may hold it (written
// here with the normalising trigger off, as the tables' owner may), and the
// alias must still win.
const shadowFixture = `
ALTER TABLE alias DISABLE TRIGGER alias_normalise;
INSERT INTO alias (address, local_part, domain, destinations)
    VALUES ('shadowed@example.test', 'shadowed', 'example.test', '{jane@example.test}');
ALTER TABLE alias ENABLE TRIGGER alias_normalise;
`

// localUsers is the test's system user database for local domains.
func localUsers(_ context.Context, name string) (bool, error) {
	return name == "admin" || name == "operator" || name == "daemon", nil
}

// testOptions are the resolver options of the fixture.
func testOptions() lookups.Options {
	return lookups.Options{
		Hostname:     "mx.example.test",
		Postmaster:   "hostmaster@example.test",
		LocalUser:    localUsers,
		LocalDomains: []string{"MX.example.test"},
	}
}

// newFixture returns a fresh database with the fixture and its store.
func newFixture(t testing.TB) (*storetest.DB, *store.Store) {
	t.Helper()
	db := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := db.Pool.Exec(ctx, fixture); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, shadowFixture); err != nil {
		t.Fatalf("shadow fixture: %v", err)
	}
	return db, store.New(db.Pool)
}
