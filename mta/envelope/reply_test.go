package envelope

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestReplyTable pins the reply table of DESIGN: code, enhanced code and text
// as they appear on the wire.
func TestReplyTable(t *testing.T) {
	tests := []struct {
		name string
		r    Reply
		want string
	}{
		{"lookup failure", LookupFailed(), "451 4.3.0 Temporary lookup failure"},
		{"storage full", StorageFull(), "452 4.3.1 Insufficient system storage"},
		{"unknown user", UnknownUser("john@example.com"), "550 5.1.1 <john@example.com>: Recipient address rejected: User unknown"},
		{"unknown user, no address", UnknownUser(""), "550 5.1.1 Recipient address rejected: User unknown"},
		{"relay denied", RelayDenied("x@elsewhere.example"), "554 5.7.1 <x@elsewhere.example>: Relay access denied"},
		{"relay denied, no address", RelayDenied(""), "554 5.7.1 Relay access denied"},
		{"sender not owned", SenderNotOwned("boss@example.com"), "553 5.7.1 <boss@example.com>: Sender address rejected: not owned by user"},
		{"bare CR or LF", BareLineEnding(), "550 5.5.2 Bare CR or LF not allowed, closing connection"},
		{"too big", MessageTooBig(), "552 5.3.4 Message size exceeds fixed limit"},
		{"line too long", LineTooLong(), "552 5.3.4 Message line too long"},
		{"too many hops", TooManyHops(), "554 5.4.6 Too many hops"},
		{"auth required", AuthRequired(), "530 5.7.0 Authentication required"},
		{"non-ASCII address", NonASCIIAddress(), "553 5.6.7 Non-ASCII address requires SMTPUTF8"},
		{"too many recipients", TooManyRecipients(), "452 4.5.3 Too many recipients"},
		{"too many connections", TooManyConnections(), "421 4.7.0 Too many connections, try again later"},
		{"rate limited", RateLimited(), "421 4.7.0 Rate limit exceeded, try again later"},
		{"auth failed", AuthFailed(), "535 5.7.8 Authentication credentials invalid"},
		{"bad sequence", BadSequence(""), "503 5.5.1 Bad sequence of commands"},
		{"bad sequence, detail", BadSequence("need MAIL command"), "503 5.5.1 Error: need MAIL command"},
		{"syntax", SyntaxError(""), "501 5.5.4 Syntax error in parameters or arguments"},
		{"syntax, detail", SyntaxError("unknown NOTIFY value"), "501 5.5.4 Syntax error: unknown NOTIFY value"},
		{"bad recipient", BadRecipientSyntax(), "501 5.1.3 Bad recipient address syntax"},
		{"bad sender", BadSenderSyntax(), "501 5.1.7 Bad sender address syntax"},
		{"VRFY", VRFY(), "252 2.0.0 Cannot VRFY user, but will accept message"},
		{"queued", Queued("4XkQ2b7Hz1"), "250 2.0.0 Ok: queued as 4XkQ2b7Hz1"},
		{"queued, hostile id", Queued("ID\r\n250 ok"), "250 2.0.0 Ok: queued as ID250ok"},
		{"internal", InternalError("s-42"), "451 4.3.0 Internal error, session s-42"},
		{"internal, no id", InternalError(""), "451 4.3.0 Internal error"},
		{"pregreet", Pregreet(), "554 5.5.0 Error: SMTP protocol violation: command before the greeting"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%s: String() = %q; want %q", tt.name, got, tt.want)
		}
		if got := tt.r.Error(); got != tt.want {
			t.Errorf("%s: Error() = %q; want %q", tt.name, got, tt.want)
		}
		if !tt.r.Enhanced.Valid() || tt.r.Enhanced[0] != tt.r.Code/100 {
			t.Errorf("%s: status %v does not match code %d", tt.name, tt.r.Enhanced, tt.r.Code)
		}
		class := tt.r.Code / 100
		if tt.r.Temporary() != (class == 4) || tt.r.Permanent() != (class == 5) {
			t.Errorf("%s: Temporary %v, Permanent %v for code %d", tt.name, tt.r.Temporary(), tt.r.Permanent(), tt.r.Code)
		}
	}
}

func TestTemporaryPermanent(t *testing.T) {
	for _, tt := range []struct {
		code            int
		temporary, perm bool
	}{
		{250, false, false}, {354, false, false}, {400, true, false}, {451, true, false},
		{499, true, false}, {500, false, true}, {554, false, true}, {599, false, true},
		{0, false, false}, {600, false, false},
	} {
		r := Reply{Code: tt.code}
		if r.Temporary() != tt.temporary || r.Permanent() != tt.perm {
			t.Errorf("code %d: Temporary %v, Permanent %v; want %v, %v", tt.code, r.Temporary(), r.Permanent(), tt.temporary, tt.perm)
		}
	}
}

func TestReplyString(t *testing.T) {
	for _, tt := range []struct {
		r    Reply
		want string
	}{
		{Reply{Code: 550, Text: "no status"}, "550 no status"},
		{Reply{Code: 250, Enhanced: Status{2, 0, 0}}, "250 2.0.0"},
		{Reply{Code: 451, Enhanced: Status{4, 4, 1}, Text: "line one\nline two"}, "451 4.4.1 line one line two"},
		{Reply{Code: 550, Enhanced: Status{5, 1, 1}, Text: "a\r\nb\x00c"}, "550 5.1.1 a b c"},
		{Reply{Code: 50}, "050"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%#v.String() = %q; want %q", tt.r, got, tt.want)
		}
	}
}

func TestToSMTP(t *testing.T) {
	tests := []struct {
		r    Reply
		want smtp.SMTPError
	}{
		{UnknownUser("a@b"), smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<a@b>: Recipient address rejected: User unknown"}},
		{Reply{Code: 550, Text: "x"}, smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "x"}},
		{Reply{Code: 550, Enhanced: Status{7, 1, 1}, Text: "x"}, smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "x"}},
		// Multi-line replies keep their lines; nothing else can break a line.
		{Reply{Code: 451, Enhanced: Status{4, 3, 0}, Text: "one\r\ntwo"}, smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "one\ntwo"}},
		{Reply{Code: 550, Enhanced: Status{5, 0, 0}, Text: "a\rb\x00c\x1bd\u0085e\xfff"}, smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 0, 0}, Message: "ab c d e f"}},
	}
	for _, tt := range tests {
		got := tt.r.ToSMTP()
		if *got != tt.want {
			t.Errorf("%#v.ToSMTP() = %#v; want %#v", tt.r, *got, tt.want)
		}
	}

	// Long texts are cut to fit a 512-octet reply line, on a rune boundary.
	long := Reply{Code: 550, Enhanced: Status{5, 1, 1}, Text: strings.Repeat("é", 400) + "\n" + strings.Repeat("x", 600)}
	lines := strings.Split(long.ToSMTP().Message, "\n")
	if len(lines) != 2 {
		t.Fatalf("long reply: %d lines; want 2", len(lines))
	}
	for _, l := range lines {
		if n := len("550 5.1.1 ") + len(l) + len("\r\n"); n > 512 {
			t.Errorf("reply line of %d octets", n)
		}
		if !strings.HasPrefix(strings.Repeat("é", 400), l) && !strings.HasPrefix(strings.Repeat("x", 600), l) {
			t.Errorf("reply line cut inside a character: %q", l[len(l)-4:])
		}
	}
}

func TestFromSMTP(t *testing.T) {
	tests := []struct {
		in   *smtp.SMTPError
		want Reply
	}{
		{nil, Reply{}},
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}, Reply{550, Status{5, 1, 1}, "User unknown"}},
		{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.NoEnhancedCode, Message: "try later"}, Reply{451, Status{}, "try later"}},
		// The client leaves a code it could not parse in the message.
		{&smtp.SMTPError{Code: 452, Message: "4.2.2 Mailbox full"}, Reply{452, Status{4, 2, 2}, "Mailbox full"}},
		{&smtp.SMTPError{Code: 550, Message: "5.1.1"}, Reply{550, Status{5, 1, 1}, ""}},
		{&smtp.SMTPError{Code: 550, Message: "no code here"}, Reply{550, Status{}, "no code here"}},
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{9, 9, 9}, Message: "bad code"}, Reply{550, Status{}, "bad code"}},
	}
	for _, tt := range tests {
		if got := FromSMTP(tt.in); got != tt.want {
			t.Errorf("FromSMTP(%#v) = %#v; want %#v", tt.in, got, tt.want)
		}
	}
	// Round trip.
	for _, r := range []Reply{UnknownUser("a@b"), LookupFailed(), Queued("Q1"), {Code: 421, Text: "bye"}} {
		if got := FromSMTP(r.ToSMTP()); got != r {
			t.Errorf("FromSMTP(ToSMTP(%v)) = %v", r, got)
		}
	}
}

func TestParseEnhanced(t *testing.T) {
	tests := []struct {
		in   string
		st   Status
		rest string
		ok   bool
	}{
		{"5.1.1 User unknown", Status{5, 1, 1}, "User unknown", true},
		{"4.2.2 Mailbox full", Status{4, 2, 2}, "Mailbox full", true},
		{"2.0.0", Status{2, 0, 0}, "", true},
		{"  5.7.1   Relay denied", Status{5, 7, 1}, "Relay denied", true},
		{"5.123.456 odd", Status{5, 123, 456}, "odd", true},
		{"5.1.1 multi\nline", Status{5, 1, 1}, "multi\nline", true},
		{"User unknown", Status{}, "User unknown", false},
		{"", Status{}, "", false},
		{"3.1.1 no such class", Status{}, "3.1.1 no such class", false},
		{"55.1.1 x", Status{}, "55.1.1 x", false},
		{"5.1234.1 x", Status{}, "5.1234.1 x", false},
		{"5.1 x", Status{}, "5.1 x", false},
		{"5.1.1.1 x", Status{}, "5.1.1.1 x", false},
		{"5..1 x", Status{}, "5..1 x", false},
		{"5.1.1x", Status{}, "5.1.1x", false},
		{"5.-1.1 x", Status{}, "5.-1.1 x", false},
		{"5.+1.1 x", Status{}, "5.+1.1 x", false},
		{"5.1.1:x", Status{}, "5.1.1:x", false},
	}
	for _, tt := range tests {
		st, rest, ok := ParseEnhanced(tt.in)
		if st != tt.st || rest != tt.rest || ok != tt.ok {
			t.Errorf("ParseEnhanced(%q) = %v, %q, %v; want %v, %q, %v", tt.in, st, rest, ok, tt.st, tt.rest, tt.ok)
		}
	}
}

func TestStatus(t *testing.T) {
	if s := (Status{5, 1, 1}).String(); s != "5.1.1" {
		t.Errorf("String = %q", s)
	}
	if s := (Status{}).String(); s != "" {
		t.Errorf("zero String = %q", s)
	}
	for st, valid := range map[Status]bool{
		{2, 0, 0}: true, {4, 999, 999}: true, {5, 7, 1}: true,
		{}: false, {3, 0, 0}: false, {5, 1000, 0}: false, {5, -1, 0}: false, {-1, -1, -1}: false,
	} {
		if st.Valid() != valid {
			t.Errorf("%v.Valid() = %v", st, !valid)
		}
	}
}

// TestFunnel checks the one path from error to reply: annotated errors keep
// their reply, everything else is a 451 4.3.0 that names the session and
// leaks nothing.
func TestFunnel(t *testing.T) {
	secret := errors.New(`pq: password authentication failed for user "facteur" at 10.0.0.5`)
	internal := smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error, session S1"}
	tests := []struct {
		name string
		err  error
		want smtp.SMTPError
	}{
		{"reply", UnknownUser("a@b"), *UnknownUser("a@b").ToSMTP()},
		{"wrapped reply", fmt.Errorf("rcpt: %w", RelayDenied("")), *RelayDenied("").ToSMTP()},
		{"pointer reply", fmt.Errorf("x: %w", &Reply{Code: 452, Enhanced: Status{4, 3, 1}, Text: "full"}), smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "full"}},
		{"joined", errors.Join(secret, LookupFailed()), *LookupFailed().ToSMTP()},
		{"smtp error", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too big"}, smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too big"}},
		{"wrapped smtp error", fmt.Errorf("data: %w", smtp.ErrDataTooLarge), *smtp.ErrDataTooLarge},
		{"smtp error, text cleaned", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 0, 0}, Message: "a\r\n250 ok"}, smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 0, 0}, Message: "a\n250 ok"}},
		{"plain error", secret, internal},
		{"wrapped plain error", fmt.Errorf("enqueue: %w", secret), internal},
		{"context", context.DeadlineExceeded, internal},
		{"success code is not an error", Queued("Q1"), internal},
		{"wrapped success code", fmt.Errorf("x: %w", &smtp.SMTPError{Code: 250, Message: "ok"}), internal},
		{"no code", Reply{Text: "?"}, internal},
		{"nil pointer reply", (*Reply)(nil), internal},
		{"nil smtp error", (*smtp.SMTPError)(nil), internal},
		{"nil", nil, internal},
	}
	for _, tt := range tests {
		got := Funnel(tt.err, "S1")
		if got == nil {
			t.Errorf("%s: Funnel returned nil", tt.name)
			continue
		}
		if *got != tt.want {
			t.Errorf("%s: Funnel = %#v; want %#v", tt.name, *got, tt.want)
		}
		if strings.Contains(got.Message, "password") || strings.Contains(got.Message, "10.0.0.5") {
			t.Errorf("%s: Funnel leaks internals: %q", tt.name, got.Message)
		}
	}
	if got := Funnel(secret, "S1\r\n250 ok"); got.Message != "Internal error, session S1250ok" {
		t.Errorf("hostile session id: %q", got.Message)
	}
}
