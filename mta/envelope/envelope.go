// Package envelope holds the types that smtpd, pickup, cleanup, the queue and
// the delivery agents pass between them: the SMTP envelope of a message
// (Envelope, Recipient), SMTP replies with their RFC 3463 enhanced status
// codes (Reply, Status), and the one reply table of facteur (replies.go) that
// every part uses, so that a given failure gets the same code everywhere.
//
// Funnel is the one path from an error to what a go-smtp Session returns:
// replies keep their code, anything else becomes a generic temporary reply
// that reveals nothing internal.
//
// SECURITY: this package exposes nothing to the network and touches no file,
// socket or database; it holds data types and pure functions. Replies it builds
// go to SMTP clients, so ToSMTP and Funnel strip control characters and never
// put an internal error's text into a reply.
package envelope

import (
	"slices"
	"strings"
)

// BODY= values of the 8BITMIME and BINARYMIME extensions (RFC 6152, RFC 3030).
const (
	Body7Bit       = "7BIT"
	Body8BitMIME   = "8BITMIME"
	BodyBinaryMIME = "BINARYMIME"
)

// RET= values of the DSN extension (RFC 3461 4.3).
const (
	RetFull    = "FULL"
	RetHeaders = "HDRS"
)

// NOTIFY= values of the DSN extension (RFC 3461 4.1). NotifyNever excludes
// the others.
const (
	NotifyNever   = "NEVER"
	NotifySuccess = "SUCCESS"
	NotifyFailure = "FAILURE"
	NotifyDelay   = "DELAY"
)

// Envelope is the SMTP envelope of one message, as received from MAIL FROM
// and RCPT TO (or from pickup), and as the queue stores it.
//
// Addresses are in the external form of RFC 5321 with the sender's spelling
// (lookups/address Address.String), not lower-cased: lookups use
// address.Normalize; forwarding keeps the spelling.
type Envelope struct {
	// Sender is the reverse-path; "" is the null sender <> of bounces and
	// other notifications (RFC 5321 4.5.5), to which no DSN is ever sent.
	Sender string

	// Recipients are the forward-paths, one per accepted RCPT TO, or after
	// alias expansion one per final recipient.
	Recipients []Recipient

	// BodyType is the BODY= parameter: "" when not given (7BIT), or one of
	// Body7Bit, Body8BitMIME, BodyBinaryMIME. It is recorded, not enforced.
	BodyType string

	// SMTPUTF8 is set when MAIL FROM carried the SMTPUTF8 parameter (RFC
	// 6531 3.4): addresses and headers may contain UTF-8, and the message
	// may be relayed only to a server that offers SMTPUTF8.
	SMTPUTF8 bool

	// DSNRet is the DSN RET= parameter: "", RetFull or RetHeaders (RFC 3461
	// 4.3); "" leaves the choice to us.
	DSNRet string

	// DSNEnvID is the DSN ENVID= parameter, xtext-decoded (RFC 3461 4.4),
	// returned in DSNs as Original-Envelope-Id; "" when not given.
	DSNEnvID string
}

// Recipient is one forward-path of an Envelope with its DSN parameters.
type Recipient struct {
	// Address is where to deliver: the RCPT TO address, or a final
	// recipient after alias expansion.
	Address string

	// Orig is the address given in RCPT TO before alias expansion, for
	// DSNs and for logs; "" when it is Address.
	Orig string

	// DSNNotify is the NOTIFY= parameter (RFC 3461 4.1): empty when not
	// given (failures and delays are then reported), []string{NotifyNever},
	// or some of NotifySuccess, NotifyFailure and NotifyDelay.
	DSNNotify []string

	// DSNORcpt is the ORCPT= parameter (RFC 3461 4.2) as
	// `addr-type ";" address` with the address xtext-decoded, e.g.
	// "rfc822;John@example.com", for the Original-Recipient field of a DSN;
	// "" when not given.
	DSNORcpt string
}

// Original returns the address the recipient had in RCPT TO: Orig, or
// Address if Orig is empty.
func (r Recipient) Original() string {
	if r.Orig != "" {
		return r.Orig
	}
	return r.Address
}

// Notify reports whether a DSN of the given kind (NotifySuccess,
// NotifyFailure or NotifyDelay) should be sent for the recipient (RFC 3461
// 4.1): as listed, or, when NOTIFY was not given, for failures and delays.
func (r Recipient) Notify(kind string) bool {
	if len(r.DSNNotify) == 0 {
		return strings.EqualFold(kind, NotifyFailure) || strings.EqualFold(kind, NotifyDelay)
	}
	return slices.ContainsFunc(r.DSNNotify, func(n string) bool { return strings.EqualFold(n, kind) })
}
