package milter

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/facteur/facteur/mta/envelope"
)

const sampleHeader = "Received: from a\r\n\tby b\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"X-Spam: one\r\n" +
	"Subject:no space\r\n" +
	"x-spam:  two\r\n" +
	"\r\n"

func TestParseHeaderRoundTrip(t *testing.T) {
	h := ParseHeader([]byte(sampleHeader + "body\r\n"))
	want := Header{
		{"Received", " from a\r\n\tby b"},
		{"From", " Alice <alice@example.org>"},
		{"X-Spam", " one"},
		{"Subject", "no space"},
		{"x-spam", "  two"},
	}
	if !slices.Equal(h, want) {
		t.Fatalf("ParseHeader = %q, want %q", h, want)
	}
	var b bytes.Buffer
	h.WriteTo(&b)
	if b.String() != sampleHeader {
		t.Errorf("WriteTo = %q, want %q", b.String(), sampleHeader)
	}
	// LF-only input is written back with CRLF; a line that is not a field is kept.
	h = ParseHeader([]byte("A: 1\n b\nnot a field\nB: 2\n\nbody"))
	b.Reset()
	h.WriteTo(&b)
	if got, want := b.String(), "A: 1\r\n b\r\nnot a field\r\nB: 2\r\n\r\n"; got != want {
		t.Errorf("LF header written as %q, want %q", got, want)
	}
}

// TestHeaderIndexes checks the header indexes as Sendmail defines them:
// smfi_chgheader counts occurrences of one name from 1 (0 as 1) and appends
// past the end; smfi_insheader counts fields from 0 at the top.
func TestHeaderIndexes(t *testing.T) {
	tests := []struct {
		name string
		c    Change
		want string
	}{
		{"add appends", Change{Kind: AddHeader, Name: "X-New", Value: " v"},
			"Received|From|X-Spam|Subject|x-spam|X-New: v"},
		{"insert 0 at top", Change{Kind: InsertHeader, Name: "X-New", Value: " v"},
			"X-New: v|Received|From|X-Spam|Subject|x-spam"},
		{"insert 2 before third", Change{Kind: InsertHeader, Index: 2, Name: "X-New", Value: " v"},
			"Received|From|X-New: v|X-Spam|Subject|x-spam"},
		{"insert past end appends", Change{Kind: InsertHeader, Index: 99, Name: "X-New", Value: " v"},
			"Received|From|X-Spam|Subject|x-spam|X-New: v"},
		{"change 2nd occurrence, any case", Change{Kind: ChangeHeader, Index: 2, Name: "X-SPAM", Value: " changed"},
			"Received|From|X-Spam|Subject|x-spam: changed"},
		{"change index 0 is the first", Change{Kind: ChangeHeader, Index: 0, Name: "x-spam", Value: " changed"},
			"Received|From|X-Spam: changed|Subject|x-spam"},
		{"change missing occurrence appends", Change{Kind: ChangeHeader, Index: 3, Name: "X-Spam", Value: " three"},
			"Received|From|X-Spam|Subject|x-spam|X-Spam: three"},
		{"delete 1st occurrence", Change{Kind: DeleteHeader, Index: 1, Name: "x-spam"},
			"Received|From|Subject|x-spam"},
		{"delete missing does nothing", Change{Kind: DeleteHeader, Index: 5, Name: "X-Spam"},
			"Received|From|X-Spam|Subject|x-spam"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := ParseHeader([]byte(sampleHeader))
			r := &Result{Changes: []Change{tt.c}}
			got := r.Header(h)
			var names []string
			for _, f := range got {
				n := f.Name
				if strings.HasPrefix(f.Name, "X-New") || strings.Contains(f.Value, "changed") || strings.Contains(f.Value, "three") {
					n += ":" + f.Value
				}
				names = append(names, n)
			}
			if s := strings.Join(names, "|"); s != tt.want {
				t.Errorf("got %s, want %s", s, tt.want)
			}
			if !slices.Equal(h, ParseHeader([]byte(sampleHeader))) {
				t.Errorf("Result.Header changed its argument")
			}
		})
	}
}

// TestFieldValueCannotInjectLines checks that a header value from a milter
// cannot end the header block or start a new field.
func TestFieldValueCannotInjectLines(t *testing.T) {
	tests := []struct {
		in        string
		leadSpace bool
		want      string
	}{
		{"v", false, " v"},
		{" v", true, " v"},
		{"a\n\tb", false, " a\r\n\tb"},
		{"a\r\n b", false, " a\r\n b"},
		{"a\n\nBcc: x@y", false, " a\r\n\tBcc: x@y"},
		{"a\nX-Injected: 1", false, " a\r\n\tX-Injected: 1"},
		{"a\r", false, " a"},
	}
	for _, tt := range tests {
		got, err := fieldValue(tt.in, tt.leadSpace)
		if err != nil || got != tt.want {
			t.Errorf("fieldValue(%q, %v) = %q, %v; want %q", tt.in, tt.leadSpace, got, err, tt.want)
		}
	}
	if _, err := fieldValue("a\x00b", false); err == nil {
		t.Errorf("fieldValue accepted a NUL")
	}
}

func TestMilterValue(t *testing.T) {
	if got := milterValue(" a\r\n\tb", false); got != "a\n\tb" {
		t.Errorf("milterValue without leading space = %q", got)
	}
	if got := milterValue("  a\r\n\tb", true); got != "  a\n\tb" {
		t.Errorf("milterValue with leading space = %q", got)
	}
}

func TestRecipientChanges(t *testing.T) {
	r := &Result{Changes: []Change{
		{Kind: AddRcpt, Addr: "new@example.net"},
		{Kind: DelRcpt, Addr: "Bob@Example.net"},
		{Kind: AddRcpt, Addr: "carol@example.net"}, // already there
	}}
	orig := []string{"bob@example.net", "carol@example.net"}
	got := r.Recipients(orig)
	if want := []string{"carol@example.net", "new@example.net"}; !slices.Equal(got, want) {
		t.Errorf("Recipients = %q, want %q", got, want)
	}
	if orig[0] != "bob@example.net" {
		t.Errorf("Recipients changed its argument: %q", orig)
	}
}

func TestReplyVerdict(t *testing.T) {
	tests := []struct {
		code int
		text string
		want envelope.Reply
		dec  Decision
	}{
		{550, "5.7.1 Go away", envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "Go away"}, Reject},
		{451, "4.7.0 Later, 100%% sure", envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 0}, Text: "Later, 100% sure"}, TempFail},
		{554, "no status", envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 7, 1}, Text: "no status"}, Reject},
		{550, "5.7.1 line one\r\n550 5.7.1 line two", envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "line one\nline two"}, Reject},
		// A status of the wrong class is text, not status.
		{550, "4.7.1 odd", envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "4.7.1 odd"}, Reject},
	}
	for _, tt := range tests {
		v, err := replyVerdict("m", tt.code, tt.text)
		if err != nil || v.Reply != tt.want || v.Decision != tt.dec || v.Milter != "m" {
			t.Errorf("replyVerdict(%d, %q) = %+v, %v; want %+v %v", tt.code, tt.text, v, err, tt.want, tt.dec)
		}
	}
	for _, code := range []int{250, 354, 600} {
		if _, err := replyVerdict("m", code, "2.0.0 ok"); err == nil {
			t.Errorf("replyVerdict accepted code %d", code)
		}
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"unix:/run/opendkim/opendkim.sock", "unix", "/run/opendkim/opendkim.sock"},
		{"local:/run/m.sock", "unix", "/run/m.sock"},
		{"unix:///run/m.sock", "unix", "/run/m.sock"},
		{"inet:127.0.0.1:8891", "tcp", "127.0.0.1:8891"},
		{"inet:8891@localhost", "tcp", "localhost:8891"},
		{"inet:8891@[127.0.0.1]", "tcp", "127.0.0.1:8891"},
		{"inet6:[::1]:8891", "tcp", "[::1]:8891"},
		{"tcp://127.0.0.1:11332", "tcp", "127.0.0.1:11332"},
	}
	for _, tt := range tests {
		n, a, err := ParseAddr(tt.in)
		if err != nil || n != tt.network || a != tt.addr {
			t.Errorf("ParseAddr(%q) = %q, %q, %v; want %q, %q", tt.in, n, a, err, tt.network, tt.addr)
		}
	}
	for _, bad := range []string{"", "/run/m.sock", "unix:relative", "inet:host", "inet:host:0", "http://x:1", "inet:99999@h"} {
		if _, _, err := ParseAddr(bad); err == nil {
			t.Errorf("ParseAddr(%q) accepted", bad)
		}
	}
	if _, err := New(Options{Milters: []Config{{Addr: "inet:127.0.0.1:1", DefaultAction: "bounce"}}}); err == nil {
		t.Errorf("New accepted default action bounce")
	}
}

func TestCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\n":     "a\r\nb\r\n",
		"a\r\nb":     "a\r\nb\r\n",
		"":           "",
		"\n":         "\r\n",
		"x\r\n\r\ny": "x\r\n\r\ny\r\n",
	} {
		if got := string(crlf([]byte(in))); got != want {
			t.Errorf("crlf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitMessage(t *testing.T) {
	for _, tt := range []struct{ msg, body string }{
		{sampleHeader + "body\r\nmore\r\n", "body\r\nmore\r\n"},
		{"A: 1\r\n", ""},
		{"A: 1\r\n\r\n", ""},
		{"A: 1\n\nLF body\n", "LF body\n"},
	} {
		h, body, err := SplitMessage(strings.NewReader(tt.msg), int64(len(tt.msg)), 0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(body)
		if string(b) != tt.body || len(h) == 0 {
			t.Errorf("SplitMessage(%q) = %q, body %q; want body %q", tt.msg, h, b, tt.body)
		}
	}
	big := strings.Repeat("X-A: 0123456789\r\n", 100) + "\r\nbody"
	if _, _, err := SplitMessage(strings.NewReader(big), int64(len(big)), 1000); err != ErrHeaderTooLong {
		t.Errorf("SplitMessage over the limit: %v", err)
	}
}
