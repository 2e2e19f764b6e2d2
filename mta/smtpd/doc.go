// Package smtpd receives mail over SMTP: the MX listener (port 25) and the
// submission listeners (587 with STARTTLS, 465 with implicit TLS), as
// go-smtp Sessions that check every command against facteur's policy and
// hand accepted messages to mta/cleanup, the only way into the queue.
//
// # What go-smtp does and what this package adds
//
// go-smtp parses commands and ESMTP parameters (PIPELINING, 8BITMIME,
// SMTPUTF8, SIZE, ENHANCEDSTATUSCODES, DSN, CHUNKING). Beneath it, conn (see
// conn.go) reads every byte of the session: it refuses bare CR and bare LF
// anywhere (SMTP smuggling: 550 5.5.2, connection closed, nothing queued),
// does STARTTLS and implicit TLS itself so that it keeps seeing plaintext,
// requires HELO/EHLO before MAIL (503 5.5.1, also after STARTTLS), answers
// VRFY with 252 2.0.0, lets "RCPT TO:<postmaster>" without a domain through,
// and throttles clients that make errors. Above it, session (session.go)
// decides: AUTH only under TLS, MAIL on submission only after AUTH
// (530 5.7.0), senders an authenticated user may use (553 5.7.1), non-ASCII
// addresses only with SMTPUTF8 (553 5.6.7), unknown local users at RCPT time
// (550 5.1.1), lookup failures as 451 4.3.0, relaying only for authenticated
// clients and client_access permit_relay networks (554 5.7.1), a full
// spool at MAIL (452 4.3.1, Options.SpaceCheck), a message line over the
// line limit (552 5.3.4, the session goes on), DSN parameters stored with
// the envelope. Every error a session returns goes
// through envelope.Funnel; every policy reply comes from envelope's reply
// table. Per-address limits (concurrent connections, connection rate,
// errors) are in limits.go.
//
// Abuse defence and mail authentication (policy.go, each optional in Deps):
// on port 25 the pregreet test and DNSBL/DNSWL scoring before the banner
// (554 5.5.0, 554 5.7.1), greylisting at RCPT (451 4.7.1), SPF from the
// first accepted RCPT and DKIM and DMARC while cleanup spools the message, with the recipient
// domains' DMARC failure policy (550 5.7.1 or a quarantine mark) and one
// Authentication-Results field under Options.Hostname; everywhere the
// client's message rate (450 4.7.1); for authenticated users the outbound
// limits (450 4.7.1) and DKIM signing with the key of a From: domain the user
// may send as (553 5.7.1 otherwise, or unsigned by configuration).
//
// Milters (milter.go, Deps.Milters per listener kind; mta/milter): each
// connection's milters are told about HELO, MAIL, each accepted RCPT and
// DATA, and see the message once it is spooled; their reject, tempfail,
// discard and quarantine become the session's replies and a held queue
// row, and their changes are applied by cleanup before the commit (added
// header fields in the prepend; other changes rewrite the spool file).
//
// SECURITY: this package is exposed to the whole network (port 25) and to
// our users' mail clients (587, 465): every byte it reads is hostile until
// checked. It holds passwords only in memory, during a SASL exchange, and
// verifies them under a semaphore after per-address throttling; it never
// writes a client's text into a reply, and bounds line lengths, message
// sizes, recipients, connections and time. It touches no file but the TLS
// certificate and key it reads, and reaches the database only through
// lookups, the authenticator, cleanup (which writes the spool and the queue
// rows) and the policy dependencies (greylisting state, outbound counters,
// DNSBL sites, DKIM keys, domain policies). It connects to the configured
// milters and sends them what the client sent; what they answer is checked
// by mta/milter and never trusted to end the header or inject a line. Its DNS queries (SPF, DKIM,
// DMARC, DNSBL) go through the one injected resolver those dependencies
// hold; what DNS answers is untrusted too, and reaches a reply only
// cleaned (a DNSBL's reason).
package smtpd
