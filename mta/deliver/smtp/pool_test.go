package smtp

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/deliver"
)

func reuseSetup(t *testing.T, configure func(*gosmtp.Server)) (int, *testServer, *mockdns.Resolver) {
	t.Helper()
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx.example.test", lns[0], script{}, configure)
	res := zones(map[string]mockdns.Zone{
		"example.test":    {MX: []net.MX{mx("mx.example.test", 10)}},
		"mx.example.test": {A: []string{"127.0.0.1"}},
	})
	return port, srv, res
}

func TestConsecutiveMessagesShareOneConnection(t *testing.T) {
	port, srv, res := reuseSetup(t, nil)
	a := newAgent(t, port, res, nil)
	for i := 0; i < 3; i++ {
		r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf(fmt.Sprintf("user%d@example.test", i)))
		wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	}
	if n := srv.accepts.Load(); n != 1 {
		t.Fatalf("%d connections for 3 messages", n)
	}
	if len(srv.messages()) != 3 || srv.resets.Load() < 2 {
		t.Fatalf("%d messages, %d RSET", len(srv.messages()), srv.resets.Load())
	}
	if a.pool.idleCount() != 1 {
		t.Fatalf("%d idle connections", a.pool.idleCount())
	}
	// Close sends QUIT and empties the cache; delivery goes on without it.
	a.Close()
	if a.pool.idleCount() != 0 {
		t.Fatal("Close left idle connections")
	}
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("late@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if srv.accepts.Load() != 2 || a.pool.idleCount() != 0 {
		t.Fatalf("after Close: %d connections, %d idle", srv.accepts.Load(), a.pool.idleCount())
	}
}

func TestReusedConnectionKeepsTLS(t *testing.T) {
	ca := newCA(t)
	cert := ca.issue(t, "mx.example.test")
	port, srv, res := reuseSetup(t, func(s *gosmtp.Server) { s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} })
	a := newAgent(t, port, res, func(o *Options) { o.TLSPolicy = TLSVerify; o.TLSConfig = &tls.Config{RootCAs: ca.pool} })
	for i := 0; i < 2; i++ {
		r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
		wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	}
	m := srv.messages()
	if srv.accepts.Load() != 1 || len(m) != 2 || !m[0].tls || !m[1].tls {
		t.Fatalf("%d connections, messages %+v", srv.accepts.Load(), m)
	}
}

func TestIdleConnectionExpires(t *testing.T) {
	port, srv, res := reuseSetup(t, nil)
	a := newAgent(t, port, res, func(o *Options) { o.CacheIdle = 50 * time.Millisecond })
	deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	deadline := time.Now().Add(5 * time.Second)
	for a.pool.idleCount() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a.pool.idleCount() != 0 {
		t.Fatal("the idle connection was not closed")
	}
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if srv.accepts.Load() != 2 {
		t.Fatalf("%d connections", srv.accepts.Load())
	}
}

func TestConnectionClosedByServerWhileIdleIsReplaced(t *testing.T) {
	// The server drops connections idle for 100ms; the agent keeps them 10s.
	port, srv, res := reuseSetup(t, func(s *gosmtp.Server) { s.ReadTimeout = 100 * time.Millisecond })
	a := newAgent(t, port, res, func(o *Options) { o.CacheIdle = 10 * time.Second })
	deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	time.Sleep(300 * time.Millisecond)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if srv.accepts.Load() != 2 || len(srv.messages()) != 2 {
		t.Fatalf("%d connections, %d messages", srv.accepts.Load(), len(srv.messages()))
	}
}

func TestReuseLimits(t *testing.T) {
	port, srv, res := reuseSetup(t, nil)
	a := newAgent(t, port, res, func(o *Options) { o.ReuseCount = 2 })
	for i := 0; i < 4; i++ {
		deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	}
	if n := srv.accepts.Load(); n != 2 {
		t.Fatalf("%d connections for 4 messages at 2 per connection", n)
	}
	// A failed transaction is not kept.
	srv.setScript(script{rcpt: map[string]*gosmtp.SMTPError{"gone@example.test": smtpErr(550, 5, 1, 1, "User unknown")}})
	b := newAgent(t, port, res, nil)
	deliverOK(t, b, "", newMessage(t, testBody), rcptsOf("gone@example.test"))
	if b.pool.idleCount() != 0 {
		t.Fatal("a connection that delivered nothing was kept")
	}
	// Reuse off.
	c := newAgent(t, port, res, func(o *Options) { o.CacheMax = -1 })
	before := srv.accepts.Load()
	deliverOK(t, c, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	deliverOK(t, c, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	if srv.accepts.Load()-before != 2 || c.pool.idleCount() != 0 {
		t.Fatalf("reuse off: %d connections", srv.accepts.Load()-before)
	}
}

func TestConcurrentDeliveriesToOneDestination(t *testing.T) {
	port, srv, res := reuseSetup(t, nil)
	a := newAgent(t, port, res, func(o *Options) { o.CacheMax = 4 })
	const workers, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan string, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := a.Deliver(t.Context(), "", newMessage(t, testBody), rcptsOf(fmt.Sprintf("u%d-%d@example.test", w, i)))
				if r[0].Status != deliver.Delivered {
					errs <- r[0].Reply.String()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := len(srv.messages()); n != workers*each {
		t.Fatalf("%d messages", n)
	}
	if n := srv.accepts.Load(); n > workers*each/2 {
		t.Fatalf("%d connections for %d messages: no reuse", n, workers*each)
	}
	if n := a.pool.idleCount(); n > 4 {
		t.Fatalf("%d idle connections, limit 4", n)
	}
	t.Logf("%d messages over %d connections", workers*each, srv.accepts.Load())
}
