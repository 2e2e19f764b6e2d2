package pickup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/mail"
	"strings"
	"unicode"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
)

// submitRequest is the envelope part of a SUBMIT request.
type submitRequest struct {
	sender    string
	hasSender bool
	fullName  string
	rcpts     []string
	extract   bool
	notify    []string
	envID     string
	body      string
}

// Replies of the SUBMIT protocol that are not in envelope's table.
var (
	replyGoAhead = envelope.Reply{Code: 354, Text: "Send the message in chunks; end with a chunk of size 0"}
)

func replyBadRequest(detail string) envelope.Reply {
	return envelope.Reply{Code: 500, Enhanced: envelope.Status{5, 5, 2}, Text: "Bad request: " + detail}
}

func replyTooManyRecipients() envelope.Reply {
	// Permanent here, unlike SMTP's 452 4.5.3: a SUBMIT request cannot
	// send the rest in another transaction.
	return envelope.Reply{Code: 552, Enhanced: envelope.Status{5, 5, 3}, Text: "Too many recipients"}
}

func replyNoRecipients() envelope.Reply {
	return envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 5, 1}, Text: "No recipient addresses found in message header"}
}

// readSubmitRequest reads the request lines up to "data".
func (s *Server) readSubmitRequest(br *bufio.Reader) (*submitRequest, error) {
	req := &submitRequest{}
	extra := 0
	for {
		line, err := readLine(br, maxRequestLine)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				return nil, replyBadRequest("line too long")
			}
			return nil, err
		}
		if strings.IndexFunc(line, unicode.IsControl) >= 0 {
			return nil, replyBadRequest("control character in request")
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToLower(verb)
		if verb != "rcpt" {
			if extra++; extra > maxExtraRequest {
				return nil, replyBadRequest("too many request lines")
			}
		}
		switch verb {
		case "data":
			return req, nil
		case "rcpt":
			if len(req.rcpts) >= s.opts.MaxRecipients {
				return nil, replyTooManyRecipients()
			}
			req.rcpts = append(req.rcpts, arg)
		case "sender":
			req.sender, req.hasSender = arg, true
		case "fullname":
			req.fullName = arg
		case "extract":
			req.extract = true
		case "notify":
			n, ok := validNotify(arg)
			if !ok {
				return nil, envelope.SyntaxError("NOTIFY must be NEVER, or some of SUCCESS, FAILURE and DELAY")
			}
			req.notify = n
		case "envid":
			if len(arg) > 100 || strings.IndexFunc(arg, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
				return nil, envelope.SyntaxError("ENVID must be at most 100 printable ASCII characters")
			}
			req.envID = arg
		case "body":
			switch b := strings.ToUpper(arg); b {
			case envelope.Body7Bit, envelope.Body8BitMIME:
				req.body = b
			default:
				return nil, envelope.SyntaxError("BODY must be 7BIT or 8BITMIME")
			}
		default:
			return nil, replyBadRequest("unknown request line " + printable(verb))
		}
	}
}

// submit serves a SUBMIT request.
func (s *Server) submit(ctx context.Context, log *slog.Logger, u *localUser, br *bufio.Reader, w io.Writer) {
	fail := func(err error) {
		rep := replyOf(err, log)
		log.Info("submission refused", "reply", rep.String())
		_ = writeReply(w, rep)
	}
	req, err := s.readSubmitRequest(br)
	if err != nil {
		fail(err)
		return
	}
	env := envelope.Envelope{BodyType: req.body, DSNEnvID: req.envID}
	sender, utf8, err := s.sender(ctx, log, u, req.sender, false, !req.hasSender)
	if err != nil {
		fail(err)
		return
	}
	env.Sender, env.SMTPUTF8 = sender, utf8
	seen := map[string]bool{}
	add := func(raw string) error {
		r, utf8, err := s.recipient(ctx, log, raw, false)
		if err != nil {
			return err
		}
		if key := strings.ToLower(r.Address); !seen[key] {
			if len(env.Recipients) >= s.opts.MaxRecipients {
				return replyTooManyRecipients()
			}
			seen[key] = true
			r.DSNNotify = req.notify
			env.Recipients = append(env.Recipients, r)
			env.SMTPUTF8 = env.SMTPUTF8 || utf8
		}
		return nil
	}
	for _, raw := range req.rcpts {
		if err := add(raw); err != nil {
			fail(err)
			return
		}
	}
	if err := writeReply(w, replyGoAhead); err != nil {
		log.Info("client gone", "err", err)
		return
	}

	cr := &chunkReader{br: br}
	hb := bufio.NewReaderSize(newCRLFReader(cr), 32<<10)
	// After a refusal, read the rest of the message first: the client
	// expects the reply after the last chunk.
	refuse := func(err error) {
		if !cr.drain() {
			log.Info("message not received", "err", cr.err)
			return
		}
		fail(err)
	}
	h, err := readHeader(hb, s.opts.MaxHeaderBytes)
	switch {
	case errors.Is(err, errHeaderTooBig):
		refuse(envelope.MessageTooBig())
		return
	case errors.Is(err, errBadChunk):
		fail(replyBadRequest(err.Error()))
		return
	case err != nil:
		log.Info("message not received", "err", err)
		return
	}
	if req.extract {
		// Recipients from the header (sendmail -t), added to those of the
		// command line as Postfix does; Resent- fields win when present
		// (RFC 5322 3.6.6).
		names := []string{"to", "cc", "bcc"}
		if h.has("resent-to") || h.has("resent-cc") || h.has("resent-bcc") {
			names = []string{"resent-to", "resent-cc", "resent-bcc"}
		}
		for _, fv := range h.values(names...) {
			addrs, err := headerAddresses(fv.value)
			if err != nil {
				log.Info("bad address in header", "field", fv.name, "err", err)
				refuse(envelope.Reply{Code: 501, Enhanced: envelope.Status{5, 1, 3},
					Text: "Bad recipient address syntax in the " + fv.name + ": header"})
				return
			}
			for _, a := range addrs {
				if err := add(a); err != nil {
					refuse(err)
					return
				}
			}
		}
	}
	if len(env.Recipients) == 0 {
		refuse(replyNoRecipients())
		return
	}
	var extra []string
	if !h.has("from") {
		extra = append(extra, s.fromField(u, req.fullName, env.Sender))
	}
	// Bcc: is never shown to the recipients (RFC 5322 3.6.3).
	hdr := h.bytes([]string{"bcc", "resent-bcc"}, extra...)
	msg := &cleanup.Message{
		Envelope: env,
		Client:   cleanup.Client{Protocol: "local", LocalUser: u.name, Submission: true},
		Check:    s.signCheck(u),
	}
	id, err := s.deps.Cleanup.Enqueue(ctx, msg, io.MultiReader(bytes.NewReader(hdr), hb))
	if err != nil {
		refuse(err)
		return
	}
	log.Info("queued", "queue_id", id, "from", env.Sender, "nrcpt", len(env.Recipients))
	_ = writeReply(w, envelope.Queued(id))
}

// replyOf returns the reply for an error: its own Reply if it carries one
// (a failure code), else a temporary 451 4.3.0 that reveals nothing.
func replyOf(err error, log *slog.Logger) envelope.Reply {
	var r envelope.Reply
	if errors.As(err, &r) && (r.Temporary() || r.Permanent()) {
		return r
	}
	log.Error("internal error", "err", err)
	return envelope.InternalError("")
}

// fromField builds the From: field added to a message that has none, as
// Postfix's cleanup does: the full name (-F, $NAME, else the password
// database's) and the envelope sender, or the user's own address for the
// null sender.
func (s *Server) fromField(u *localUser, fullName, sender string) string {
	a, err := address.Parse(sender)
	if sender == "" || err != nil {
		a, _ = s.parseAddr(u.name, false)
	}
	if fullName == "" {
		fullName = u.fullName
	}
	fullName = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(fullName, ""))
	if r := []rune(fullName); len(r) > 100 {
		fullName = string(r[:100])
	}
	// net/mail quotes the name or encodes it (RFC 2047) as needed.
	return "From: " + (&mail.Address{Name: strings.TrimSpace(fullName), Address: a.Local + "@" + a.Domain}).String() + "\r\n"
}
