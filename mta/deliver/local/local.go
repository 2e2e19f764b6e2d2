// Package local is facteur's local(8): it delivers the recipients that
// lookups gives the "local" transport, for domains marked local (the host's
// own name, localhost):
//
//   - a system user (user@host, found in the operating system's user
//     database): its ~/.forward file when there is a safe one, else its
//     mailbox, /var/mail/USER (Options.MailboxStyle "mbox", the default) or
//     ~/Maildir/ ("maildir");
//   - "|command" from an alias: run with /bin/sh -c, the message on its
//     standard input;
//   - "/file/name" from an alias: appended in mbox format ("/dir/name/" with a
//     trailing slash is a Maildir; "/dev/null" discards);
//   - ":include:/file/name" from an alias: the file's destinations, each
//     delivered as above or, for addresses, re-submitted.
//
// Addresses named by a .forward or :include: file are re-submitted as one
// new message (through Submitter: cleanup, which resolves them as any
// recipient), with "Delivered-To: <recipient>" prepended: a message that
// comes back to a recipient it was delivered to already is a mail forwarding
// loop and bounces (554 5.4.6), as in Postfix.
//
// # Mailboxes
//
// An mbox mailbox gets a "From sender date" line, the header fields
// Return-Path:, X-Original-To: and Delivered-To:, the message with LF line
// ends and every line that begins with "From " quoted as ">From ", and an
// empty line. The mailbox is locked with a dot-lock file (USER.lock, created
// with O_EXCL, taken over when older than Options.StaleLockAge) and an
// fcntl(2) lock on the file (Options.Locks may add flock(2)), each tried
// Options.LockAttempts times Options.LockDelay apart before the delivery is
// deferred. The file is fsynced before the recipient is reported delivered,
// and truncated back to its size before the delivery when writing fails. A
// new mailbox is created mode 0600; an existing one must be a regular file,
// not a symbolic link, with one link, owned by the user.
//
// A Maildir (~/Maildir/ or a file destination ending in "/") is written by
// the Maildir agent (mta/deliver/maildir) run as the user: tmp/, fsync, link
// into new/, fsync of new/.
//
// # .forward
//
// ~/.forward is read as the user, and honoured only when it is a regular
// file owned by the user and not writable by group or others, in a home
// directory owned by the user (or root) and not writable by group or
// others; otherwise it is ignored (with a warning in the log) and the mail
// goes to the mailbox. Each line is a comma-separated list of destinations
// (aliasesfile.ParseForward): addresses and bare user names (re-submitted),
// "|command" and "/file" (as the user), "\user" (the user's own mailbox, no
// further forwarding; the user's own name or address means the same).
// ":include:" is not honoured in .forward files.
//
// # Results
//
// A recipient whose deliveries (mailbox, commands, files, the re-submission)
// all succeed is Delivered; if any defers, the recipient is Deferred (a retry
// repeats the deliveries that succeeded: at-least-once); if any bounces, it
// is Bounced. Commands' exit statuses follow Postfix's sys_exits table (the
// pipe agent's). Failures under the operator's control (a missing spool
// directory, a lock that stays held, a full disk) defer.
//
// SECURITY: this agent exposes nothing to the network, but what it runs and
// writes is steered by messages from untrusted senders and by files that
// users control. Everything that touches a user's files or runs a program
// runs in a child process with that user's credentials (uid, gid and the
// user's groups; setuid in Go applies to every thread, so never in this
// process): the facteur binary re-executed as a helper (Options.Helper,
// "facteur local-deliver", the message on its standard input, parameters in
// argv) for mailboxes, files and reading .forward and :include: files, and
// /bin/sh for commands. Nothing ever runs as root: mail for uid 0 defers
// until root is aliased to a person; commands and files from aliases run as
// Options.DefaultUser ("nobody": aliases with commands come only from the
// CLI or from an aliases file owned by root), those of an :include: file as
// the file's owner (DefaultUser when root owns it), and only when
// Options.AllowIncludeCommands is set (Postfix's allow_mail_to_commands
// default leaves include files out too). An :include: file or a .forward
// that others can write is not trusted. Values from the envelope reach
// commands only through the environment (SENDER, RECIPIENT, ...), with every
// character outside Postfix's command_expansion_filter replaced by "_", and
// never through a shell command line. A command, file or :include:
// recipient is run only as the expansion of an alias (its original
// recipient is another address): one that is its own original recipient
// came from outside and is refused. When facteur does not run as root it can
// only deliver to its own user: other users' recipients defer.
package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/mailfile"
	"github.com/facteur/facteur/mta/deliver/pipe"
	"github.com/facteur/facteur/mta/envelope"
)

// Mailbox styles.
const (
	StyleMbox    = "mbox"
	StyleMaildir = "maildir"
)

// Lock kinds for mbox files.
const (
	LockDot   = "dotlock"
	LockFcntl = "fcntl"
	LockFlock = "flock"
)

// Defaults of Options.
const (
	DefaultMailSpoolDir = "/var/mail"
	DefaultMaildirName  = "Maildir"
	DefaultUser         = "nobody"
	DefaultShell        = "/bin/sh"
	DefaultTimeout      = 5 * time.Minute
	DefaultLockAttempts = 20
	DefaultLockDelay    = time.Second
	// DefaultStaleLockAge is Postfix's stale_lock_time.
	DefaultStaleLockAge = 500 * time.Second
	DefaultNullSender   = "MAILER-DAEMON"
	// DefaultHelper re-executes the running binary (even when the file was
	// replaced by an upgrade), with the hidden "local-deliver" subcommand.
	DefaultHelperPath = "/proc/self/exe"
	HelperCommand     = "local-deliver"
)

// maxIncludeDepth bounds :include: files within :include: files.
const maxIncludeDepth = 5

// Relay is what Result.Relay says for this agent.
const Relay = "local"

// Submitter queues a new message as cleanup does any message; it returns the
// queue id once the message is durably queued. *cleanup.Cleanup is one.
type Submitter interface {
	Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (queueID string, err error)
}

// Options configure an Agent. Zero values take the defaults.
type Options struct {
	// MailboxStyle is StyleMbox (the default: MailSpoolDir/USER) or
	// StyleMaildir (~/MaildirName/).
	MailboxStyle string
	// MailSpoolDir holds mbox mailboxes ("/var/mail"). The users need to
	// create USER and USER.lock in it: it should be group-writable by a
	// mail group (Debian: root:mail 2775; the helper then runs with that
	// group as well as the user's) or world-writable and sticky (1777).
	MailSpoolDir string
	// MaildirName is the Maildir below a user's home ("Maildir").
	MaildirName string
	// DefaultUser runs commands and files from aliases ("nobody"); never
	// root.
	DefaultUser string
	// NoForward turns ~/.forward files off.
	NoForward bool
	// AllowIncludeCommands lets :include: files name commands and files
	// (run as the file's owner); off by default, as in Postfix.
	AllowIncludeCommands bool
	// RecipientDelimiter separates a user from an address extension ("+";
	// lookups' setting): user+ext@host is delivered to user.
	RecipientDelimiter string
	// LocalDomain completes bare user names in :include: files (default:
	// Hostname, the domain newaliases imports into).
	LocalDomain string
	// Hostname goes into Maildir file names ("": os.Hostname()).
	Hostname string
	// Helper is the program and leading arguments of the helper, the
	// facteur binary with its hidden subcommand (DefaultHelperPath,
	// HelperCommand); it must run HelperMain with the arguments after
	// them.
	Helper []string
	// Shell runs commands ("/bin/sh", with -c).
	Shell string
	// Timeout bounds each child process (5 min); keep it shorter than the
	// queue's delivery timeout.
	Timeout time.Duration
	// Locks are the mbox locks taken (LockDot and LockFcntl, Postfix's
	// Linux default); LockFlock adds flock(2).
	Locks []string
	// LockAttempts, LockDelay: how often and how far apart a held lock is
	// tried again (20 times, 1 s) before the delivery defers.
	LockAttempts int
	LockDelay    time.Duration
	// StaleLockAge is the age past which a dot-lock file is removed (500 s).
	StaleLockAge time.Duration
	// NullSender is the From_ line sender of bounces ("MAILER-DAEMON").
	NullSender string
	// MaxOutput bounds the command output kept in a reply (400 bytes).
	MaxOutput int
}

// Agent delivers to local users, commands and files. It is safe for
// concurrent use.
type Agent struct {
	opts Options
	sub  Submitter
	root bool
	self pipe.Identity // who we are when not root
}

// New returns an Agent that re-submits forwarded mail through sub (nil:
// forwarding defers). It fails when the default user is unusable.
func New(opts Options, sub Submitter) (*Agent, error) {
	if opts.MailboxStyle == "" {
		opts.MailboxStyle = StyleMbox
	}
	if opts.MailboxStyle != StyleMbox && opts.MailboxStyle != StyleMaildir {
		return nil, fmt.Errorf("local: mailbox style %q: want %s or %s", opts.MailboxStyle, StyleMbox, StyleMaildir)
	}
	if opts.MailSpoolDir == "" {
		opts.MailSpoolDir = DefaultMailSpoolDir
	}
	if !filepath.IsAbs(opts.MailSpoolDir) {
		return nil, fmt.Errorf("local: mail spool directory %q is not absolute", opts.MailSpoolDir)
	}
	if opts.MaildirName == "" {
		opts.MaildirName = DefaultMaildirName
	}
	if !filepath.IsLocal(opts.MaildirName) {
		return nil, fmt.Errorf("local: maildir name %q must be relative to the home directory", opts.MaildirName)
	}
	if opts.DefaultUser == "" {
		opts.DefaultUser = DefaultUser
	}
	if opts.RecipientDelimiter == "" {
		opts.RecipientDelimiter = "+"
	}
	if len(opts.Helper) == 0 {
		opts.Helper = []string{DefaultHelperPath, HelperCommand}
	}
	if opts.Shell == "" {
		opts.Shell = DefaultShell
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if len(opts.Locks) == 0 {
		opts.Locks = []string{LockDot, LockFcntl}
	}
	for _, l := range opts.Locks {
		if l != LockDot && l != LockFcntl && l != LockFlock {
			return nil, fmt.Errorf("local: unknown lock %q (want %s, %s or %s)", l, LockDot, LockFcntl, LockFlock)
		}
	}
	if opts.LockAttempts <= 0 {
		opts.LockAttempts = DefaultLockAttempts
	}
	if opts.LockDelay <= 0 {
		opts.LockDelay = DefaultLockDelay
	}
	if opts.StaleLockAge <= 0 {
		opts.StaleLockAge = DefaultStaleLockAge
	}
	if opts.NullSender == "" {
		opts.NullSender = DefaultNullSender
	}
	if opts.MaxOutput <= 0 {
		opts.MaxOutput = pipe.DefaultMaxOutput
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("local: hostname: %w", err)
		}
		opts.Hostname = h
	}
	if opts.LocalDomain == "" {
		opts.LocalDomain = opts.Hostname
	}
	a := &Agent{opts: opts, sub: sub, root: os.Geteuid() == 0}
	if a.root {
		if _, err := pipe.LookupUser(opts.DefaultUser); err != nil {
			return nil, fmt.Errorf("local: default user: %w", err)
		}
	} else {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("local: current user: %w", err)
		}
		a.self = pipe.Identity{Name: u.Username, Home: u.HomeDir}
	}
	return a, nil
}

// Deliver delivers msg to each recipient; see the package comment. nexthop
// is ignored ("local" transports have none).
func (a *Agent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	log := msg.Log
	if log == nil {
		log = slog.Default().With("queue_id", msg.QueueID)
	}
	results := make([]deliver.Result, len(rcpts))
	done := make(map[string]int, len(rcpts))
	for i, rc := range rcpts {
		if j, ok := done[rc.Address]; ok {
			results[i] = results[j]
			continue
		}
		done[rc.Address] = i
		if ctx.Err() != nil {
			results[i] = result(deliver.Deferred, 451, envelope.Status{4, 4, 7}, "local delivery interrupted")
			continue
		}
		d := &delivery{a: a, msg: msg, rc: rc, log: log.With("to", rc.Address, "orig_to", rc.Orig)}
		results[i] = d.run(ctx)
		// The queue manager logs every attempt's result; this line adds the
		// agent's view for debugging.
		d.log.Debug("local: "+results[i].Status.String(), "reply", results[i].Reply.String())
	}
	return results
}

func result(st deliver.Status, code int, es envelope.Status, text string) deliver.Result {
	return deliver.Result{Status: st, Reply: envelope.Reply{Code: code, Enhanced: es, Text: text}, Relay: Relay}
}

func delivered(text string) deliver.Result {
	return result(deliver.Delivered, 250, envelope.Status{2, 0, 0}, text)
}

// configError is a temporary failure the operator must fix (RFC 3463 X.3.5).
func configError(text string) deliver.Result {
	return result(deliver.Deferred, 451, envelope.Status{4, 3, 5}, "Mail system configuration error: "+text)
}

func tempError(text string) deliver.Result {
	return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, text)
}

// delivery is the delivery of msg to one recipient.
type delivery struct {
	a   *Agent
	msg *deliver.Message
	rc  deliver.Recipient
	log *slog.Logger
	// forwards are the addresses to re-submit, in order, without repeats.
	forwards []string
	// hdr is the message's header block, read once.
	hdr []byte
}

func (d *delivery) run(ctx context.Context) deliver.Result {
	addr := d.rc.Address
	if isDestination(addr) && (d.rc.Orig == "" || strings.EqualFold(d.rc.Orig, addr)) {
		// Commands, files and :include: reach this agent only as the
		// expansion of an alias, whose address is the recipient's Orig. A
		// "|..." that is its own original recipient came from outside (a
		// quoted local part routed here by a transport): never run it.
		return result(deliver.Bounced, 550, envelope.Status{5, 1, 3}, "<"+oneLine(addr, 200)+">: not an alias destination: refused")
	}
	switch {
	case strings.HasPrefix(addr, "|"):
		as, res := d.a.defaultIdentity()
		if res != nil {
			return *res
		}
		return d.command(ctx, addr[1:], as, d.recipientVars(d.origAddress()))
	case strings.HasPrefix(addr, "/"):
		as, res := d.a.defaultIdentity()
		if res != nil {
			return *res
		}
		return d.file(ctx, addr, as)
	case hasPrefixFold(addr, ":include:"):
		res := d.include(ctx, strings.TrimSpace(addr[len(":include:"):]), 1)
		return d.finish(ctx, res)
	}
	return d.user(ctx)
}

// isDestination reports whether addr is a command, file or :include:
// destination rather than an address.
func isDestination(addr string) bool {
	return strings.HasPrefix(addr, "|") || strings.HasPrefix(addr, "/") || hasPrefixFold(addr, ":include:")
}

// origAddress is the address the recipient had before alias expansion.
func (d *delivery) origAddress() string {
	if d.rc.Orig != "" {
		return d.rc.Orig
	}
	return d.rc.Address
}

// header returns the message's header block.
func (d *delivery) header() ([]byte, error) {
	if d.hdr != nil {
		return d.hdr, nil
	}
	body, err := d.msg.Open()
	if err != nil {
		return nil, err
	}
	defer body.Close()
	h, err := mailfile.ReadHeader(bufio.NewReaderSize(body, 64<<10))
	if err != nil {
		return nil, err
	}
	d.hdr = h
	return h, nil
}

// defaultIdentity is who runs commands and files of aliases.
func (a *Agent) defaultIdentity() (pipe.Identity, *deliver.Result) {
	if !a.root {
		return a.self, nil
	}
	id, err := pipe.LookupUser(a.opts.DefaultUser)
	if err != nil {
		r := configError("default user " + a.opts.DefaultUser + " unusable")
		return pipe.Identity{}, &r
	}
	return id, nil
}

// account is a system user to deliver to.
type account struct {
	name string
	uid  uint32
	gid  uint32
	home string
	id   pipe.Identity // with the user's groups
}

// lookupAccount finds a system user; found is false when there is none.
func (a *Agent) lookupAccount(name string) (acct account, found bool, err error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name[0] == '-' || name[0] == '.' {
		return account{}, false, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		var unk user.UnknownUserError
		if errors.As(err, &unk) {
			return account{}, false, nil
		}
		return account{}, false, err
	}
	return accountOf(u)
}

func accountOf(u *user.User) (account, bool, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return account{}, false, fmt.Errorf("user %s: non-numeric ids", u.Username)
	}
	home := u.HomeDir
	if home == "" {
		home = "/"
	}
	var groups []uint32
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && n != 0 && !slices.Contains(groups, uint32(n)) {
				groups = append(groups, uint32(n))
			}
		}
	}
	acct := account{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: home}
	acct.id = pipe.Identity{Name: u.Username, Home: home,
		Credential: &syscall.Credential{Uid: acct.uid, Gid: acct.gid, Groups: groups}}
	return acct, true, nil
}

// identity returns who runs deliveries for acct, or a result when this
// process cannot act as acct.
func (a *Agent) identity(acct account) (pipe.Identity, *deliver.Result) {
	if acct.uid == 0 || acct.gid == 0 {
		// DESIGN.md: nothing runs as root.
		r := configError("mail for " + acct.name + " (uid 0) is not delivered: alias " + acct.name + " to a person")
		return pipe.Identity{}, &r
	}
	if !a.root {
		if uint32(os.Geteuid()) != acct.uid {
			r := configError("facteur does not run as root: it cannot deliver as user " + acct.name)
			return pipe.Identity{}, &r
		}
		id := acct.id
		id.Credential = nil
		return id, nil
	}
	return acct.id, nil
}

// user delivers to a system user: .forward or the mailbox.
func (d *delivery) user(ctx context.Context) deliver.Result {
	addr := d.rc.Address
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return result(deliver.Bounced, 550, envelope.Status{5, 1, 3}, "<"+addr+">: bad address syntax")
	}
	local, domain := strings.ToLower(addr[:at]), addr[at+1:]
	if strings.HasPrefix(local, "|") || strings.HasPrefix(local, "/") || strings.HasPrefix(local, ":") {
		return result(deliver.Bounced, 550, envelope.Status{5, 1, 3}, "<"+addr+">: bad address syntax")
	}
	name, ext := address.SplitExtension(local, d.a.opts.RecipientDelimiter)
	acct, found, err := d.a.lookupAccount(name)
	if err == nil && !found && ext != "" {
		acct, found, err = d.a.lookupAccount(local)
		if found {
			ext = ""
		}
	}
	if err != nil {
		d.log.Error("local: user lookup", "user", name, "err", err)
		r := envelope.LookupFailed()
		return result(deliver.Deferred, r.Code, r.Enhanced, "Temporary lookup failure: user "+name)
	}
	if !found {
		// Postfix local: "unknown user". The resolver found the user when
		// the message was queued; the passwd file changed since.
		return result(deliver.Bounced, 550, envelope.Status{5, 1, 1}, "<"+addr+">: unknown user: \""+name+"\"")
	}
	id, res := d.a.identity(acct)
	if res != nil {
		d.log.Error("local: cannot deliver as user", "user", acct.name, "reply", res.Reply.String())
		return *res
	}
	d.log = d.log.With("user", acct.name)
	hdr, err := d.header()
	if err != nil {
		d.log.Error("local: read queued message", "err", err)
		return tempError("cannot read queued message")
	}
	if mailfile.DeliveredTo(hdr, addr) {
		return result(deliver.Bounced, 554, envelope.Status{5, 4, 6}, "<"+addr+">: mail forwarding loop for "+addr)
	}
	vars := d.recipientVars(addr)
	vars.local, vars.ext = local, ext
	if !d.a.opts.NoForward {
		dests, fres := d.readForward(ctx, acct, id)
		if fres != nil {
			return *fres
		}
		if len(dests) > 0 {
			return d.finish(ctx, d.forward(ctx, acct, id, domain, dests, vars))
		}
	}
	return d.mailbox(ctx, acct, id)
}

// mailbox delivers to the user's own mailbox.
func (d *delivery) mailbox(ctx context.Context, acct account, id pipe.Identity) deliver.Result {
	if d.a.opts.MailboxStyle == StyleMaildir {
		dir := filepath.Join(acct.home, d.a.opts.MaildirName)
		return d.maildir(ctx, dir, id, "delivered to maildir")
	}
	spool := d.a.opts.MailSpoolDir
	path := filepath.Join(spool, acct.name)
	// Let the helper create USER and USER.lock in a spool directory that
	// a mail group may write (Debian: root:mail 2775).
	if fi, err := os.Stat(spool); err == nil && id.Credential != nil {
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm()&0o020 != 0 && st.Gid != 0 && !slices.Contains(id.Credential.Groups, st.Gid) {
			c := *id.Credential
			c.Groups = append(slices.Clip(c.Groups), st.Gid)
			id.Credential = &c
		}
	}
	return d.mbox(ctx, path, id, true, int64(acct.uid), "delivered to mailbox")
}

// file delivers to a file destination as id: mbox, or a Maildir when the
// name ends in "/"; "/dev/null" discards.
func (d *delivery) file(ctx context.Context, path string, id pipe.Identity) deliver.Result {
	if path == "/dev/null" {
		return delivered("discarded to /dev/null")
	}
	if strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return result(deliver.Bounced, 550, envelope.Status{5, 3, 0}, "bad file name")
	}
	if strings.HasSuffix(path, "/") {
		return d.maildir(ctx, filepath.Clean(path), id, "delivered to maildir "+path)
	}
	return d.mbox(ctx, filepath.Clean(path), id, false, -1, "delivered to file: "+path)
}

// mbox appends the message to path as id, through the helper. A mailbox in
// the spool must exist as owner's (or is created); a file's dot-lock may
// fail when its directory is not writable (Postfix's
// MBOX_DOT_LOCK_MAY_FAIL for files).
func (d *delivery) mbox(ctx context.Context, path string, id pipe.Identity, spool bool, owner int64, text string) deliver.Result {
	sender := d.msg.Sender
	if sender == "" {
		sender = d.a.opts.NullSender
	}
	args := []string{"mbox", "-sender", sender,
		"-locks", strings.Join(d.a.opts.Locks, ","),
		"-attempts", strconv.Itoa(d.a.opts.LockAttempts),
		"-delay", d.a.opts.LockDelay.String(),
		"-stale", d.a.opts.StaleLockAge.String()}
	if spool {
		args = append(args, "-owner", strconv.FormatInt(owner, 10))
	} else {
		args = append(args, "-dotlock-may-fail")
	}
	args = append(args, "--", path)
	rep, res := d.helperMsg(ctx, id, d.deliveryHeader(), args...)
	if res != nil {
		return *res
	}
	r := rep.result()
	if r.Status == deliver.Delivered {
		r.Reply.Text = text
	}
	return r
}

// maildir delivers into the Maildir dir as id, through the helper.
func (d *delivery) maildir(ctx context.Context, dir string, id pipe.Identity, text string) deliver.Result {
	rcpt := d.rc.Address
	if !strings.Contains(rcpt, "@") {
		rcpt = d.origAddress()
	}
	rep, res := d.helperMsg(ctx, id, "", "maildir", "-rcpt", rcpt, "-sender", d.msg.Sender,
		"-queue-id", d.msg.QueueID, "-hostname", d.a.opts.Hostname, "--", dir)
	if res != nil {
		return *res
	}
	r := rep.result()
	if r.Status == deliver.Delivered {
		r.Reply.Text = text
	}
	return r
}

// deliveryHeader is what local(8) prepends for mailboxes, files and
// commands: Return-Path:, X-Original-To:, Delivered-To: (LF line ends: the
// child gets the message with LF).
func (d *delivery) deliveryHeader() string {
	rcpt := d.rc.Address
	if !strings.Contains(rcpt, "@") {
		rcpt = d.origAddress()
	}
	return "Return-Path: <" + pipe.SanitizeHeaderValue(d.msg.Sender) + ">\n" +
		"X-Original-To: " + pipe.SanitizeHeaderValue(d.origAddress()) + "\n" +
		"Delivered-To: " + pipe.SanitizeHeaderValue(rcpt) + "\n"
}

// fromLine is the mbox "From sender date" line (for commands; the helper
// writes its own for mailboxes and files).
func fromLine(sender string, now time.Time) string {
	return "From " + fromSender(sender) + " " + now.Format(fromDate) + "\n"
}

// fromDate is asctime(3)'s format, the mbox convention.
const fromDate = "Mon Jan _2 15:04:05 2006"

// fromSender makes the envelope sender fit the From_ line: no white space
// or control characters.
func fromSender(s string) string {
	if s == "" {
		return DefaultNullSender
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}

// cmdVars are the values exported to commands.
type cmdVars struct {
	recipient, orig, local, domain, ext string
}

func (d *delivery) recipientVars(addr string) cmdVars {
	v := cmdVars{recipient: addr, orig: d.origAddress()}
	if at := strings.LastIndexByte(addr, '@'); at > 0 {
		v.local, v.domain = strings.ToLower(addr[:at]), addr[at+1:]
		_, v.ext = address.SplitExtension(v.local, d.a.opts.RecipientDelimiter)
	}
	return v
}

// expansionFilter is Postfix's default command_expansion_filter: other
// characters in values exported to commands become "_".
const expansionFilter = "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func filterValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && strings.ContainsRune(expansionFilter, r) {
			return r
		}
		return '_'
	}, s)
}

// command runs /bin/sh -c cmd as id with the message on its standard input.
func (d *delivery) command(ctx context.Context, cmd string, id pipe.Identity, v cmdVars) deliver.Result {
	cmd = strings.TrimSpace(cmd)
	if cmd == "" || strings.ContainsRune(cmd, 0) {
		return result(deliver.Bounced, 550, envelope.Status{5, 3, 0}, "bad command")
	}
	body, err := d.msg.Open()
	if err != nil {
		d.log.Error("local: open queued message", "err", err)
		return tempError("cannot read queued message")
	}
	defer body.Close()
	sender := d.msg.Sender
	home := id.Home
	if home == "" {
		home = "/"
	}
	dir := home
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		dir = "/"
	}
	env := []string{
		"PATH=/usr/bin:/bin", "SHELL=" + d.a.opts.Shell, "HOME=" + home,
		"USER=" + id.Name, "LOGNAME=" + id.Name, "LANG=C",
		"SENDER=" + filterValue(sender), "RECIPIENT=" + filterValue(v.recipient),
		"ORIGINAL_RECIPIENT=" + filterValue(v.orig), "LOCAL=" + filterValue(v.local),
		"DOMAIN=" + filterValue(v.domain), "EXTENSION=" + filterValue(v.ext),
		"QUEUE_ID=" + filterValue(d.msg.QueueID),
	}
	c := pipe.Command{
		Argv: []string{d.a.opts.Shell, "-c", cmd}, Env: env, Dir: dir, As: id,
		Timeout: d.a.opts.Timeout, MaxOutput: d.a.opts.MaxOutput,
		Header: fromLine(sender, time.Now()) + d.deliveryHeader(), Body: body,
	}
	out := c.Run(ctx)
	if out.StartErr != nil {
		d.log.Error("local: start command", "cmd", cmd, "user", id.Name, "err", out.StartErr)
	}
	r := out.Result(commandName(cmd), Relay)
	d.log.Debug("local: command", "cmd", cmd, "user", id.Name, "elapsed", out.Elapsed, "reply", r.Reply.String())
	if r.Status == deliver.Delivered {
		r.Reply.Text = "delivered to command: " + oneLine(cmd, 200)
	}
	return r
}

// commandName names a command in replies: its first word.
func commandName(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		return "command"
	}
	return oneLine(f[0], 100)
}

func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "..."
	}
	return s
}

// Helper replies: read's statuses, and deliveries' ("sent", "deferred",
// "bounced", as deliver.Status.String).
const (
	readOK     = "ok"
	readNone   = "none"
	readUnsafe = "unsafe"
	readFailed = "error"
)

// helperReply is what the helper prints on its standard output, as JSON.
type helperReply struct {
	Status   string          `json:"status"`
	Code     int             `json:"code,omitempty"`
	Enhanced envelope.Status `json:"enhanced,omitzero"`
	Text     string          `json:"text,omitempty"`
	Content  string          `json:"content,omitempty"`
}

func (h *helperReply) result() deliver.Result {
	var st deliver.Status
	switch h.Status {
	case deliver.Delivered.String():
		st = deliver.Delivered
	case deliver.Bounced.String():
		st = deliver.Bounced
	default:
		st = deliver.Deferred
	}
	code, es := h.Code, h.Enhanced
	if code == 0 || !es.Valid() {
		switch st {
		case deliver.Delivered:
			code, es = 250, envelope.Status{2, 0, 0}
		case deliver.Bounced:
			code, es = 550, envelope.Status{5, 0, 0}
		default:
			code, es = 451, envelope.Status{4, 3, 0}
		}
	}
	return result(st, code, es, h.Text)
}

// maxHelperReply bounds the helper's standard output (a .forward or
// :include: file of up to maxReadFile bytes, JSON-quoted).
const maxHelperReply = 8 * maxReadFile

// helper runs the helper as id with args and nothing on its standard input.
// It returns the helper's reply, or a result when the helper did not give
// one.
func (a *Agent) helper(ctx context.Context, id pipe.Identity, log *slog.Logger, args ...string) (helperReply, *deliver.Result) {
	return a.helperWith(ctx, id, "", nil, log, args...)
}

// helperMsg runs the helper with hdr and the message on its standard input.
func (d *delivery) helperMsg(ctx context.Context, id pipe.Identity, hdr string, args ...string) (helperReply, *deliver.Result) {
	body, err := d.msg.Open()
	if err != nil {
		d.log.Error("local: open queued message", "err", err)
		r := tempError("cannot read queued message")
		return helperReply{}, &r
	}
	defer body.Close()
	return d.a.helperWith(ctx, id, hdr, body, d.log, args...)
}

func (a *Agent) helperWith(ctx context.Context, id pipe.Identity, hdr string, body io.Reader, log *slog.Logger, args ...string) (helperReply, *deliver.Result) {
	stdout := &capBuffer{max: maxHelperReply}
	c := pipe.Command{
		Argv:    append(slices.Clip(a.opts.Helper), args...),
		Env:     []string{"PATH=/usr/bin:/bin", "LANG=C", "HOME=" + id.Home, "USER=" + id.Name, "LOGNAME=" + id.Name},
		As:      id,
		Timeout: a.opts.Timeout, MaxOutput: a.opts.MaxOutput,
		Stdout: stdout, Header: hdr, Body: body,
	}
	out := c.Run(ctx)
	var rep helperReply
	if out.StartErr == nil && !out.TimedOut && !out.Interrupted && out.Signal == 0 && !stdout.cut {
		if err := json.Unmarshal(bytes.TrimSpace(stdout.buf.Bytes()), &rep); err == nil && rep.Status != "" {
			if out.CopyErr != nil {
				log.Error("local: copy message to helper", "err", out.CopyErr)
				r := tempError("cannot read queued message")
				return rep, &r
			}
			if rep.Status == readFailed || rep.Status == deliver.Deferred.String() {
				log.Warn("local: helper", "mode", args[0], "user", id.Name, "status", rep.Status, "text", rep.Text, "stderr", out.Output)
			}
			return rep, nil
		}
	}
	log.Error("local: helper failed", "mode", args[0], "user", id.Name, "helper", a.opts.Helper[0],
		"start_err", out.StartErr, "exit", out.ExitStatus, "signal", int(out.Signal), "timed_out", out.TimedOut,
		"stderr", out.Output)
	r := out.Result("local-deliver", Relay)
	if r.Status == deliver.Delivered || r.Status == deliver.Bounced {
		// Exit 0 (or a status) without a reply: the outcome is unknown.
		r = tempError("local delivery helper failed")
	}
	return rep, &r
}

// capBuffer keeps up to max bytes and notes that more came.
type capBuffer struct {
	buf bytes.Buffer
	max int
	cut bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); len(p) > room {
		c.buf.Write(p[:max(room, 0)])
		c.cut = true
	} else {
		c.buf.Write(p)
	}
	return len(p), nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
