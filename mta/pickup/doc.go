// Package pickup is the local submission service (Postfix's pickup, postdrop
// and showq in one): a unix socket, <spool>/pickup.sock by default, that the
// sendmail front end (cmd/sendmail, `facteur sendmail`, internal/sendmailcli)
// talks to. It needs no database credentials on the client side: the daemon
// identifies the local user from the socket's peer credentials (SO_PEERCRED),
// applies the local submission policy and hands messages to mta/cleanup, the
// only way into the queue.
//
// # Protocol
//
// The client sends one request line, ended by LF (a CR before it is
// ignored): SUBMIT, SMTP or SHOWQ. Replies are SMTP-style lines, "250 2.0.0
// Ok: queued as ID", "553 5.7.1 <x@y>: Sender address rejected: not owned by
// user", ended by LF.
//
// SUBMIT submits one message, as `sendmail` without -bs does:
//
//	C: SUBMIT
//	C: sender <addr>         optional; "sender" alone or "sender <>" is the
//	                         null sender; absent means user@myorigin
//	C: fullname <text>       optional (-F, or $NAME): used when From: is missing
//	C: rcpt <addr>           zero or more, as given on the command line
//	C: extract               optional (-t): add recipients from To:, Cc:, Bcc:
//	C: notify <list>         optional (-N): DSN NOTIFY for every recipient
//	C: envid <text>          optional (-V): DSN ENVID
//	C: body <7BIT|8BITMIME>  optional (-B)
//	C: data
//	S: 354 2.0.0 Send the message     or an error reply, then close
//	C: <n>LF then n bytes, repeated; "0" LF ends the message
//	S: 250 2.0.0 Ok: queued as ID     or an error reply
//
// The message arrives with LF or CRLF line ends and is stored with CRLF (the
// spool format); a bare CR is refused (550 5.5.2). A connection that ends
// before the "0" chunk queues nothing, so a sendmail killed half-way never
// sends half a message. The header block (at most Options.MaxHeaderBytes)
// is edited before cleanup sees it: a leading "From " line is dropped, Bcc:
// and Resent-Bcc: are removed (with -t their addresses become recipients),
// and From: is added when missing, with the full name and the envelope
// sender (Postfix's cleanup does the same). cleanup adds Message-ID: and
// Date: when missing.
//
// SMTP switches the connection to an SMTP session (sendmail -bs): the daemon
// sends its 220 greeting and the same policy applies to each MAIL FROM and
// RCPT TO as to SUBMIT.
//
// SHOWQ lists the queue as Postfix's mailq does: a "250 2.0.0 Queue
// listing follows" line, the listing, then a line holding only ".". Root
// and the trusted users see every message of this node; other users see only
// the messages they submitted themselves.
//
// # Policy
//
// The local user is the peer's uid, named through the password database
// (os/user); a uid without a name may not submit. Unqualified addresses
// ("root") are qualified with Options.MyOrigin (default: the host name), as
// the default sender user@myorigin is. Which envelope senders a user may use
// is a permission, as for submission (Postfix's local_login_sender_maps):
// root, the daemon's own user and Options.TrustedUIDs (the mail owner) may
// use any sender; any user may use the null sender and its own address (with
// or without an address extension); anything else needs an active row of
// the local_sender table for that user, naming the address or "@domain".
// So a web server's user cannot claim a hosted domain unless granted. A
// refused sender gets 553 5.7.1 (sendmail exits 77, EX_NOPERM).
//
// With a Signer (Deps.Signer), each message is DKIM-signed with the key of
// its From: domain, and the same permission applies to every From:
// address (DESIGN "Signing authority"): a From: the user may not use as
// envelope sender gets 553 5.7.1, or goes out unsigned, by the Signer's
// policy. The signature covers the message as queued, after cleanup's
// Message-ID: and Date:.
//
// Recipients are checked as smtpd checks them, at submission time: a
// malformed address gets 501 5.1.3, an address literal or sender routing
// 554 5.7.1, an unknown user of one of our domains 550 5.1.1, a lookup
// failure 451 4.3.0; any other domain is allowed (local users may send
// anywhere). Messages are enqueued with Protocol "local", the user as
// Client.LocalUser and Client.Submission set, so cleanup adds Message-ID:
// and Date:.
//
// SECURITY: the socket is reachable by every local user (mode 0666), so
// everything read from it is untrusted: request lines are bounded in length
// and number, the header block kept in memory is bounded, every connection
// has an idle timeout, and the number of concurrent connections is bounded.
// A user's identity comes only from the kernel (SO_PEERCRED), never from
// what the client says. The socket is created safely: its directory must be a
// directory owned by root or by the daemon's user and not writable by others
// unless sticky (as /tmp); an existing file at the path is removed only if it
// is a socket that no daemon answers on (and, in a sticky directory, one we
// own); the directory gets the search permission others need to reach the
// socket. The package writes nothing itself: messages go through cleanup,
// and it reads the database (local_sender, the queue tables) through store.
package pickup
