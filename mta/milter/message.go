package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	gomilter "github.com/emersion/go-milter"
)

// Result is the outcome of the end of a message: the final verdict and what
// the milters changed. Changes are in the order to apply them; Apply does.
type Result struct {
	Verdict
	// Changes are the header and recipient changes of every milter that
	// accepted the message, in order. Each milter saw the header as the
	// changes before its own left it, so indexes are consistent when they
	// are applied in order to the original header.
	Changes []Change
	// BodyReplaced says that a milter replaced the body with Body (CRLF line
	// endings). With several replacements, the last milter's wins (it was
	// given the earlier one).
	BodyReplaced bool
	Body         []byte
	// SenderChanged says that a milter changed the envelope sender to Sender
	// with the ESMTP arguments SenderArgs (smfi_chgfrom).
	SenderChanged bool
	Sender        string
	SenderArgs    []string
	// Quarantine, when not empty, is the reason (or reasons, joined by
	// "; ") a milter gave for holding the message (smfi_quarantine): the
	// caller queues it held, as Postfix puts it in the hold queue.
	Quarantine string
}

// Modified reports whether the message or its envelope must be rewritten.
func (r *Result) Modified() bool {
	return len(r.Changes) > 0 || r.BodyReplaced || r.SenderChanged
}

// Header returns hdr with the header changes applied; hdr is not changed.
func (r *Result) Header(hdr Header) Header {
	h := hdr.Clone()
	for _, c := range r.Changes {
		h = applyHeader(h, c)
	}
	return h
}

// Recipients returns rcpts with the recipient changes applied; rcpts is not
// changed.
func (r *Result) Recipients(rcpts []string) []string {
	out := append([]string(nil), rcpts...)
	for _, c := range r.Changes {
		out = applyRcpt(out, c)
	}
	return out
}

// Apply writes the modified message to w: hdr with the header changes, the
// empty line, then the replacement body or body copied as it is streamed.
// It returns the new recipient list (rcpts with recipients added and
// deleted). hdr and rcpts are not changed.
func (r *Result) Apply(w io.Writer, hdr Header, body io.Reader, rcpts []string) ([]string, error) {
	if _, err := r.Header(hdr).WriteTo(w); err != nil {
		return nil, fmt.Errorf("write header: %w", err)
	}
	if r.BodyReplaced {
		if _, err := w.Write(r.Body); err != nil {
			return nil, fmt.Errorf("write body: %w", err)
		}
	} else if body != nil {
		if _, err := io.Copy(w, body); err != nil {
			return nil, fmt.Errorf("copy body: %w", err)
		}
	}
	return r.Recipients(rcpts), nil
}

// Message runs the end of the message through the milters, after the
// message has been received and spooled: each milter in turn is sent the
// header fields, the end of header, the body in chunks and the end of
// message, and answers with its changes and verdict. hdr is the header block
// as it will be queued (with this host's Received: field, so that an insert
// at index 0 goes above it); body is the body (nil for none), read once per
// milter from its start. The message is over for the milters when Message
// returns.
//
// A milter that rejects, tempfails or discards ends the run: later milters
// are not asked and the changes are dropped. An error is returned only when
// reading body fails (a local failure: answer 451 4.3.0); a milter's failure
// gives its DefaultAction.
func (s *Session) Message(ctx context.Context, hdr Header, body *io.SectionReader) (*Result, error) {
	if v := s.inMessage(); v.Decision != Continue {
		s.Abort(ctx)
		return &Result{Verdict: v}, nil
	}
	if body == nil {
		body = io.NewSectionReader(bytes.NewReader(nil), 0, 0)
	}
	res := &Result{}
	work := hdr.Clone()
	var cur io.ReaderAt = body
	size := body.Size()
	var quarantine []string
	for _, m := range s.conns {
		v, skip, stop := s.gate(m, stageContent)
		if stop {
			res.Verdict = v
			break
		}
		if skip {
			continue
		}
		done := s.guard(ctx, m)
		act, mods, err := s.content(m, work, io.NewSectionReader(cur, 0, size))
		done()
		var local *localError
		if errors.As(err, &local) {
			s.Abort(ctx)
			return nil, local.err
		}
		var accept bool
		if err == nil {
			v, accept, err = actionVerdict(m.cfg.Name, act)
		}
		if err == nil && mods != nil {
			// End() returned: the milter is back between messages.
			m.state = stReady
		}
		var ch milterChanges
		if err == nil && (v.Decision == Continue) {
			ch, err = s.changes(m, mods)
		}
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %v", ctx.Err(), err)
			}
			s.fail(m, stageContent, err)
			if dv, ok := m.cfg.defaultVerdict(); ok {
				res.Verdict = dv
				break
			}
			continue
		}
		if accept && mods == nil {
			// Accepted before the end of the message: no changes.
			m.state = stAcceptMsg
		}
		if v.Decision != Continue {
			res.Verdict = v
			break
		}
		for _, c := range ch.changes {
			work = applyHeader(work, c)
		}
		res.Changes = append(res.Changes, ch.changes...)
		if ch.bodyReplaced {
			res.BodyReplaced, res.Body = true, ch.body
			cur, size = bytes.NewReader(ch.body), int64(len(ch.body))
		}
		if ch.senderChanged {
			res.SenderChanged, res.Sender, res.SenderArgs = true, ch.sender, ch.senderArgs
		}
		quarantine = append(quarantine, ch.quarantine...)
	}
	if res.Decision != Continue {
		res.Changes, res.BodyReplaced, res.Body, res.SenderChanged = nil, false, nil, false
		res.Sender, res.SenderArgs, quarantine = "", nil, nil
	}
	res.Quarantine = strings.Join(quarantine, "; ")
	s.Abort(ctx)
	return res, nil
}

// localError is a failure on our side (reading the spooled body), not the
// milter's.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }

// content sends one milter the header, the end of header, the body and the
// end of message. mods is nil when the milter gave a final answer before the
// end of message.
func (s *Session) content(m *conn, h Header, body io.Reader) (*gomilter.Action, []gomilter.ModifyAction, error) {
	lead := m.sess.ProtocolOption(gomilter.OptHeaderLeadingSpace)
	for _, f := range h {
		if f.Name == "" {
			continue
		}
		act, err := m.sess.HeaderField(f.Name, milterValue(f.Value, lead))
		if err != nil {
			return nil, nil, err
		}
		if act.Code != gomilter.ActContinue {
			return act, nil, nil
		}
	}
	if err := s.sendMacros(m, gomilter.CodeEOH, m.cfg.Macros.EOH); err != nil {
		return nil, nil, err
	}
	act, err := m.sess.HeaderEnd()
	if err != nil {
		return nil, nil, err
	}
	if act.Code != gomilter.ActContinue {
		return act, nil, nil
	}
	if !m.sess.ProtocolOption(gomilter.OptNoBody) {
		buf := make([]byte, gomilter.MaxBodyChunk)
		for {
			n, rerr := io.ReadFull(body, buf)
			if n > 0 {
				act, err := m.sess.BodyChunk(buf[:n])
				if err != nil {
					return nil, nil, err
				}
				if act.Code == gomilter.ActSkip {
					break
				}
				if act.Code != gomilter.ActContinue {
					return act, nil, nil
				}
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				return nil, nil, &localError{fmt.Errorf("read body: %w", rerr)}
			}
		}
	}
	if err := s.sendMacros(m, gomilter.CodeEOB, m.cfg.Macros.EOM); err != nil {
		return nil, nil, err
	}
	mods, act, err := m.sess.End()
	if err != nil {
		return nil, nil, err
	}
	if mods == nil {
		mods = []gomilter.ModifyAction{}
	}
	if act.Code == gomilter.ActContinue {
		// libmilter turns a continue at the end of message into accept.
		act.Code = gomilter.ActAccept
	}
	return act, mods, nil
}

// milterChanges are one milter's checked modifications.
type milterChanges struct {
	changes       []Change
	bodyReplaced  bool
	body          []byte
	senderChanged bool
	sender        string
	senderArgs    []string
	quarantine    []string
}

// changes checks one milter's modification requests: each must be one it
// negotiated, header names and values and addresses must be well formed,
// and a replacement body must fit MaxReplacementSize.
func (s *Session) changes(m *conn, mods []gomilter.ModifyAction) (milterChanges, error) {
	var ch milterChanges
	lead := m.sess.ProtocolOption(gomilter.OptHeaderLeadingSpace)
	allowed := m.sess.ActionOpts & offeredActions
	need := func(opt gomilter.OptAction, what string) error {
		if allowed&opt == 0 {
			return fmt.Errorf("%w: %s without negotiating it", errProtocol, what)
		}
		return nil
	}
	var body bytes.Buffer
	for _, a := range mods {
		switch a.Code {
		case gomilter.ActAddHeader, gomilter.ActInsertHeader, gomilter.ActChangeHeader:
			c := Change{Milter: m.cfg.Name, Name: a.HeaderName, Index: int(a.HeaderIndex)}
			var err error
			switch a.Code {
			case gomilter.ActAddHeader:
				c.Kind, err = AddHeader, need(gomilter.OptAddHeader, "add header")
			case gomilter.ActInsertHeader:
				c.Kind, err = InsertHeader, need(gomilter.OptAddHeader, "insert header")
			case gomilter.ActChangeHeader:
				c.Kind, err = ChangeHeader, need(gomilter.OptChangeHeader, "change header")
				if a.HeaderValue == "" {
					c.Kind = DeleteHeader
				}
			}
			if err != nil {
				return ch, err
			}
			if !validName(a.HeaderName) {
				return ch, fmt.Errorf("%w: bad header name %q", errProtocol, a.HeaderName)
			}
			if c.Kind != DeleteHeader {
				if c.Value, err = fieldValue(a.HeaderValue, lead); err != nil {
					return ch, err
				}
			}
			ch.changes = append(ch.changes, c)
		case gomilter.ActAddRcpt, gomilter.ActDelRcpt:
			kind, opt := AddRcpt, gomilter.OptAddRcpt
			if a.Code == gomilter.ActDelRcpt {
				kind, opt = DelRcpt, gomilter.OptRemoveRcpt
			}
			if err := need(opt, kind.String()); err != nil {
				return ch, err
			}
			addr := stripAngle(a.Rcpt)
			if !validAddr(addr) {
				return ch, fmt.Errorf("%w: bad recipient %q", errProtocol, a.Rcpt)
			}
			ch.changes = append(ch.changes, Change{Kind: kind, Milter: m.cfg.Name, Addr: addr})
		case gomilter.ActReplBody:
			if err := need(gomilter.OptChangeBody, "replace body"); err != nil {
				return ch, err
			}
			if int64(body.Len()+len(a.Body)) > s.c.opts.MaxReplacementSize {
				return ch, fmt.Errorf("replacement body over %d bytes", s.c.opts.MaxReplacementSize)
			}
			ch.bodyReplaced = true
			body.Write(a.Body)
		case gomilter.ActChangeFrom:
			if err := need(gomilter.OptChangeFrom, "change sender"); err != nil {
				return ch, err
			}
			addr := stripAngle(a.From)
			if addr != "" && !validAddr(addr) {
				return ch, fmt.Errorf("%w: bad sender %q", errProtocol, a.From)
			}
			ch.senderChanged, ch.sender, ch.senderArgs = true, addr, nil
			for _, arg := range a.FromArgs {
				if arg != "" {
					ch.senderArgs = append(ch.senderArgs, arg)
				}
			}
		case gomilter.ActQuarantine:
			if err := need(gomilter.OptQuarantine, "quarantine"); err != nil {
				return ch, err
			}
			reason := strings.Join(strings.Fields(a.Reason), " ")
			if reason == "" {
				reason = "quarantined by milter " + m.cfg.Name
			}
			ch.quarantine = append(ch.quarantine, reason)
		default:
			return ch, fmt.Errorf("%w: unknown modification %q", errProtocol, rune(a.Code))
		}
	}
	if ch.bodyReplaced {
		ch.body = crlf(body.Bytes())
	}
	return ch, nil
}

// validAddr reports whether a milter's address can go into the envelope: no
// control characters, spaces or angle brackets.
func validAddr(a string) bool {
	if a == "" || len(a) > 998 {
		return false
	}
	return !strings.ContainsFunc(a, func(r rune) bool {
		return r <= ' ' || r == 0x7f || r == '<' || r == '>'
	})
}

// crlf turns bare LF into CRLF (milters, Postfix's and go-milter's among
// them, send LF) and ends a non-empty body with CRLF.
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32+2)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}
