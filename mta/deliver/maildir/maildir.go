// Package maildir is facteur's virtual(8): it delivers messages to virtual
// mailboxes stored as Maildirs under one mail root, in the layout that
// Dovecot reads (mail_location = maildir:<mail root>/%d/%n, or the
// mailbox.maildir column that Dovecot's userdb reads too).
//
// One delivery, for each recipient (Postfix virtual/maildir.c, with the
// directory fsync that Postfix leaves out):
//
//  1. the header block is read and a Delivered-To: naming the recipient is a
//     mail loop (554 5.4.6, Postfix's "mail forwarding loop");
//  2. <maildir>/tmp/<unique> is created with O_EXCL, owned by the mail owner,
//     mode 0600, and gets Return-Path:, Delivered-To: and the message with
//     its CRLF line ends turned into LF;
//  3. the file is fsynced and closed, and the mailbox quota is checked
//     against the usage's single owner (DESIGN.md "Quota usage has one
//     owner"): Options.QuotaSource (Dovecot's numbers exported to
//     quota_usage) or, without one, Maildir++ maildirsize, which this agent
//     then keeps up to date as Dovecot's maildir quota backend does;
//  4. the file is hard-linked into new/ under its final name (link never
//     replaces an existing file, unlike rename), the tmp/ name is removed and
//     new/ is fsynced. Only then is the recipient Delivered.
//
// Unique names are Dovecot's: <sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>
// (the maildir specification, https://cr.yp.to/proto/maildir.html, with
// Dovecot's S= and W= sizes so that it need not stat or read the file).
//
// Failures under the operator's control (a missing or unwritable mail root,
// a full disk, a file where a directory should be) are temporary: the queue
// retries them, they never bounce. Only a loop, an over-quota mailbox (unless
// Options.QuotaTempfail) and a recipient without a mailbox are permanent.
//
// SECURITY: this agent exposes nothing to the network. It writes only under
// the mail root, through an os.Root, so that neither a maildir path from the
// database nor a symbolic link inside the tree can make it write elsewhere;
// maildir paths must be relative and free of "..". When running as root it
// creates every directory and file it makes with the configured mail owner
// (never root: Dovecot refuses uid 0) and modes 0700/0600, changing
// ownership on the open descriptor (fchown) and on directories without
// following links (lchown). Message contents are copied, never interpreted,
// except for the header block that is scanned for Delivered-To:.
package maildir

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/mailfile"
	"github.com/facteur/facteur/mta/envelope"
)

// UsageSource reports a mailbox's quota usage as its single owner keeps it
// (DESIGN.md "Quota usage has one owner"): for mailboxes that Dovecot serves,
// Dovecot's quota_usage row. mailbox is the recipient's address. ok is false
// when there is no usage record yet (a mailbox that Dovecot has not counted),
// which counts as empty. An error defers the delivery (451 4.3.0).
type UsageSource interface {
	Usage(ctx context.Context, mailbox string) (bytes, messages int64, ok bool, err error)
}

// UsageFunc adapts a function to UsageSource.
type UsageFunc func(ctx context.Context, mailbox string) (bytes, messages int64, ok bool, err error)

// Usage calls f.
func (f UsageFunc) Usage(ctx context.Context, mailbox string) (int64, int64, bool, error) {
	return f(ctx, mailbox)
}

// Options configure an Agent.
type Options struct {
	// Root is the mail root; Recipient.Mailbox.Maildir is relative to it.
	// A missing root defers deliveries (it may be an unmounted volume).
	Root string

	// UID and GID are the mail owner (DESIGN.md "Mail ownership"). When the
	// process runs as root, every directory and file the agent creates is
	// given to them, and they must not be 0. When it does not run as root,
	// they are ignored: files belong to the process's user, which must then
	// be the mail owner.
	UID, GID int

	// Hostname goes into unique file names; "" is os.Hostname().
	Hostname string

	// QuotaSource gives mailbox usage when something else (Dovecot) owns it;
	// nil makes the agent keep Maildir++ maildirsize files itself.
	QuotaSource UsageSource

	// QuotaTempfail makes an over-quota mailbox a temporary failure (452
	// 4.2.2) instead of a permanent one (552 5.2.2), as Dovecot's
	// quota_full_tempfail does.
	QuotaTempfail bool
}

// Agent delivers to Maildirs. It is safe for concurrent use.
type Agent struct {
	opts  Options
	host  string // sanitised for file names
	pid   int
	chown bool
	seq   atomic.Uint64
	// locks serialise the quota check and the link into new/ per maildir
	// within this process, so that concurrent deliveries cannot both pass
	// a quota that only one of them fits in.
	locks [64]sync.Mutex
	// syncs share the fsyncs of new/ among concurrent deliveries to one
	// maildir (by its path below the root), while any is in use.
	syncMu sync.Mutex
	syncs  map[string]*dirSync
}

// New returns an Agent, or an error when the options are unusable.
func New(opts Options) (*Agent, error) {
	if opts.Root == "" {
		return nil, errors.New("maildir: mail root not set")
	}
	a := &Agent{opts: opts, pid: os.Getpid(), chown: os.Geteuid() == 0}
	if a.chown && (opts.UID <= 0 || opts.GID <= 0) {
		return nil, fmt.Errorf("maildir: mail owner %d:%d: running as root needs a mail owner other than root", opts.UID, opts.GID)
	}
	host := opts.Hostname
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("maildir: hostname: %w", err)
		}
		host = h
	}
	// The maildir specification: "/" becomes \057 and ":" \072; "," is
	// escaped too, since it starts the S= and W= fields.
	a.host = strings.NewReplacer("/", `\057`, ":", `\072`, ",", `\054`).Replace(host)
	return a, nil
}

// Relay is what Result.Relay says for this agent.
const Relay = "maildir"

// Deliver writes msg into each recipient's Maildir; see the package comment.
// nexthop is ignored ("maildir" transports have none).
func (a *Agent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	log := msg.Log
	if log == nil {
		log = slog.Default().With("queue_id", msg.QueueID)
	}
	results := make([]deliver.Result, len(rcpts))
	root, err := os.OpenRoot(a.opts.Root)
	if err != nil {
		log.Error("maildir: open mail root", "root", a.opts.Root, "err", err)
		return deliver.All(rcpts, result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "Maildir delivery failed: mail root unavailable"))
	}
	defer root.Close()

	// Each address once (the first of its recipients), up to
	// maxParallel of them at once: their fsyncs overlap, and the file
	// system commits them together, instead of two fsyncs one after the
	// other per recipient (bench/PROFILING.md, attempt 3).
	first := make(map[string]int, len(rcpts)) // address → index of its first result
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	for i, rc := range rcpts {
		if _, ok := first[rc.Address]; ok {
			continue
		}
		first[rc.Address] = i
		if err := ctx.Err(); err != nil {
			results[i] = result(deliver.Deferred, 451, envelope.Status{4, 4, 7}, "Maildir delivery interrupted")
			continue
		}
		if len(rcpts) == 1 {
			results[i] = a.deliverOne(ctx, root, msg, rc, log.With("to", rc.Address))
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = a.deliverOne(ctx, root, msg, rc, log.With("to", rc.Address))
		})
	}
	wg.Wait()
	for i, rc := range rcpts {
		if j := first[rc.Address]; j != i {
			results[i] = results[j]
		}
	}
	return results
}

// maxParallel is the most recipients of one delivery written at once.
const maxParallel = 8

func result(st deliver.Status, code int, es envelope.Status, text string) deliver.Result {
	return deliver.Result{Status: st, Reply: envelope.Reply{Code: code, Enhanced: es, Text: text}, Relay: Relay}
}

// deliverOne delivers to one recipient.
func (a *Agent) deliverOne(ctx context.Context, root *os.Root, msg *deliver.Message, rc deliver.Recipient, log *slog.Logger) deliver.Result {
	if rc.Mailbox == nil {
		// Postfix virtual(8): "User unknown in virtual mailbox table". The
		// queue hands a nil Mailbox only for a mailbox that no longer
		// exists; a lookup error must defer before reaching the agent.
		return result(deliver.Bounced, 550, envelope.Status{5, 1, 1}, "<"+rc.Address+">: User unknown in virtual mailbox table")
	}
	dir, err := cleanMaildir(rc.Mailbox.Maildir)
	if err != nil {
		log.Error("maildir: bad maildir path", "maildir", rc.Mailbox.Maildir, "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "Maildir delivery failed: mail system configuration error")
	}

	body, err := msg.Open()
	if err != nil {
		log.Error("maildir: open queued message", "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "Maildir delivery failed: cannot read queued message")
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 64<<10)
	hdr, err := mailfile.ReadHeader(br)
	if err != nil {
		log.Error("maildir: read queued message", "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "Maildir delivery failed: cannot read queued message")
	}
	if mailfile.DeliveredTo(hdr, rc.Address) {
		// Postfix local/virtual: a Delivered-To: with this recipient means
		// the message has been here before (RFC 3463 X.4.6 routing loop).
		return result(deliver.Bounced, 554, envelope.Status{5, 4, 6}, "<"+rc.Address+">: mail forwarding loop for "+rc.Address)
	}

	md, err := a.openMaildir(root, dir)
	if err != nil {
		return a.ioFailure(log, "open maildir", err)
	}
	defer md.Close()

	tmpName, f, err := a.createTmp(md)
	if err != nil {
		return a.ioFailure(log, "create file in tmp", err)
	}
	keep := false
	defer func() {
		if !keep {
			_ = md.Remove("tmp/" + tmpName)
		}
	}()

	size, vsize, err := a.write(f, msg.Sender, rc.Address, hdr, br)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return a.ioFailure(log, "write file in tmp", err)
	}

	lock := &a.locks[lockIndex(dir)]
	lock.Lock()
	newName, res, ok := a.commit(ctx, md, rc, tmpName, size, vsize, log)
	lock.Unlock()
	if !ok {
		return res
	}
	// The link is done: the tmp/ name goes whatever happens next, and new/
	// is fsynced so that the entry survives a crash before we say Delivered.
	keep = true
	if err := md.Remove("tmp/" + tmpName); err != nil {
		log.Warn("maildir: remove tmp name after link", "file", tmpName, "err", err)
	}
	if err := a.syncNew(md, dir); err != nil {
		_ = md.Remove("new/" + newName)
		return a.ioFailure(log, "fsync new", err)
	}
	log.Debug("maildir: delivered", "maildir", dir, "file", newName, "size", size)
	return result(deliver.Delivered, 250, envelope.Status{2, 0, 0}, "delivered to maildir")
}

// commit checks the quota and links the tmp/ file into new/, under the
// per-maildir lock. ok is false when res is the final result.
func (a *Agent) commit(ctx context.Context, md *os.Root, rc deliver.Recipient, tmpName string, size, vsize int64, log *slog.Logger) (newName string, res deliver.Result, ok bool) {
	var mds *maildirsize
	if q := rc.Mailbox.QuotaBytes; q != nil {
		var used int64
		if a.opts.QuotaSource != nil {
			b, _, found, err := a.opts.QuotaSource.Usage(ctx, rc.Address)
			if err != nil {
				log.Error("maildir: quota usage lookup", "err", err)
				return "", result(deliver.Deferred, 451, envelope.LookupFailed().Enhanced, "Temporary lookup failure: quota usage"), false
			}
			if found {
				used = b
			}
		} else {
			var err error
			mds, err = a.loadMaildirsize(md, *q, size)
			if err != nil {
				return "", a.ioFailure(log, "maildirsize", err), false
			}
			used = mds.bytes
		}
		if used+size > *q {
			log.Info("maildir: over quota", "used", used, "size", size, "quota", *q)
			return "", a.overQuota(rc.Address), false
		}
	}

	base := tmpName
	for try := 0; ; try++ {
		newName = fmt.Sprintf("%s,S=%d,W=%d", base, size, vsize)
		err := md.Link("tmp/"+tmpName, "new/"+newName)
		if err == nil {
			break
		}
		if errors.Is(err, fs.ErrNotExist) && try == 0 {
			// new/ was removed under us: recreate and retry once.
			if err := a.mkdirs(md); err != nil {
				return "", a.ioFailure(log, "create maildir", err), false
			}
			continue
		}
		if !errors.Is(err, fs.ErrExist) || try >= 10 {
			return "", a.ioFailure(log, "link into new", err), false
		}
		base = a.uniqueName(time.Now()) // a name clash: never replace, take another
	}
	if mds != nil {
		if err := mds.add(md, size, 1); err != nil {
			// The message is delivered; a stale maildirsize is recalculated
			// later (Maildir++: when it says "over quota" and is old).
			log.Warn("maildir: update maildirsize", "err", err)
		}
	}
	return newName, deliver.Result{}, true
}

func (a *Agent) overQuota(addr string) deliver.Result {
	text := "<" + addr + ">: Quota exceeded (mailbox for user is full)"
	if a.opts.QuotaTempfail {
		return result(deliver.Deferred, 452, envelope.Status{4, 2, 2}, text)
	}
	return result(deliver.Bounced, 552, envelope.Status{5, 2, 2}, text)
}

// ioFailure maps a file system error to a temporary result (DESIGN.md: a
// failure under the operator's control defers, never bounces) and logs its
// details, which the reply does not carry.
func (a *Agent) ioFailure(log *slog.Logger, what string, err error) deliver.Result {
	log.Error("maildir: "+what, "err", err)
	reason := err.Error()
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		reason = pe.Err.Error()
	case errors.As(err, &le):
		reason = le.Err.Error()
	}
	switch {
	case errors.Is(err, syscall.EDQUOT):
		return result(deliver.Deferred, 452, envelope.Status{4, 2, 2}, "Mailbox full: file system quota exceeded")
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EROFS),
		errors.Is(err, fs.ErrPermission):
		// Storage full or unwritable: 452 4.3.1 (DESIGN.md, Replies).
		st := envelope.StorageFull()
		return result(deliver.Deferred, st.Code, st.Enhanced, "Maildir delivery failed: "+reason)
	}
	return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "Maildir delivery failed: "+reason)
}

// cleanMaildir checks a maildir path relative to the mail root: not empty,
// not absolute, no ".." (DESIGN.md "Mail ownership"; the database CHECKs the
// same). It returns the path without a trailing slash.
func cleanMaildir(p string) (string, error) {
	if strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", errors.New("control character in maildir path")
	}
	c := strings.TrimRight(p, "/")
	if c == "" || path.IsAbs(p) || !filepath.IsLocal(c) {
		return "", fmt.Errorf("maildir path %q must be relative, below the mail root", p)
	}
	for _, part := range strings.Split(c, "/") {
		if part == ".." {
			return "", fmt.Errorf("maildir path %q contains ..", p)
		}
	}
	return path.Clean(c), nil
}

func lockIndex(dir string) int {
	h := fnv.New32a()
	h.Write([]byte(dir))
	return int(h.Sum32() % 64)
}

// openMaildir opens <root>/<dir> as a Root of its own, creating it and its
// tmp, new and cur subdirectories when tmp/ is missing.
func (a *Agent) openMaildir(root *os.Root, dir string) (*os.Root, error) {
	if fi, err := root.Stat(dir + "/tmp"); err == nil && fi.IsDir() {
		return root.OpenRoot(dir)
	}
	// Create each missing component below the mail root, owned by the mail
	// owner (Postfix make_dirs).
	cur := ""
	for _, part := range strings.Split(dir, "/") {
		if part == "" || part == "." {
			continue
		}
		cur = path.Join(cur, part)
		if err := a.mkdir(root, cur); err != nil {
			return nil, err
		}
	}
	md, err := root.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	if err := a.mkdirs(md); err != nil {
		md.Close()
		return nil, err
	}
	return md, nil
}

// mkdirs creates tmp, new and cur in the maildir.
func (a *Agent) mkdirs(md *os.Root) error {
	for _, d := range []string{"tmp", "new", "cur"} {
		if err := a.mkdir(md, d); err != nil {
			return err
		}
	}
	return nil
}

// mkdir creates name (mode 0700, owned by the mail owner) unless it exists,
// and fsyncs its parent so that the new entry is durable.
func (a *Agent) mkdir(r *os.Root, name string) error {
	err := r.Mkdir(name, 0o700)
	if errors.Is(err, fs.ErrExist) {
		fi, serr := r.Stat(name)
		if serr != nil {
			return serr
		}
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if err != nil {
		return err
	}
	if a.chown {
		if err := r.Lchown(name, a.opts.UID, a.opts.GID); err != nil {
			return err
		}
	}
	parent := path.Dir(name)
	return syncDir(r, parent)
}

// syncNew fsyncs new/ of the maildir md (dir below the root) so that every
// link made into it before the call is durable, sharing fsyncs with the
// concurrent deliveries to the same maildir (group sync, as the spool's
// store/spool/groupsync.go): one fsync for all the links made while the
// previous one ran, instead of one each.
func (a *Agent) syncNew(md *os.Root, dir string) error {
	a.syncMu.Lock()
	if a.syncs == nil {
		a.syncs = map[string]*dirSync{}
	}
	d := a.syncs[dir]
	if d == nil {
		d = &dirSync{}
		d.cond.L = &d.mu
		a.syncs[dir] = d
	}
	d.refs++
	a.syncMu.Unlock()
	err := d.sync(func() error { return syncDir(md, "new") })
	a.syncMu.Lock()
	if d.refs--; d.refs == 0 {
		delete(a.syncs, dir)
	}
	a.syncMu.Unlock()
	return err
}

// dirSync shares the fsyncs of one directory among concurrent callers. The
// guarantee: sync returns nil only after an fsync of the directory that
// started after sync was called has succeeded. At most one fsync runs at a
// time; a caller that arrives while number n runs needs n+1 or later, since
// n may have started before its link. Whoever finds none running starts the
// next one, with its own descriptor of the directory.
type dirSync struct {
	refs int // callers in syncNew (guarded by Agent.syncMu)

	mu        sync.Mutex
	cond      sync.Cond // broadcast when an fsync completes
	running   bool
	started   uint64 // number of the last fsync started
	completed uint64 // number of the last fsync completed
	lastOK    uint64 // number of the last fsync that succeeded
	lastErr   error  // error of the last fsync that failed
}

func (d *dirSync) sync(fsync func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	need := d.started + 1
	for d.completed < need {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		n := d.started
		d.mu.Unlock()
		err := fsync()
		d.mu.Lock()
		d.running = false
		d.completed = n
		if err == nil {
			d.lastOK = n
		} else {
			d.lastErr = err
		}
		d.cond.Broadcast()
	}
	// The fsyncs need..completed all started after the call; one success
	// among them is enough.
	if d.lastOK < need {
		return d.lastErr
	}
	return nil
}

func syncDir(r *os.Root, name string) error {
	d, err := r.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// uniqueName returns <sec>.M<usec>P<pid>Q<n>.<host> (the maildir
// specification's unique name, in Dovecot's form). Q<n> is a counter of this
// agent, so names differ even within one microsecond.
func (a *Agent) uniqueName(now time.Time) string {
	return fmt.Sprintf("%d.M%dP%dQ%d.%s", now.Unix(), now.Nanosecond()/1000, a.pid, a.seq.Add(1), a.host)
}

// createTmp creates tmp/<unique> with O_EXCL, owned by the mail owner.
func (a *Agent) createTmp(md *os.Root) (string, *os.File, error) {
	for try := 0; ; try++ {
		name := a.uniqueName(time.Now())
		f, err := md.OpenFile("tmp/"+name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) && try < 10 {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		if a.chown {
			if err := f.Chown(a.opts.UID, a.opts.GID); err != nil {
				f.Close()
				_ = md.Remove("tmp/" + name)
				return "", nil, err
			}
		}
		return name, f, nil
	}
}

// write writes the delivery headers, the header block and the rest of the
// message to f with LF line ends. size is the file's size, vsize its size
// with CRLF line ends (Dovecot's virtual size, W=).
func (a *Agent) write(f *os.File, sender, rcpt string, hdr []byte, rest io.Reader) (size, vsize int64, err error) {
	w := mailfile.NewLFWriter(bufio.NewWriterSize(f, 64<<10))
	// Return-Path: the envelope sender, <> for the null sender (RFC 5321
	// 4.4); Delivered-To: the final recipient, as Postfix writes it.
	fmt.Fprintf(w, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", sanitize(sender), sanitize(rcpt))
	w.Write(hdr)
	if _, err := io.Copy(w, rest); err != nil {
		return 0, 0, fmt.Errorf("copy message: %w", err)
	}
	if err := w.Close(); err != nil {
		return 0, 0, err
	}
	return w.Written(), w.Written() + w.Lines(), nil
}

// sanitize drops control characters from an envelope address placed in a
// header field, so that it cannot add a field.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// parseSize returns the S=<size> of a maildir file name, if any.
func parseSize(name string) (int64, bool) {
	i := strings.Index(name, ",S=")
	if i < 0 {
		return 0, false
	}
	s := name[i+3:]
	j := 0
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(s[:j], 10, 64)
	return n, err == nil
}
