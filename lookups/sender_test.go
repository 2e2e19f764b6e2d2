package lookups_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/facteur/facteur/lookups"
)

func TestSenderPermission(t *testing.T) {
	db, st := newFixture(t)
	ctx := context.Background()
	// An alias with one destination in an inactive domain never grants.
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO domain (name) VALUES ('later-off.test');
		INSERT INTO alias (address, destinations) VALUES ('me@later-off.test', '{john@example.test}');
		UPDATE domain SET active = false WHERE name = 'later-off.test';`); err != nil {
		t.Fatal(err)
	}
	r := lookups.New(st, testOptions())
	cases := []struct {
		user, sender string
		allowed      bool
	}{
		{"john@example.test", "john@example.test", true},
		{"John@Example.TEST", "JOHN@example.test", true},
		{"john@example.test", "john+list@example.test", true},
		{"john@example.test", "john@alias.test", true},        // alias domain of the user's domain
		{"john@example.test", "john+x@Alias.Test", true},      // both
		{"john@example.test", "john@offalias.test", false},    // inactive alias domain
		{"john@example.test", "jane@example.test", false},     // another mailbox
		{"john@example.test", "info@example.test", true},      // alias with john as only destination
		{"john@example.test", "info+x@example.test", true},    // its extension
		{"john@example.test", "info@alias.test", true},        // through the alias domain
		{"jane@example.test", "info@example.test", false},     // not jane's alias
		{"john@example.test", "sales@example.test", false},    // several destinations
		{"john@example.test", "team@example.test", false},     // several destinations
		{"john@example.test", "oldinfo@example.test", false},  // inactive alias
		{"john@example.test", "me@later-off.test", false},     // alias in an inactive domain
		{"boss@example.test", "anyone@catch.test", false},     // catch-all never grants
		{"john@example.test", "news@example.test", true},      // sender_grant for the address
		{"john@example.test", "anything@lmtp.test", true},     // sender_grant for the domain
		{"john@example.test", "anything@lmtp.test.", true},    // trailing dot
		{"jane@example.test", "anything@lmtp.test", false},    // someone else's grant
		{"john@example.test", "old@example.test", false},      // inactive grant
		{"john@example.test", "someone@remote.test", false},   // nothing
		{"bob@example.test", "bob@example.test", false},       // inactive mailbox
		{"nobody@example.test", "nobody@example.test", false}, // no mailbox
		{"john@example.test", "", true},                       // the null sender
	}
	for _, c := range cases {
		p, err := r.SenderPermission(ctx, c.user, c.sender)
		if err != nil {
			t.Errorf("SenderPermission(%q, %q): %v", c.user, c.sender, err)
			continue
		}
		if p.Allowed != c.allowed || p.Reason == "" {
			t.Errorf("SenderPermission(%q, %q) = %+v, want allowed %v with a reason", c.user, c.sender, p, c.allowed)
		}
		ok, err := r.SenderAllowed(ctx, c.user, c.sender)
		if err != nil || ok != c.allowed {
			t.Errorf("SenderAllowed(%q, %q) = %v, %v", c.user, c.sender, ok, err)
		}
	}
	for _, bad := range [][2]string{{"john", "john@example.test"}, {"john@example.test", "no-domain"}} {
		if _, err := r.SenderAllowed(ctx, bad[0], bad[1]); !errors.Is(err, lookups.ErrBadAddress) {
			t.Errorf("SenderAllowed(%q, %q): err = %v, want ErrBadAddress", bad[0], bad[1], err)
		}
	}
}

func TestClientAccess(t *testing.T) {
	_, st := newFixture(t)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	cases := []struct {
		ip                  string
		relay, qmqp, reject bool
	}{
		{"10.9.9.9", true, false, false},
		{"10.1.2.3", false, false, true},    // a /32 reject inside a permitted /8
		{"192.168.2.1", false, false, true}, // rejected /16
		{"192.168.1.5", true, true, false},  // permitted /24 inside it
		{"192.168.9.1", false, false, true}, // same /24 permitted and rejected: reject wins
		{"::ffff:10.9.9.9", true, false, false},
		{"2001:db8::1", true, false, false},
		{"2001:db9::1", false, false, false},
		{"172.16.1.1", false, false, false}, // inactive row
		{"8.8.8.8", false, false, false},
	}
	for pass := range 2 { // the second pass is served from the cache
		for _, c := range cases {
			relay, qmqp, reject, err := r.ClientAccess(ctx, netip.MustParseAddr(c.ip))
			if err != nil || relay != c.relay || qmqp != c.qmqp || reject != c.reject {
				t.Errorf("pass %d: ClientAccess(%s) = %v, %v, %v, %v; want %v, %v, %v",
					pass, c.ip, relay, qmqp, reject, err, c.relay, c.qmqp, c.reject)
			}
		}
	}
	if _, _, _, err := r.ClientAccess(ctx, netip.Addr{}); err == nil {
		t.Error("ClientAccess of the zero address: no error")
	}
}
