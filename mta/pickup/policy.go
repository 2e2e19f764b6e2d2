package pickup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/envelope"
)

// parseAddr parses an address given by a local user: in the external form
// of RFC 5321 (sendmail's command line and headers), optionally in angle
// brackets, or, with internal, in go-smtp's internal form. An address
// without '@' ("root") is qualified with MyOrigin.
func (s *Server) parseAddr(raw string, internal bool) (address.Address, error) {
	if !internal {
		raw = strings.TrimSpace(raw)
		if strings.HasPrefix(raw, "<") && strings.HasSuffix(raw, ">") {
			raw = strings.TrimSpace(raw[1 : len(raw)-1])
		}
	}
	if raw == "" {
		return address.Address{}, errors.New("empty address")
	}
	if !strings.Contains(raw, "@") {
		raw += "@" + s.opts.MyOrigin // Postfix append_at_myorigin
	}
	if internal {
		return address.ParseInternal(raw)
	}
	return address.Parse(raw)
}

// isNullSender reports whether raw names the null sender <>.
func isNullSender(raw string) bool {
	raw = strings.TrimSpace(raw)
	return raw == "" || raw == "<>"
}

// sender parses and checks the envelope sender that u asked for. defaulted
// means no sender was given: u's own address. It returns the sender in
// external form ("" for <>) or an envelope Reply.
func (s *Server) sender(ctx context.Context, log *slog.Logger, u *localUser, raw string, internal, defaulted bool) (string, bool, error) {
	if defaulted {
		a, err := s.parseAddr(u.name, false)
		if err != nil {
			// A login name that is no local part (spaces, say).
			log.Warn("login name gives no sender address", "err", err)
			return "", false, fmt.Errorf("%w: %w", envelope.BadSenderSyntax(), err)
		}
		return a.String(), a.NeedsSMTPUTF8(), nil
	}
	if (internal && raw == "") || (!internal && isNullSender(raw)) {
		return "", false, nil // the null sender claims no address
	}
	a, err := s.parseAddr(raw, internal)
	if err != nil {
		return "", false, fmt.Errorf("%w: %w", envelope.BadSenderSyntax(), err)
	}
	ok, why, err := s.senderAllowed(ctx, u, a)
	if err != nil {
		log.Warn("sender permission lookup failed", "from", printable(a.String()), "err", err)
		return "", false, fmt.Errorf("%w: %w", envelope.LookupFailed(), err)
	}
	if !ok {
		log.Info("sender refused", "from", printable(a.String()), "why", why)
		return "", false, envelope.SenderNotOwned(a.String())
	}
	log.Debug("sender allowed", "from", printable(a.String()), "why", why)
	return a.String(), a.NeedsSMTPUTF8(), nil
}

// senderAllowed decides whether u may use a as envelope sender (Postfix's
// local_login_sender_maps): root, the daemon's user and trusted uids may use
// any; anyone may use its own address user@MyOrigin, with or without an
// address extension; anything else needs an active local_sender row for u
// naming the address or "@" + its domain.
func (s *Server) senderAllowed(ctx context.Context, u *localUser, a address.Address) (bool, string, error) {
	if u.privileged {
		return true, "privileged user", nil
	}
	local := strings.ToLower(a.Local)
	base, _ := address.SplitExtension(local, s.opts.RecipientDelimiter)
	own, err := s.parseAddr(u.name, false)
	if err == nil && a.Domain == own.Domain && (local == strings.ToLower(own.Local) || base == strings.ToLower(own.Local)) {
		return true, "the user's own address", nil
	}
	if s.deps.Store == nil {
		return false, "no local_sender table", nil
	}
	canon := a.Canonical()
	keys := []string{canon, "@" + a.Domain}
	if base != local {
		keys = append(keys, address.Address{Local: base, Domain: a.Domain}.Canonical())
	}
	var grant string
	err = s.deps.Store.Pool().QueryRow(ctx,
		`SELECT sender FROM local_sender WHERE unix_user = $1 AND active AND sender = ANY($2) ORDER BY sender LIMIT 1`,
		u.name, keys).Scan(&grant)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Sprintf("local user %s may not use %s (no local_sender grant)", u.name, canon), nil
	case err != nil:
		return false, "", fmt.Errorf("local_sender lookup: %w", err)
	}
	return true, "local_sender grant " + grant, nil
}

// recipient parses and checks one recipient as smtpd checks RCPT TO, except
// that local users may send to any domain. It returns the recipient or an
// envelope Reply.
func (s *Server) recipient(ctx context.Context, log *slog.Logger, raw string, internal bool) (envelope.Recipient, bool, error) {
	a, err := s.parseAddr(raw, internal)
	if err != nil {
		log.Info("recipient refused", "to", printable(raw), "err", err)
		return envelope.Recipient{}, false, fmt.Errorf("%w: %w", envelope.BadRecipientSyntax(), err)
	}
	// No sender-specified routing or address literals, for anyone (RFC
	// 5321 3.6.1 and 7.1; smtpd refuses them too).
	if address.HasRouting(a.Local) || address.IsIPLiteral(a.Domain) {
		log.Info("recipient refused", "to", printable(a.String()), "why", "routing or address literal")
		return envelope.Recipient{}, false, envelope.RelayDenied(a.String())
	}
	res, found, err := s.deps.Lookups.Resolve(ctx, a.Local+"@"+a.Domain) // internal form
	switch {
	case err != nil && lookups.Permanent(err) && errors.Is(err, lookups.ErrBadAddress):
		return envelope.Recipient{}, false, fmt.Errorf("%w: %w", envelope.BadRecipientSyntax(), err)
	case err != nil && lookups.Permanent(err):
		// A loop or a limit: cleanup queues it on an error transport, so
		// that it bounces as Postfix would.
	case err != nil:
		// A lookup error is never "unknown user" (Postfix resolve_class).
		log.Warn("recipient lookup failed", "to", printable(a.String()), "err", err)
		return envelope.Recipient{}, false, fmt.Errorf("%w: %w", envelope.LookupFailed(), err)
	case found, res.Domain == lookups.DomainRemote:
	default:
		log.Info("recipient refused", "to", printable(a.String()), "why", "unknown user")
		return envelope.Recipient{}, false, envelope.UnknownUser(a.String())
	}
	return envelope.Recipient{Address: a.String()}, a.NeedsSMTPUTF8(), nil
}

// validNotify checks a DSN NOTIFY list (RFC 3461 4.1): NEVER alone, or some
// of SUCCESS, FAILURE and DELAY.
func validNotify(list string) ([]string, bool) {
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.ToUpper(strings.TrimSpace(n))
		switch n {
		case envelope.NotifyNever, envelope.NotifySuccess, envelope.NotifyFailure, envelope.NotifyDelay:
		default:
			return nil, false
		}
		for _, o := range out {
			if o == n {
				return nil, false
			}
		}
		out = append(out, n)
	}
	if len(out) > 1 {
		for _, n := range out {
			if n == envelope.NotifyNever {
				return nil, false
			}
		}
	}
	return out, len(out) > 0
}
