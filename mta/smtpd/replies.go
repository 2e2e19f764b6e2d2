package smtpd

import "github.com/facteur/facteur/mta/envelope"

// Replies of the session that the envelope reply table does not hold: they
// are about the SMTP protocol itself (STARTTLS, SASL), not about mail
// policy. Policy replies (relay, unknown user, lookups, sizes, smuggling,
// limits) all come from envelope's table.
func replyVRFY() envelope.Reply          { return envelope.VRFY() }
func replyNoHello() envelope.Reply       { return envelope.BadSequence("send HELO or EHLO first") }
func replyBareNewline() envelope.Reply   { return envelope.BareLineEnding() }
func replyTooManyErrors() envelope.Reply { return envelope.RateLimited() }
func replySyntaxNoParams() envelope.Reply {
	return envelope.SyntaxError("STARTTLS takes no parameters")
}
func replyAuthzid() envelope.Reply { return envelope.AuthFailed() }

// RFC 5321 4.1.1.10: QUIT.
func replyBye() envelope.Reply {
	return envelope.Reply{Code: 221, Enhanced: envelope.Status{2, 0, 0}, Text: "Bye"}
}

// RFC 3207 4: STARTTLS.
func replyTLSReady() envelope.Reply {
	return envelope.Reply{Code: 220, Enhanced: envelope.Status{2, 0, 0}, Text: "Ready to start TLS"}
}
func replyTLSUnavailable() envelope.Reply {
	return envelope.Reply{Code: 502, Enhanced: envelope.Status{5, 5, 1}, Text: "STARTTLS not available"}
}
func replyTLSActive() envelope.Reply { return envelope.BadSequence("TLS already active") }

// RFC 4954 6: AUTH.
func replyAuthMalformed() envelope.Reply {
	return envelope.Reply{Code: 501, Enhanced: envelope.Status{5, 5, 2}, Text: "Cannot decode AUTH response"}
}
func replyAuthUnavailable() envelope.Reply {
	return envelope.Reply{Code: 502, Enhanced: envelope.Status{5, 5, 1}, Text: "AUTH not available"}
}
func replyEncryptionRequired() envelope.Reply {
	return envelope.Reply{Code: 538, Enhanced: envelope.Status{5, 7, 11}, Text: "Encryption required for requested authentication mechanism"}
}
func replyUnknownMechanism() envelope.Reply {
	return envelope.Reply{Code: 504, Enhanced: envelope.Status{5, 5, 4}, Text: "Unrecognized authentication type"}
}
func replyAuthTemporary() envelope.Reply {
	return envelope.Reply{Code: 454, Enhanced: envelope.Status{4, 7, 0}, Text: "Temporary authentication failure"}
}

// replyClientRejected is 554 5.7.1 for a client network that client_access
// rejects (Postfix check_client_access).
func replyClientRejected(ip string) envelope.Reply {
	return envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 7, 1}, Text: "<" + ip + ">: Client host rejected: Access denied"}
}
