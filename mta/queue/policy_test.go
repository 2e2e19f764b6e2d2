package queue

import (
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/store"
)

func TestDecide(t *testing.T) {
	def := DefaultPolicy()
	short := PolicyConfig{MinBackoff: time.Second, MaxBackoff: 10 * time.Second, MaxQueueLifetime: time.Minute,
		BounceQueueLifetime: 30 * time.Second, DelayWarningTime: 20 * time.Second}.WithDefaults()
	off := PolicyConfig{}.WithDefaults() // no delay notices
	const sender = "alice@example.org"
	tests := []struct {
		name string
		cfg  PolicyConfig
		a    Attempt
		want Decision
	}{
		{"delivered", def, Attempt{Result: deliver.Delivered, Sender: sender, Age: time.Hour},
			Decision{Status: store.RcptDelivered}},
		{"delivered NOTIFY=SUCCESS", def, Attempt{Result: deliver.Delivered, Sender: sender, Notify: "SUCCESS,FAILURE"},
			Decision{Status: store.RcptDelivered, DSN: store.DSNDelivered}},
		{"relayed NOTIFY=success", def, Attempt{Result: deliver.Delivered, Relayed: true, Sender: sender, Notify: "success"},
			Decision{Status: store.RcptDelivered, DSN: store.DSNRelayed}},
		{"delivered NOTIFY=SUCCESS null sender", def, Attempt{Result: deliver.Delivered, Notify: "SUCCESS"},
			Decision{Status: store.RcptDelivered}},

		{"bounced", def, Attempt{Result: deliver.Bounced, Sender: sender},
			Decision{Status: store.RcptBounced, DSN: store.DSNFailed}},
		{"bounced NOTIFY=NEVER", def, Attempt{Result: deliver.Bounced, Sender: sender, Notify: "NEVER"},
			Decision{Status: store.RcptBounced, NoDSN: "NOTIFY=NEVER"}},
		{"bounced NOTIFY=SUCCESS only", def, Attempt{Result: deliver.Bounced, Sender: sender, Notify: "SUCCESS"},
			Decision{Status: store.RcptBounced, NoDSN: "NOTIFY=NEVER"}},
		{"bounced null sender", def, Attempt{Result: deliver.Bounced, Kind: KindMail},
			Decision{Status: store.RcptBounced, NoDSN: "no DSN to the null sender"}},
		{"bounced DSN: double bounce", def, Attempt{Result: deliver.Bounced, Kind: KindDSN},
			Decision{Status: store.RcptBounced, DSN: store.DSNFailed}},
		{"bounced double bounce: dropped", def, Attempt{Result: deliver.Bounced, Kind: KindDoubleBounce},
			Decision{Status: store.RcptBounced, NoDSN: "double bounce dropped"}},

		// Postfix's backoff: the message's age, clamped to [300 s, 4000 s].
		{"deferred young", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 10 * time.Second},
			Decision{Status: store.RcptDeferred, RetryIn: 300 * time.Second}},
		{"deferred 20 min", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 20 * time.Minute},
			Decision{Status: store.RcptDeferred, RetryIn: 20 * time.Minute}},
		{"deferred 3 h", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 3 * time.Hour},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred 4 h: delay notice", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 4 * time.Hour},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second, DSN: store.DSNDelayed}},
		{"deferred 4 h, notice given", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5 * time.Hour, DelayNotified: true},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred 4 h, NOTIFY=FAILURE", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5 * time.Hour, Notify: "FAILURE"},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred 4 h, NOTIFY=DELAY", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5 * time.Hour, Notify: "delay"},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second, DSN: store.DSNDelayed}},
		{"deferred 4 h, null sender", def, Attempt{Result: deliver.Deferred, Age: 5 * time.Hour},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred DSN 4 h: no delay notice", def, Attempt{Result: deliver.Deferred, Kind: KindDSN, Age: 5 * time.Hour},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred 4 h, notices off", off, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5 * time.Hour},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred just under 5 days", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5*24*time.Hour - time.Second, DelayNotified: true},
			Decision{Status: store.RcptDeferred, RetryIn: 4000 * time.Second}},
		{"deferred at 5 days: expired", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5 * 24 * time.Hour},
			Decision{Status: store.RcptExpired, DSN: store.DSNFailed}},
		{"expired NOTIFY=NEVER", def, Attempt{Result: deliver.Deferred, Sender: sender, Age: 6 * 24 * time.Hour, Notify: "NEVER"},
			Decision{Status: store.RcptExpired, NoDSN: "NOTIFY=NEVER"}},

		{"short: backoff min", short, Attempt{Result: deliver.Deferred, Sender: sender, Age: 0},
			Decision{Status: store.RcptDeferred, RetryIn: time.Second}},
		{"short: backoff age", short, Attempt{Result: deliver.Deferred, Sender: sender, Age: 5 * time.Second},
			Decision{Status: store.RcptDeferred, RetryIn: 5 * time.Second}},
		{"short: delay notice", short, Attempt{Result: deliver.Deferred, Sender: sender, Age: 25 * time.Second},
			Decision{Status: store.RcptDeferred, RetryIn: 10 * time.Second, DSN: store.DSNDelayed}},
		{"short: DSN expires at the bounce lifetime", short, Attempt{Result: deliver.Deferred, Kind: KindDSN, Age: 30 * time.Second},
			Decision{Status: store.RcptExpired, DSN: store.DSNFailed}},
		{"short: mail lives on", short, Attempt{Result: deliver.Deferred, Sender: sender, Age: 30 * time.Second, DelayNotified: true},
			Decision{Status: store.RcptDeferred, RetryIn: 10 * time.Second}},
		{"short: mail expires", short, Attempt{Result: deliver.Deferred, Sender: sender, Age: time.Minute},
			Decision{Status: store.RcptExpired, DSN: store.DSNFailed}},
		{"short: double bounce expires, dropped", short, Attempt{Result: deliver.Deferred, Kind: KindDoubleBounce, Age: time.Minute},
			Decision{Status: store.RcptExpired, NoDSN: "double bounce dropped"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.cfg, tt.a); got != tt.want {
				t.Errorf("Decide(%+v) = %+v, want %+v", tt.a, got, tt.want)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	d := DefaultPolicy()
	if d.MinBackoff != 300*time.Second || d.MaxBackoff != 4000*time.Second || d.MaxQueueLifetime != 120*time.Hour ||
		d.BounceQueueLifetime != 120*time.Hour || d.DelayWarningTime != 4*time.Hour {
		t.Errorf("DefaultPolicy() = %+v", d)
	}
	if c := (PolicyConfig{MinBackoff: time.Hour, MaxBackoff: time.Minute}).WithDefaults(); c.MaxBackoff != time.Hour {
		t.Errorf("MaxBackoff below MinBackoff: %+v", c)
	}
}

func TestFormatDelay(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0", 4 * time.Millisecond: "0", 22 * time.Millisecond: "0.02", 1500 * time.Millisecond: "1.5",
		9990 * time.Millisecond: "9.99", 12600 * time.Millisecond: "13", 3 * time.Hour: "10800",
	} {
		if got := formatDelay(d); got != want {
			t.Errorf("formatDelay(%v) = %q, want %q", d, got, want)
		}
	}
}
