package pickup_test

import (
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/pickup"
)

// countingMetrics counts Connection calls and the sessions still open.
type countingMetrics struct {
	mu          sync.Mutex
	conns, open int
}

func (m *countingMetrics) Connection(listener string) func() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if listener != "pickup" {
		panic("listener " + listener)
	}
	m.conns++
	m.open++
	return func() {
		m.mu.Lock()
		m.open--
		m.mu.Unlock()
	}
}

// TestPickupCountsConnections: a SUBMIT connection and one handed to the
// SMTP server (-bs) are each counted once, and each session ends.
func TestPickupCountsConnections(t *testing.T) {
	m := &countingMetrics{}
	e := newEnvWith(t, func(o *pickup.Options) { o.Metrics = m })
	if code, _, stderr := e.sendmail("To: bob@example.com\nSubject: t\n\nhi\n", "-t"); code != 0 {
		t.Fatalf("sendmail -t: exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.sendmail("EHLO localhost\nQUIT\n", "-bs"); code != 0 {
		t.Fatalf("sendmail -bs: exit %d: %s", code, stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		conns, open := m.conns, m.open
		m.mu.Unlock()
		if conns == 2 && open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pickup connections %d, open %d; want 2 and 0", conns, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
