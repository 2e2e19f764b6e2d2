package harness

import (
	"bufio"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// Sink is a remote MX on loopback that counts what it receives: for each
// Message-ID, how many times each recipient got it. Recipients whose local
// part starts with "defer" get 451 4.3.2, with "reject" 550 5.1.1.
type Sink struct {
	Addr string
	// Delay, if set, is slept in DATA after the message is read and before
	// the reply: it widens the window in which a crash of the sender
	// leaves a delivered message unrecorded.
	Delay func() time.Duration

	srv      *gosmtp.Server
	mu       sync.Mutex
	got      map[string]map[string]int // Message-ID -> recipient -> deliveries
	messages int
}

// NewSink starts a sink on 127.0.0.1, closed at the test's end.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{Addr: ln.Addr().String(), got: map[string]map[string]int{}}
	s.srv = gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) { return &sinkSession{s: s}, nil }))
	s.srv.Domain = "sink.remote.test"
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	go s.srv.Serve(ln) //nolint:errcheck // ends when closed
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// Port returns the sink's TCP port.
func (s *Sink) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Count returns how many times rcpt received the message with this
// Message-ID (angle brackets included, as in the header).
func (s *Sink) Count(msgID, rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[msgID][strings.ToLower(rcpt)]
}

// Snapshot returns a copy of everything received.
func (s *Sink) Snapshot() map[string]map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]int, len(s.got))
	for id, m := range s.got {
		c := make(map[string]int, len(m))
		for r, n := range m {
			c[r] = n
		}
		out[id] = c
	}
	return out
}

// Messages returns the number of transactions the sink accepted.
func (s *Sink) Messages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messages
}

type sinkSession struct {
	s     *Sink
	rcpts []string
}

func (x *sinkSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (x *sinkSession) Reset()                                 { x.rcpts = nil }
func (x *sinkSession) Logout() error                          { return nil }
func (x *sinkSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	local := strings.ToLower(to)
	if i := strings.LastIndexByte(local, '@'); i >= 0 {
		local = local[:i]
	}
	switch {
	case strings.HasPrefix(local, "defer"):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "try again later"}
	case strings.HasPrefix(local, "reject"):
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	}
	x.rcpts = append(x.rcpts, strings.ToLower(to))
	return nil
}

func (x *sinkSession) Data(r io.Reader) error {
	br := bufio.NewReader(r)
	h, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	id := strings.TrimSpace(h.Get("Message-Id"))
	if x.s.Delay != nil {
		time.Sleep(x.s.Delay())
	}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.s.messages++
	m := x.s.got[id]
	if m == nil {
		m = map[string]int{}
		x.s.got[id] = m
	}
	for _, r := range x.rcpts {
		m[r]++
	}
	return nil
}
