package milter

import (
	"fmt"
	"strconv"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/facteur/facteur/mta/envelope"
)

// Decision is what the milters decided at one stage.
type Decision int

const (
	// Continue: go on (every milter continued or accepted).
	Continue Decision = iota
	// Reject: answer Verdict.Reply, a 5yz reply.
	Reject
	// TempFail: answer Verdict.Reply, a 4yz reply.
	TempFail
	// Discard: accept the command, but the message is to be thrown away:
	// every later stage of the message says Discard too, and the caller
	// answers 250 at the end of DATA and queues nothing.
	Discard
)

func (d Decision) String() string {
	switch d {
	case Continue:
		return "continue"
	case Reject:
		return "reject"
	case TempFail:
		return "tempfail"
	case Discard:
		return "discard"
	}
	return "decision(" + strconv.Itoa(int(d)) + ")"
}

// Verdict is the outcome of one stage.
type Verdict struct {
	Decision Decision
	// Reply is the SMTP reply for Reject and TempFail: the milter's own
	// (SMFIR_REPLYCODE) or the standard one; zero otherwise.
	Reply envelope.Reply
	// Milter names the milter that decided; "" for Continue.
	Milter string
}

// Err returns Reply for Reject and TempFail, nil otherwise, so that a go-smtp
// Session method can do:
//
//	if err := v.Err(); err != nil {
//		return envelope.Funnel(err, id)
//	}
func (v Verdict) Err() error {
	if v.Decision == Reject || v.Decision == TempFail {
		return v.Reply
	}
	return nil
}

// The replies Postfix gives for the milter's plain actions
// (src/milter/milter8.c).

// RejectReply is 550 5.7.1, a milter's SMFIR_REJECT.
func RejectReply() envelope.Reply {
	return envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "Command rejected"}
}

// TempFailReply is 451 4.7.1, a milter's SMFIR_TEMPFAIL, and what a milter
// that is down gives with DefaultAction tempfail.
func TempFailReply() envelope.Reply {
	return envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 1}, Text: "Service unavailable - try again later"}
}

// UnavailableRejectReply is 554 5.7.1, what a milter that is down gives
// with DefaultAction reject.
func UnavailableRejectReply() envelope.Reply {
	return envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 7, 1}, Text: "Service unavailable"}
}

// defaultVerdict is the verdict of a failed milter; ok is false for
// ActionAccept (skip it).
func (m *milterConfig) defaultVerdict() (v Verdict, ok bool) {
	switch m.DefaultAction {
	case ActionReject:
		return Verdict{Decision: Reject, Reply: UnavailableRejectReply(), Milter: m.Name}, true
	case ActionAccept:
		return Verdict{}, false
	}
	return Verdict{Decision: TempFail, Reply: TempFailReply(), Milter: m.Name}, true
}

// replyVerdict turns an SMFIR_REPLYCODE into a verdict. The reply is
// "ddd x.y.z text", possibly multi-line ("550-5.7.1 a\r\n550 5.7.1 b");
// go-milter gives the code and what follows "ddd ". As in Postfix, only 4yz
// and 5yz are allowed, and Sendmail's "%%" (the reply is a format string
// there) becomes "%".
func replyVerdict(name string, code int, text string) (Verdict, error) {
	if code < 400 || code > 599 {
		return Verdict{}, fmt.Errorf("%w: reply code %d", errProtocol, code)
	}
	text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "%%", "%")
	lines := strings.Split(text, "\n")
	var st envelope.Status
	for i, l := range lines {
		if i > 0 {
			// Continuation lines repeat "ddd-" or "ddd ".
			if len(l) >= 4 && l[:3] == strconv.Itoa(code) && (l[3] == '-' || l[3] == ' ') {
				l = l[4:]
			}
		}
		if s, rest, ok := envelope.ParseEnhanced(l); ok && s[0] == code/100 {
			if st.IsZero() {
				st = s
			}
			l = rest
		}
		lines[i] = l
	}
	if st.IsZero() {
		st = envelope.Status{code / 100, 7, 1}
	}
	d := Reject
	if code < 500 {
		d = TempFail
	}
	return Verdict{Decision: d, Reply: envelope.Reply{Code: code, Enhanced: st, Text: strings.Join(lines, "\n")}, Milter: name}, nil
}

// actionVerdict maps a milter's answer to a command to a verdict. final is
// false for continue (and skip); accept is true when the milter accepted.
func actionVerdict(name string, act *gomilter.Action) (v Verdict, accept bool, err error) {
	switch act.Code {
	case gomilter.ActContinue, gomilter.ActSkip:
		return Verdict{}, false, nil
	case gomilter.ActAccept:
		return Verdict{}, true, nil
	case gomilter.ActReject:
		return Verdict{Decision: Reject, Reply: RejectReply(), Milter: name}, false, nil
	case gomilter.ActTempFail:
		return Verdict{Decision: TempFail, Reply: TempFailReply(), Milter: name}, false, nil
	case gomilter.ActDiscard:
		return Verdict{Decision: Discard, Milter: name}, false, nil
	case gomilter.ActReplyCode:
		v, err := replyVerdict(name, act.SMTPCode, act.SMTPText)
		return v, false, err
	}
	return Verdict{}, false, fmt.Errorf("%w: unexpected action %q", errProtocol, rune(act.Code))
}
