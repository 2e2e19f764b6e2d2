package milter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/facteur/facteur/mta/envelope"
)

// scripted is an in-process milter built on go-milter's server (protocol
// version 2, so the client also goes through its downgrade). Each callback
// can be scripted; what the milter saw is recorded.
type scripted struct {
	gomilter.NoOpMilter
	rec *record

	connect func() gomilter.Response
	mail    func(from string) gomilter.Response
	rcpt    func(to string) gomilter.Response
	header  func(name, value string) gomilter.Response
	eom     func(m *gomilter.Modifier) gomilter.Response
}

// record is what a scripted milter saw, shared by its connections.
type record struct {
	mu      sync.Mutex
	events  []string
	headers []string
	body    []byte
	macros  map[string]string
}

func (r *record) add(ev string, m *gomilter.Modifier) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if m != nil {
		if r.macros == nil {
			r.macros = map[string]string{}
		}
		for k, v := range m.Macros {
			r.macros[k] = v
		}
	}
}

func (r *record) snapshot() (events, headers []string, body string, macros map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), slices.Clone(r.headers), string(r.body), r.macros
}

func orContinue(f func() gomilter.Response) (gomilter.Response, error) {
	if f == nil {
		return gomilter.RespContinue, nil
	}
	return f(), nil
}

func (s *scripted) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("connect "+host+" "+family+" "+addr.String(), m)
	return orContinue(s.connect)
}

func (s *scripted) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("helo "+name, m)
	return gomilter.RespContinue, nil
}

func (s *scripted) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("mail "+from, m)
	if s.mail != nil {
		return s.mail(from), nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) RcptTo(to string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("rcpt "+to, m)
	if s.rcpt != nil {
		return s.rcpt(to), nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.mu.Lock()
	s.rec.headers = append(s.rec.headers, name+":"+value)
	s.rec.mu.Unlock()
	if s.header != nil {
		return s.header(name, value), nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("eoh", m)
	return gomilter.RespContinue, nil
}

func (s *scripted) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.mu.Lock()
	s.rec.body = append(s.rec.body, chunk...)
	s.rec.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (s *scripted) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("eom", m)
	if s.eom != nil {
		return s.eom(m), nil
	}
	return gomilter.RespAccept, nil
}

func (s *scripted) Abort(m *gomilter.Modifier) error {
	s.rec.add("abort", m)
	return nil
}

const allActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
	gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom

// serve starts a go-milter server for proto on a loopback TCP port and
// returns its address in Postfix's form.
func serve(t *testing.T, proto scripted) (addr string, rec *record) {
	t.Helper()
	rec = &record{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter {
			m := proto
			m.rec = rec
			return &m
		},
		Actions: allActions,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "inet:" + ln.Addr().String(), rec
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newClient(t *testing.T, cfgs ...Config) *Client {
	t.Helper()
	c, err := New(Options{Milters: cfgs, Hostname: "mx.example.org", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const testMessage = "Received: from client.example.net by mx.example.org\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: test\r\n" +
	"X-Old: 1\r\n" +
	"\r\n" +
	"Hello Bob.\r\n" +
	"Second line.\r\n"

// splitMessage gives the header and a body reader of a message.
func splitMessage(msg string) (Header, *io.SectionReader) {
	h, body, err := SplitMessage(strings.NewReader(msg), int64(len(msg)), 0)
	if err != nil {
		panic(err)
	}
	return h, body
}

// envelopeRun runs connect to data and returns the session.
func envelopeRun(t *testing.T, ctx context.Context, c *Client, rcpts ...string) *Session {
	t.Helper()
	s := c.NewSession(nil, map[string]string{"{daemon_addr}": "192.0.2.1"})
	t.Cleanup(func() { s.Close() })
	for _, v := range []Verdict{
		s.Connect(ctx, "client.example.net", netip.MustParseAddr("192.0.2.7"), 40000),
		s.Helo(ctx, "client.example.net"),
		s.Mail(ctx, "alice@example.org", []string{"BODY=8BITMIME"}),
	} {
		if v.Decision != Continue {
			t.Fatalf("envelope verdict %+v", v)
		}
	}
	for _, r := range rcpts {
		if v := s.Rcpt(ctx, r, nil); v.Decision != Continue {
			t.Fatalf("rcpt %s: %+v", r, v)
		}
	}
	if v := s.Data(ctx); v.Decision != Continue {
		t.Fatalf("data: %+v", v)
	}
	return s
}

func TestEveryModification(t *testing.T) {
	addr, rec := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
		m.AddHeader("X-Added", "added\n\tfolded")
		m.InsertHeader(0, "X-Top", "top")
		m.ChangeHeader(1, "Subject", "changed")
		m.ChangeHeader(1, "X-Old", "") // delete
		m.AddRecipient("carol@example.net")
		m.DeleteRecipient("bob@example.net")
		m.ChangeFrom("<bounce@example.org>")
		m.ReplaceBody([]byte("New body\r\nline 2\r\n"))
		m.Quarantine("looks odd")
		return gomilter.RespAccept
	}})
	ctx := context.Background()
	c := newClient(t, Config{Name: "scripted", Addr: addr, CommandTimeout: 5 * time.Second})
	s := envelopeRun(t, ctx, c, "bob@example.net")
	hdr, body := splitMessage(testMessage)
	res, err := s.Message(ctx, hdr, body)
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision != Continue || !res.Modified() {
		t.Fatalf("result %+v", res)
	}
	if res.Quarantine != "looks odd" {
		t.Errorf("quarantine = %q", res.Quarantine)
	}
	if !res.SenderChanged || res.Sender != "bounce@example.org" {
		t.Errorf("sender change = %v %q", res.SenderChanged, res.Sender)
	}
	var out bytes.Buffer
	rcpts, err := res.Apply(&out, hdr, body, []string{"bob@example.net"})
	if err != nil {
		t.Fatal(err)
	}
	want := "X-Top: top\r\n" +
		"Received: from client.example.net by mx.example.org\r\n" +
		"From: Alice <alice@example.org>\r\n" +
		"To: bob@example.net\r\n" +
		"Subject: changed\r\n" +
		"X-Added: added\r\n\tfolded\r\n" +
		"\r\n" +
		"New body\r\nline 2\r\n"
	if out.String() != want {
		t.Errorf("applied message:\n%q\nwant\n%q", out.String(), want)
	}
	if !slices.Equal(rcpts, []string{"carol@example.net"}) {
		t.Errorf("recipients = %q", rcpts)
	}
	// The milter saw the whole message as sent, and the macros.
	events, headers, gotBody, macros := rec.snapshot()
	if gotBody != "Hello Bob.\r\nSecond line.\r\n" {
		t.Errorf("milter saw body %q", gotBody)
	}
	if len(headers) != 5 || headers[1] != "From:Alice <alice@example.org>" {
		t.Errorf("milter saw headers %q", headers)
	}
	wantEvents := []string{"connect client.example.net tcp4 192.0.2.7", "helo client.example.net",
		"mail alice@example.org", "rcpt bob@example.net", "eoh", "eom"}
	if !slices.Equal(events, wantEvents) {
		t.Errorf("milter events %q, want %q", events, wantEvents)
	}
	for k, v := range map[string]string{"j": "mx.example.org", "{client_addr}": "192.0.2.7", "{daemon_addr}": "192.0.2.1",
		"{mail_addr}": "alice@example.org", "{rcpt_addr}": "bob@example.net"} {
		if macros[k] != v {
			t.Errorf("macro %s = %q, want %q (all: %v)", k, macros[k], v, macros)
		}
	}
}

func TestUnchangedBodyIsStreamed(t *testing.T) {
	addr, _ := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
		m.AddHeader("X-Scanned", "yes")
		return gomilter.RespAccept
	}})
	ctx := context.Background()
	s := envelopeRun(t, ctx, newClient(t, Config{Addr: addr}), "bob@example.net")
	// A body over one 64 KiB chunk.
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 3000)
	hdr, body := splitMessage("From: a@example.org\r\n\r\n" + big)
	res, err := s.Message(ctx, hdr, body)
	if err != nil || res.Decision != Continue {
		t.Fatalf("Message = %+v, %v", res, err)
	}
	var out bytes.Buffer
	if _, err := res.Apply(&out, hdr, io.NewSectionReader(body, 0, body.Size()), nil); err != nil {
		t.Fatal(err)
	}
	if want := "From: a@example.org\r\nX-Scanned: yes\r\n\r\n" + big; out.String() != want {
		t.Errorf("applied message differs (%d bytes, want %d)", out.Len(), len(want))
	}
}

func TestVerdicts(t *testing.T) {
	ctx := context.Background()
	reject550 := envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "Command rejected"}
	t.Run("ConnectRejectStandsForTheSession", func(t *testing.T) {
		addr, _ := serve(t, scripted{connect: func() gomilter.Response { return gomilter.RespReject }})
		s := newClient(t, Config{Addr: addr}).NewSession(nil, nil)
		defer s.Close()
		v := s.Connect(ctx, "", netip.MustParseAddr("192.0.2.7"), 1)
		if v.Decision != Reject || v.Reply != reject550 {
			t.Fatalf("connect verdict %+v", v)
		}
		if v := s.Mail(ctx, "a@example.org", nil); v.Decision != Reject {
			t.Errorf("mail after rejected connect: %+v", v)
		}
	})
	t.Run("AcceptEndsTheMilter", func(t *testing.T) {
		// Accept at CONNECT: never asked again in this session.
		addr, rec := serve(t, scripted{connect: func() gomilter.Response { return gomilter.RespAccept }})
		s := envelopeRun(t, ctx, newClient(t, Config{Addr: addr}), "bob@example.net")
		if v := s.Connect(ctx, "again", netip.Addr{}, 0); v.Decision != Continue {
			t.Errorf("second Connect: %+v", v)
		}
		hdr, body := splitMessage(testMessage)
		if res, err := s.Message(ctx, hdr, body); err != nil || res.Decision != Continue {
			t.Errorf("Message = %+v, %v", res, err)
		}
		if events, _, _, _ := rec.snapshot(); len(events) != 1 {
			t.Errorf("milter saw %q after accepting the connection", events)
		}
		// Accept at MAIL: not asked again for this message, asked for the next.
		n := 0
		addr, rec = serve(t, scripted{mail: func(string) gomilter.Response {
			if n++; n == 1 {
				return gomilter.RespAccept
			}
			return gomilter.RespContinue
		}})
		s = envelopeRun(t, ctx, newClient(t, Config{Addr: addr}), "bob@example.net")
		if res, err := s.Message(ctx, hdr, body); err != nil || res.Decision != Continue {
			t.Errorf("Message = %+v, %v", res, err)
		}
		s.Mail(ctx, "c@example.org", nil)
		s.Rcpt(ctx, "d@example.net", nil)
		events, _, _, _ := rec.snapshot()
		if want := []string{"connect client.example.net tcp4 192.0.2.7", "helo client.example.net",
			"mail alice@example.org", "mail c@example.org", "rcpt d@example.net"}; !slices.Equal(events, want) {
			t.Errorf("events %q, want %q", events, want)
		}
	})
	t.Run("MailTempFail", func(t *testing.T) {
		addr, rec := serve(t, scripted{mail: func(string) gomilter.Response { return gomilter.RespTempFail }})
		s := newClient(t, Config{Addr: addr}).NewSession(nil, nil)
		defer s.Close()
		s.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
		v := s.Mail(ctx, "a@example.org", nil)
		if v.Decision != TempFail || v.Reply.String() != "451 4.7.1 Service unavailable - try again later" {
			t.Fatalf("mail verdict %+v", v)
		}
		if v.Err() == nil {
			t.Errorf("Err() = nil for tempfail")
		}
		// The transaction is over: a new one starts cleanly.
		if v := s.Mail(ctx, "b@example.org", nil); v.Decision != TempFail {
			t.Errorf("second mail: %+v", v)
		}
		if events, _, _, _ := rec.snapshot(); !slices.Contains(events, "abort") {
			t.Errorf("milter was not told the transaction ended: %q", events)
		}
	})
	t.Run("RcptPerRecipient", func(t *testing.T) {
		addr, _ := serve(t, scripted{rcpt: func(to string) gomilter.Response {
			switch to {
			case "spamtrap@example.net":
				return gomilter.NewResponseStr('y', "550 5.1.1 No such user here")
			case "busy@example.net":
				return gomilter.RespTempFail
			}
			return gomilter.RespContinue
		}})
		s := newClient(t, Config{Addr: addr}).NewSession(nil, nil)
		defer s.Close()
		s.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
		s.Mail(ctx, "a@example.org", nil)
		if v := s.Rcpt(ctx, "spamtrap@example.net", nil); v.Reply.String() != "550 5.1.1 No such user here" || v.Decision != Reject {
			t.Errorf("spamtrap: %+v", v)
		}
		if v := s.Rcpt(ctx, "busy@example.net", nil); v.Decision != TempFail {
			t.Errorf("busy: %+v", v)
		}
		if v := s.Rcpt(ctx, "bob@example.net", nil); v.Decision != Continue || v.Err() != nil {
			t.Errorf("bob: %+v", v)
		}
	})
	t.Run("RcptDiscardDiscardsTheMessage", func(t *testing.T) {
		addr, rec := serve(t, scripted{rcpt: func(string) gomilter.Response { return gomilter.RespDiscard }})
		s := newClient(t, Config{Name: "d", Addr: addr}).NewSession(nil, nil)
		defer s.Close()
		s.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
		s.Mail(ctx, "a@example.org", nil)
		if v := s.Rcpt(ctx, "bob@example.net", nil); v.Decision != Discard || v.Err() != nil || v.Milter != "d" {
			t.Errorf("rcpt: %+v", v)
		}
		if v := s.Data(ctx); v.Decision != Discard {
			t.Errorf("data: %+v", v)
		}
		hdr, body := splitMessage(testMessage)
		res, err := s.Message(ctx, hdr, body)
		if err != nil || res.Decision != Discard {
			t.Errorf("message: %+v, %v", res, err)
		}
		if events, _, _, _ := rec.snapshot(); slices.Contains(events, "eom") {
			t.Errorf("a discarded message went to the milter: %q", events)
		}
	})
	for _, tt := range []struct {
		name string
		resp gomilter.Response
		want string
		dec  Decision
	}{
		{"EOMReject", gomilter.RespReject, "550 5.7.1 Command rejected", Reject},
		{"EOMTempFail", gomilter.RespTempFail, "451 4.7.1 Service unavailable - try again later", TempFail},
		{"EOMCustomReply", gomilter.NewResponseStr('y', "554 5.7.0 Virus found: Eicar-Test-Signature"), "554 5.7.0 Virus found: Eicar-Test-Signature", Reject},
		{"EOMCustomTempReply", gomilter.NewResponseStr('y', "452 4.3.1 Scanner busy"), "452 4.3.1 Scanner busy", TempFail},
		{"EOMMultiLineReply", gomilter.NewResponseStr('y', "550-5.7.1 Spam score 99\r\n550 5.7.1 See https://example.org/"), "550 5.7.1 Spam score 99 See https://example.org/", Reject},
		{"EOMDiscard", gomilter.RespDiscard, "000", Discard},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
				m.AddHeader("X-Dropped", "changes of a rejected message are dropped")
				return tt.resp
			}})
			s := envelopeRun(t, ctx, newClient(t, Config{Addr: addr}), "bob@example.net")
			hdr, body := splitMessage(testMessage)
			res, err := s.Message(ctx, hdr, body)
			if err != nil {
				t.Fatal(err)
			}
			if res.Decision != tt.dec || res.Reply.String() != tt.want || len(res.Changes) != 0 {
				t.Errorf("result %+v, want %v %q", res, tt.dec, tt.want)
			}
			// The session goes on with the next message.
			if v := s.Mail(ctx, "c@example.org", nil); v.Decision != Continue {
				t.Errorf("next mail: %+v", v)
			}
		})
	}
}

// TestMiltersRunInOrderOnTheChangedMessage checks that with two milters the
// second sees the first one's header changes and replaced body, that its
// header index refers to what it saw, and that a reject by the first stops
// the second.
func TestMiltersRunInOrderOnTheChangedMessage(t *testing.T) {
	ctx := context.Background()
	addr1, _ := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
		m.InsertHeader(0, "X-First", "1")
		m.ReplaceBody([]byte("body from first\n"))
		return gomilter.RespAccept
	}})
	addr2, rec2 := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
		m.ChangeHeader(1, "X-First", "seen by second")
		m.InsertHeader(1, "X-Second", "2")
		return gomilter.RespAccept
	}})
	c := newClient(t, Config{Name: "first", Addr: addr1}, Config{Name: "second", Addr: addr2})
	s := envelopeRun(t, ctx, c, "bob@example.net")
	hdr, body := splitMessage(testMessage)
	res, err := s.Message(ctx, hdr, body)
	if err != nil || res.Decision != Continue {
		t.Fatalf("Message = %+v, %v", res, err)
	}
	_, headers, gotBody, _ := rec2.snapshot()
	if len(headers) == 0 || headers[0] != "X-First:1" || gotBody != "body from first\r\n" {
		t.Errorf("second milter saw headers %q body %q", headers, gotBody)
	}
	var out bytes.Buffer
	res.Apply(&out, hdr, body, nil)
	if !strings.HasPrefix(out.String(), "X-First: seen by second\r\nX-Second: 2\r\nReceived:") ||
		!strings.HasSuffix(out.String(), "\r\n\r\nbody from first\r\n") {
		t.Errorf("applied message %q", out.String())
	}
	if res.Changes[0].Milter != "first" || res.Changes[len(res.Changes)-1].Milter != "second" {
		t.Errorf("changes not in milter order: %+v", res.Changes)
	}

	// A reject by the first: the second is not asked.
	addr3, _ := serve(t, scripted{mail: func(string) gomilter.Response { return gomilter.RespReject }})
	addr4, rec4 := serve(t, scripted{})
	s2 := newClient(t, Config{Addr: addr3}, Config{Addr: addr4}).NewSession(nil, nil)
	defer s2.Close()
	s2.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
	if v := s2.Mail(ctx, "a@example.org", nil); v.Decision != Reject {
		t.Errorf("mail: %+v", v)
	}
	if events, _, _, _ := rec4.snapshot(); slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, "mail") }) {
		t.Errorf("second milter saw MAIL after the first rejected it: %q", events)
	}
}

// TestMilterDownDefaultAction checks the default actions when the milter
// cannot be reached.
func TestMilterDownDefaultAction(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("/tmp", "fmil")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	down := "unix:" + dir + "/nobody-listens.sock"
	tests := []struct {
		action DefaultAction
		want   string
	}{
		{ActionTempFail, "451 4.7.1 Service unavailable - try again later"},
		{"", "451 4.7.1 Service unavailable - try again later"},
		{ActionReject, "554 5.7.1 Service unavailable"},
	}
	for _, tt := range tests {
		s := newClient(t, Config{Name: "down", Addr: down, DefaultAction: tt.action}).NewSession(nil, nil)
		v := s.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
		if v.Reply.String() != tt.want || v.Milter != "down" {
			t.Errorf("default %q: connect verdict %+v, want %s", tt.action, v, tt.want)
		}
		// It stands for the whole session.
		if v := s.Mail(ctx, "a@example.org", nil); v.Reply.String() != tt.want {
			t.Errorf("default %q: mail verdict %+v", tt.action, v)
		}
		s.Close()
	}

	// accept: carry on without it, and with the milters that work.
	addr, rec := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
		m.AddHeader("X-Working", "yes")
		return gomilter.RespAccept
	}})
	c := newClient(t, Config{Addr: down, DefaultAction: ActionAccept}, Config{Addr: addr})
	s := envelopeRun(t, ctx, c, "bob@example.net")
	hdr, body := splitMessage(testMessage)
	res, err := s.Message(ctx, hdr, body)
	if err != nil || res.Decision != Continue || len(res.Changes) != 1 {
		t.Errorf("accept default: %+v, %v", res, err)
	}
	if events, _, _, _ := rec.snapshot(); !slices.Contains(events, "eom") {
		t.Errorf("working milter not used: %q", events)
	}
}

// silent accepts connections and reads without ever answering.
func silent(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return "inet:" + ln.Addr().String()
}

func TestMilterTimeouts(t *testing.T) {
	ctx := context.Background()
	t.Run("NoAnswerToNegotiation", func(t *testing.T) {
		s := newClient(t, Config{Addr: silent(t), CommandTimeout: 200 * time.Millisecond}).NewSession(nil, nil)
		defer s.Close()
		start := time.Now()
		v := s.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
		if v.Reply.String() != "451 4.7.1 Service unavailable - try again later" {
			t.Errorf("verdict %+v", v)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("SlowEndOfMessage", func(t *testing.T) {
		addr, _ := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
			time.Sleep(2 * time.Second)
			return gomilter.RespAccept
		}})
		c := newClient(t, Config{Addr: addr, CommandTimeout: 300 * time.Millisecond, DefaultAction: ActionReject})
		s := envelopeRun(t, ctx, c, "bob@example.net")
		hdr, body := splitMessage(testMessage)
		start := time.Now()
		res, err := s.Message(ctx, hdr, body)
		if err != nil || res.Reply.String() != "554 5.7.1 Service unavailable" {
			t.Errorf("Message = %+v, %v", res, err)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("took %v", d)
		}
	})
	t.Run("ContentTimeoutAndCancel", func(t *testing.T) {
		addr, _ := serve(t, scripted{eom: func(m *gomilter.Modifier) gomilter.Response {
			time.Sleep(2 * time.Second)
			return gomilter.RespAccept
		}})
		c := newClient(t, Config{Addr: addr, ContentTimeout: 300 * time.Millisecond})
		s := envelopeRun(t, ctx, c, "bob@example.net")
		hdr, body := splitMessage(testMessage)
		start := time.Now()
		res, _ := s.Message(ctx, hdr, body)
		if res.Decision != TempFail || time.Since(start) > 1500*time.Millisecond {
			t.Errorf("content timeout: %+v after %v", res, time.Since(start))
		}
		// A cancelled context ends the stage at once.
		s2 := envelopeRun(t, ctx, newClient(t, Config{Addr: addr}), "bob@example.net")
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start = time.Now()
		res, _ = s2.Message(cctx, hdr, body)
		if res.Decision != TempFail || time.Since(start) > 1500*time.Millisecond {
			t.Errorf("cancel: %+v after %v", res, time.Since(start))
		}
	})
}

// TestBadMilterActions checks that a milter cannot smuggle lines into the
// header, put a bad address in the envelope, or send a success code as a
// reply: each is a protocol violation, and the default action applies.
func TestBadMilterActions(t *testing.T) {
	ctx := context.Background()
	for name, eom := range map[string]func(m *gomilter.Modifier) gomilter.Response{
		"BadHeaderName": func(m *gomilter.Modifier) gomilter.Response {
			m.AddHeader("Bad Name", "x")
			return gomilter.RespAccept
		},
		"BadRecipient": func(m *gomilter.Modifier) gomilter.Response {
			m.AddRecipient("a@b\r\nRCPT TO:<c@d>")
			return gomilter.RespAccept
		},
		"SuccessReply": func(m *gomilter.Modifier) gomilter.Response {
			return gomilter.NewResponseStr('y', "250 2.0.0 fine")
		},
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := serve(t, scripted{eom: eom})
			s := envelopeRun(t, ctx, newClient(t, Config{Addr: addr}), "bob@example.net")
			hdr, body := splitMessage(testMessage)
			res, err := s.Message(ctx, hdr, body)
			if err != nil || res.Decision != TempFail || len(res.Changes) != 0 {
				t.Errorf("Message = %+v, %v", res, err)
			}
		})
	}
}

func TestNoMilters(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	s := envelopeRun(t, ctx, c, "bob@example.net")
	hdr, body := splitMessage(testMessage)
	res, err := s.Message(ctx, hdr, body)
	if err != nil || res.Decision != Continue || res.Modified() {
		t.Errorf("Message = %+v, %v", res, err)
	}
	if v := c.NewSession(nil, nil).Rcpt(ctx, "a@b", nil); v.Decision != TempFail {
		t.Errorf("Rcpt without Mail = %+v, want an internal error", v)
	}
}
