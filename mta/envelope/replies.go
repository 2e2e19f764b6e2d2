package envelope

import "strings"

// The reply table of facteur (DESIGN "Decisions that every part follows",
// Replies): every part builds these replies here and nowhere else. They are
// functions, not variables, so that no package can change them.
//
// Replies about one address take it as given by the client (addr) and name it
// the way Postfix does, "<addr>: …"; "" leaves it out.

// LookupFailed is 451 4.3.0: a lookup or the database could not answer, so
// the outcome is unknown and therefore temporary (DESIGN; a lookup error is
// never "not found", Postfix resolve_class).
func LookupFailed() Reply {
	return Reply{Code: 451, Enhanced: Status{4, 3, 0}, Text: "Temporary lookup failure"}
}

// StorageFull is 452 4.3.1: the spool is full or unwritable (RFC 5321
// 4.2.3, RFC 3463 X.3.1; DESIGN).
func StorageFull() Reply {
	return Reply{Code: 452, Enhanced: Status{4, 3, 1}, Text: "Insufficient system storage"}
}

// UnknownUser is 550 5.1.1: the recipient is in a local domain but no such
// mailbox or alias exists; given at RCPT time, never as a bounce later
// (DESIGN; RFC 3463 X.1.1).
func UnknownUser(addr string) Reply {
	return Reply{Code: 550, Enhanced: Status{5, 1, 1}, Text: about(addr, "Recipient address rejected: User unknown")}
}

// RelayDenied is 554 5.7.1: the recipient is not in a local or relay domain
// and the client may not relay (DESIGN; RFC 3463 X.7.1).
func RelayDenied(addr string) Reply {
	return Reply{Code: 554, Enhanced: Status{5, 7, 1}, Text: about(addr, "Relay access denied")}
}

// SenderNotOwned is 553 5.7.1: the authenticated user (or local user) may
// not send as this envelope sender or From: address (DESIGN, Postfix
// smtpd_sender_login_maps).
func SenderNotOwned(addr string) Reply {
	return Reply{Code: 553, Enhanced: Status{5, 7, 1}, Text: about(addr, "Sender address rejected: not owned by user")}
}

// BareLineEnding is 550 5.5.2: a bare CR or LF in a command, DATA or BDAT;
// the connection is closed after it (DESIGN; SMTP smuggling, CVE-2023-51764;
// RFC 5321 2.3.8).
func BareLineEnding() Reply {
	return Reply{Code: 550, Enhanced: Status{5, 5, 2}, Text: "Bare CR or LF not allowed, closing connection"}
}

// MessageTooBig is 552 5.3.4: the message exceeds the size limit (DESIGN;
// RFC 5321 4.5.3.1.10, RFC 1870 6, RFC 3463 X.3.4).
func MessageTooBig() Reply {
	return Reply{Code: 552, Enhanced: Status{5, 3, 4}, Text: "Message size exceeds fixed limit"}
}

// LineTooLong is 552 5.3.4: a line of the message is longer than the server
// accepts (RFC 5321 4.5.3.1.6 allows 1000 octets; smtpd takes up to its
// MaxLineLength, 2000). It is permanent, since the same message will never
// pass, and it is the answer to the end of data, where RFC 5321 4.3.2 lists
// 552 and no 500; the session goes on.
func LineTooLong() Reply {
	return Reply{Code: 552, Enhanced: Status{5, 3, 4}, Text: "Message line too long"}
}

// TooManyHops is 554 5.4.6: too many Received: headers, a mail loop
// (DESIGN; RFC 5321 6.3, RFC 3463 X.4.6).
func TooManyHops() Reply {
	return Reply{Code: 554, Enhanced: Status{5, 4, 6}, Text: "Too many hops"}
}

// AuthRequired is 530 5.7.0: submission requires AUTH before MAIL (DESIGN;
// RFC 4954 6).
func AuthRequired() Reply {
	return Reply{Code: 530, Enhanced: Status{5, 7, 0}, Text: "Authentication required"}
}

// NonASCIIAddress is 553 5.6.7: a non-ASCII address in a transaction without
// the SMTPUTF8 parameter (RFC 6531 3.5; DESIGN). The address is not echoed,
// since the client did not ask for UTF-8.
func NonASCIIAddress() Reply {
	return Reply{Code: 553, Enhanced: Status{5, 6, 7}, Text: "Non-ASCII address requires SMTPUTF8"}
}

// TooManyRecipients is 452 4.5.3: the recipient limit of one transaction is
// reached; the client sends the rest in another (RFC 5321 4.5.3.1.10, RFC
// 3463 X.5.3).
func TooManyRecipients() Reply {
	return Reply{Code: 452, Enhanced: Status{4, 5, 3}, Text: "Too many recipients"}
}

// TooManyConnections is 421 4.7.0: the client has too many connections open;
// the server closes the connection after it (RFC 5321 3.8, RFC 3463 X.7.0).
func TooManyConnections() Reply {
	return Reply{Code: 421, Enhanced: Status{4, 7, 0}, Text: "Too many connections, try again later"}
}

// RateLimited is 421 4.7.0: the client exceeded a rate limit (connections,
// messages or recipients per time); the server closes the connection after
// it (RFC 5321 3.8, RFC 3463 X.7.0).
func RateLimited() Reply {
	return Reply{Code: 421, Enhanced: Status{4, 7, 0}, Text: "Rate limit exceeded, try again later"}
}

// AuthFailed is 535 5.7.8: the AUTH credentials are wrong (RFC 4954 6). It
// does not say whether the user exists.
func AuthFailed() Reply {
	return Reply{Code: 535, Enhanced: Status{5, 7, 8}, Text: "Authentication credentials invalid"}
}

// BadSequence is 503 5.5.1: a command out of order, such as RCPT before MAIL
// or AUTH twice (RFC 5321 4.3.2, RFC 3463 X.5.1). detail says what was
// expected ("need MAIL command"); "" gives a generic text.
func BadSequence(detail string) Reply {
	text := "Bad sequence of commands"
	if detail != "" {
		text = "Error: " + detail
	}
	return Reply{Code: 503, Enhanced: Status{5, 5, 1}, Text: text}
}

// SyntaxError is 501 5.5.4: a command's parameters or arguments are invalid
// (RFC 5321 4.2.2, RFC 3463 X.5.4). detail says which; "" gives a generic
// text.
func SyntaxError(detail string) Reply {
	text := "Syntax error in parameters or arguments"
	if detail != "" {
		text = "Syntax error: " + detail
	}
	return Reply{Code: 501, Enhanced: Status{5, 5, 4}, Text: text}
}

// BadRecipientSyntax is 501 5.1.3: the RCPT TO address does not parse (RFC
// 3463 X.1.3).
func BadRecipientSyntax() Reply {
	return Reply{Code: 501, Enhanced: Status{5, 1, 3}, Text: "Bad recipient address syntax"}
}

// BadSenderSyntax is 501 5.1.7: the MAIL FROM address does not parse (RFC
// 3463 X.1.7).
func BadSenderSyntax() Reply {
	return Reply{Code: 501, Enhanced: Status{5, 1, 7}, Text: "Bad sender address syntax"}
}

// VRFY is 252 2.0.0: we neither confirm nor deny that a user exists, which
// would help address harvesting (RFC 5321 3.5.3, 7.3).
func VRFY() Reply {
	return Reply{Code: 252, Enhanced: Status{2, 0, 0}, Text: "Cannot VRFY user, but will accept message"}
}

// Queued is 250 2.0.0 "Ok: queued as ID", the only success reply to DATA or
// the last BDAT, sent only after the spool file is fsynced and the queue rows
// are committed (DESIGN "Durability rules"). The queue id links the client's
// log to ours.
func Queued(queueID string) Reply {
	return Reply{Code: 250, Enhanced: Status{2, 0, 0}, Text: "Ok: queued as " + token(queueID)}
}

// InternalError is 451 4.3.0 "Internal error, session ID": what Funnel
// returns for an error that carries no reply. It names the session (or queue
// id) so that an operator can find the logged details, and nothing else.
func InternalError(sessionID string) Reply {
	text := "Internal error"
	if id := token(sessionID); id != "" {
		text += ", session " + id
	}
	return Reply{Code: 451, Enhanced: Status{4, 3, 0}, Text: text}
}

// Pregreet is 554 5.5.0: the client sent a command before the server's
// greeting, which no SMTP client may do (RFC 5321 3.1, 4.3.1; Postfix
// postscreen's pregreet test); the connection is closed after it.
func Pregreet() Reply {
	return Reply{Code: 554, Enhanced: Status{5, 5, 0}, Text: "Error: SMTP protocol violation: command before the greeting"}
}

// about prefixes a reply text with "<addr>: ".
func about(addr, text string) string {
	if addr == "" {
		return text
	}
	return "<" + addr + ">: " + text
}

// token keeps only the characters of a queue or session id, at most 64.
func token(id string) string {
	id = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return -1
	}, id)
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}
