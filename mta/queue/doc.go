// Package queue is facteur's queue manager (Postfix's qmgr): it claims due
// recipients from PostgreSQL under a lease, groups them by message and next
// hop, limits concurrency globally and per destination, runs the delivery
// agent of each next hop, settles every result through the retry policy
// (policy.go, a pure function), queues the DSNs that recipients owe, and
// moves finished messages out of the queue tables before it removes their
// spool bodies.
//
// # Wake-ups
//
// The manager runs a claim pass when cleanup calls Wake (new mail in this
// process), on NOTIFY facteur_queue from another process (coalesced; a hint
// only), after each (re)connection of its LISTEN connection, at the next
// retry time, and every 30 seconds whatever happens.
//
// # Crashes
//
// Nothing is decided in memory alone. A claim is the record of an attempt
// (DESIGN.md, "record the attempt before making it"): if the process dies,
// the lease runs out and ReleaseExpiredLeases makes the recipient due again,
// so delivery is at-least-once. A bounce sets dsn_pending in the same
// statement that records it, and the DSN is queued in the transaction that
// clears it, so a DSN is never lost or doubled. A body is removed only after
// its message's rows are deleted; a crash in between leaves an unreferenced
// body that the reconciler removes.
//
// SECURITY: the queue manager listens on no socket. It reads message bodies
// from its node's spool (keys come from queue rows, which store/spool checks)
// and hands them to delivery agents, which are the parts that talk to the
// network, Dovecot, Maildirs or commands; it writes queue rows, delivery_log
// rows, and new messages (DSNs) through the store and the spool. Everything
// it relays in a DSN (reply texts from remote servers, addresses, the
// original message) is untrusted: mta/dsn cleans what goes into header
// fields.
package queue
