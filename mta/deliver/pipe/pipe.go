// Package pipe is facteur's pipe(8): it delivers a message by running a
// command with the message on its standard input, one invocation per
// recipient, and maps the command's exit status to a result with Postfix's
// sys_exits table.
//
// # Next hop syntax
//
// The next hop (the transport after "pipe:") is a command template, master.cf
// style: optional attributes, then the command and its arguments, separated
// by spaces or tabs:
//
//	pipe:flags=DRO user=filter argv=/usr/local/bin/filter -f ${sender} -- ${recipient}
//	pipe:/usr/bin/procmail -a ${extension} -d ${user}
//
// Attributes (before the command):
//
//	flags=...   D prepends "Delivered-To: <recipient>", R "Return-Path:
//	            <sender>", O "X-Original-To: <original recipient>".
//	user=NAME   the user (name or numeric uid) to run as; never root. The
//	            default is Options.User.
//	argv=CMD    marks the start of the command; optional when no attribute
//	            precedes it.
//
// The command is an absolute path; it is executed directly, never through a
// shell, so no quoting applies and an argument cannot contain spaces
// (a macro's value, whatever it holds, stays one argument).
//
// Macros, expanded anywhere inside an argument: ${sender} (the envelope
// sender; Options.NullSender, "MAILER-DAEMON" by default, for <>),
// ${recipient}, ${original_recipient}, ${domain} (the recipient's), ${user}
// (its local part without extension), ${extension} (what follows
// Options.RecipientDelimiter), ${mailbox} (the whole local part),
// ${queue_id} and ${size}. Any other ${...} is a configuration error.
//
// An argument whose expansion begins with "-" because a macro's value does
// (a sender "-oQ/tmp/x" in "${sender}") could be taken for an option, so it
// is refused, and the recipient bounced with 554 5.3.0, unless an argument
// "--" comes earlier in the template (the end of options) or the argument
// itself begins with "-" in the template ("-f${sender}", where the value is
// the option's argument).
//
// # Delivery
//
// The message goes to the command's standard input with LF line ends (and
// the headers that flags asks for). The command runs in its own process
// group with a time limit (Options.Timeout): at the limit the whole group is
// killed and the recipient deferred. Exit status 0 is Delivered; other
// statuses follow Postfix's sys_exits table (64 EX_USAGE 5.3.0, 65
// EX_DATAERR 5.6.0, 66 EX_NOINPUT 5.3.0, 67 EX_NOUSER 5.1.1, 68 EX_NOHOST
// 5.1.2, 69 EX_UNAVAILABLE 5.3.0, 70 EX_SOFTWARE 5.3.0, 71 EX_OSERR 4.3.0,
// 72 EX_OSFILE 5.3.0, 73 EX_CANTCREAT 5.2.0, 74 EX_IOERR 5.3.0, 75
// EX_TEMPFAIL 4.3.0, 76 EX_PROTOCOL 5.5.0, 77 EX_NOPERM 5.7.0, 78 EX_CONFIG
// 5.3.5): 71 and 75 defer, the others bounce; any other status bounces with
// 5.3.0. The reply carries the start of the command's output (stdout and
// stderr), cut to MaxOutput bytes. Death by a signal, the time limit and a
// command that cannot be started defer.
//
// SECURITY: this agent exposes nothing to the network, but the values it
// puts in argv and on stdin come from untrusted senders. No shell ever sees
// them (exec of an absolute path), option injection through a leading "-"
// is refused as above, and the child runs with the credentials of an
// unprivileged user, never root (DESIGN.md: set in the child process, since
// setuid in Go applies to every thread of this one), with no supplementary
// groups, a minimal environment and "/" as its working directory. When
// facteur does not run as root, commands run as facteur's own user.
package pipe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/mailfile"
	"github.com/facteur/facteur/mta/envelope"
)

// Defaults of Options.
const (
	DefaultTimeout    = 10 * time.Minute
	DefaultUser       = "nobody"
	DefaultNullSender = "MAILER-DAEMON"
	DefaultMaxOutput  = 400
)

// Options configure an Agent. Zero values take the defaults.
type Options struct {
	// User runs commands whose template has no user= attribute, when
	// facteur runs as root; "" is "nobody". Root is refused.
	User string
	// Timeout bounds each invocation; it must be shorter than the queue's
	// lease.
	Timeout time.Duration
	// RecipientDelimiter separates ${user} from ${extension} (each of its
	// characters is a delimiter, as Postfix's recipient_delimiter); ""
	// means no extensions.
	RecipientDelimiter string
	// NullSender is what ${sender} expands to for the null sender.
	NullSender string
	// MaxOutput is how much of a failed command's output goes into the
	// reply.
	MaxOutput int
}

// Agent runs pipe transports. It is safe for concurrent use.
type Agent struct {
	opts Options
	root bool
}

// New returns an Agent, or an error when the default user is unusable.
func New(opts Options) (*Agent, error) {
	if opts.User == "" {
		opts.User = DefaultUser
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.NullSender == "" {
		opts.NullSender = DefaultNullSender
	}
	if opts.MaxOutput <= 0 {
		opts.MaxOutput = DefaultMaxOutput
	}
	a := &Agent{opts: opts, root: os.Geteuid() == 0}
	if a.root {
		if _, err := lookupUser(opts.User); err != nil {
			return nil, fmt.Errorf("pipe: default user: %w", err)
		}
	}
	return a, nil
}

// Relay is what Result.Relay says for this agent.
const Relay = "pipe"

// Template is a parsed next hop.
type Template struct {
	Flags string   // of D, R, O
	User  string   // "" is the agent's default
	Argv  []string // Argv[0] is an absolute path; arguments may hold macros
}

// ParseTemplate parses a pipe next hop (see the package comment).
func ParseTemplate(nexthop string) (*Template, error) {
	f := strings.Fields(nexthop)
	t := &Template{}
	i := 0
attrs:
	for ; i < len(f); i++ {
		k, v, ok := strings.Cut(f[i], "=")
		if !ok || strings.HasPrefix(f[i], "/") {
			break
		}
		switch k {
		case "flags":
			for _, c := range v {
				if !strings.ContainsRune("DRO", c) {
					return nil, fmt.Errorf("pipe template: unknown flag %q", c)
				}
			}
			t.Flags = v
		case "user":
			if v == "" {
				return nil, errors.New("pipe template: empty user=")
			}
			t.User = v
		case "argv":
			f[i] = v
			break attrs
		default:
			return nil, fmt.Errorf("pipe template: unknown attribute %q", k)
		}
	}
	t.Argv = f[i:]
	if len(t.Argv) == 0 || t.Argv[0] == "" {
		return nil, errors.New("pipe template: no command")
	}
	if !filepath.IsAbs(t.Argv[0]) || strings.Contains(t.Argv[0], "$") {
		return nil, fmt.Errorf("pipe template: command %q must be an absolute path", t.Argv[0])
	}
	for _, a := range t.Argv[1:] {
		if _, _, err := expand(a, func(string) (string, bool) { return "", true }); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// macroNames lists the macros.
var macroNames = map[string]bool{
	"sender": true, "recipient": true, "original_recipient": true, "domain": true,
	"user": true, "extension": true, "mailbox": true, "queue_id": true, "size": true,
}

// expand replaces ${name} in s. It reports whether the result begins with a
// macro's value rather than with the template's own text.
func expand(s string, value func(string) (string, bool)) (out string, fromMacro bool, err error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), fromMacro, nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", false, fmt.Errorf("pipe template: unterminated macro in %q", s)
		}
		name := s[i+2 : i+j]
		if !macroNames[name] {
			return "", false, fmt.Errorf("pipe template: unknown macro ${%s}", name)
		}
		v, _ := value(name)
		b.WriteString(s[:i])
		if b.Len() == 0 && v != "" {
			fromMacro = true // the first byte of the result is the value's
		}
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// Deliver runs the command of the template nexthop once per distinct
// recipient; see the package comment.
func (a *Agent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	log := msg.Log
	if log == nil {
		log = slog.Default().With("queue_id", msg.QueueID)
	}
	tmpl, err := ParseTemplate(nexthop)
	if err != nil {
		log.Error("pipe: bad transport", "nexthop", nexthop, "err", err)
		return deliver.All(rcpts, configError("bad pipe transport"))
	}
	cred, err := a.credential(tmpl)
	if err != nil {
		log.Error("pipe: user", "nexthop", nexthop, "err", err)
		return deliver.All(rcpts, configError("bad pipe transport user"))
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
			results[i] = result(deliver.Deferred, 451, envelope.Status{4, 4, 7}, "pipe delivery interrupted")
			continue
		}
		results[i] = a.run(ctx, tmpl, cred, msg, rc, log.With("to", rc.Address))
	}
	return results
}

func result(st deliver.Status, code int, es envelope.Status, text string) deliver.Result {
	return deliver.Result{Status: st, Reply: envelope.Reply{Code: code, Enhanced: es, Text: text}, Relay: Relay}
}

// configError is a temporary failure the operator must fix (RFC 3463 X.3.5,
// system incorrectly configured).
func configError(text string) deliver.Result {
	return result(deliver.Deferred, 451, envelope.Status{4, 3, 5}, "Mail system configuration error: "+text)
}

// runAs is the identity of a child process.
type runAs struct {
	cred *syscall.Credential // nil: as ourselves
	home string
	name string
}

// credential resolves the user to run tmpl as. Without root, it is
// ourselves whatever is configured.
func (a *Agent) credential(tmpl *Template) (runAs, error) {
	if !a.root {
		r := runAs{home: "/", name: strconv.Itoa(os.Geteuid())}
		if u, err := user.Current(); err == nil {
			r.name = u.Username
			if u.HomeDir != "" {
				r.home = u.HomeDir
			}
		}
		return r, nil
	}
	name := tmpl.User
	if name == "" {
		name = a.opts.User
	}
	return lookupUser(name)
}

// lookupUser finds a user by name or numeric id and refuses root.
func lookupUser(name string) (runAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return runAs{}, fmt.Errorf("user %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return runAs{}, fmt.Errorf("user %q: non-numeric ids", name)
	}
	if uid == 0 || gid == 0 {
		// DESIGN.md: commands never run as root.
		return runAs{}, fmt.Errorf("user %q is root (uid %d, gid %d): refused", name, uid, gid)
	}
	home := u.HomeDir
	if home == "" {
		home = "/"
	}
	return runAs{
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
		home: home, name: u.Username,
	}, nil
}

// values returns the macro values for one recipient.
func (a *Agent) values(msg *deliver.Message, rc deliver.Recipient) map[string]string {
	sender := msg.Sender
	if sender == "" {
		sender = a.opts.NullSender
	}
	local, domain := rc.Address, ""
	if i := strings.LastIndexByte(rc.Address, '@'); i >= 0 {
		local, domain = rc.Address[:i], rc.Address[i+1:]
	}
	usr, ext := local, ""
	if d := a.opts.RecipientDelimiter; d != "" {
		if i := strings.IndexAny(local, d); i > 0 {
			usr, ext = local[:i], local[i+1:]
		}
	}
	orig := rc.Orig
	if orig == "" {
		orig = rc.Address
	}
	return map[string]string{
		"sender": sender, "recipient": rc.Address, "original_recipient": orig,
		"domain": domain, "user": usr, "extension": ext, "mailbox": local,
		"queue_id": msg.QueueID, "size": strconv.FormatInt(msg.Size, 10),
	}
}

// argv expands the template for one recipient. A value that would start an
// argument with "-" is refused unless "--" came before (see the package
// comment); the refusal is permanent.
func argv(tmpl *Template, vals map[string]string) ([]string, *deliver.Result, error) {
	out := []string{tmpl.Argv[0]}
	endOfOptions := false
	for _, arg := range tmpl.Argv[1:] {
		v, fromMacro, err := expand(arg, func(n string) (string, bool) { s, ok := vals[n]; return s, ok })
		if err != nil {
			return nil, nil, err
		}
		if fromMacro && strings.HasPrefix(v, "-") && !endOfOptions {
			r := result(deliver.Bounced, 554, envelope.Status{5, 3, 0},
				fmt.Sprintf("unsafe argument for %s: %q would start with \"-\"", filepath.Base(tmpl.Argv[0]), arg))
			return nil, &r, nil
		}
		if strings.ContainsRune(v, 0) {
			r := result(deliver.Bounced, 554, envelope.Status{5, 3, 0}, "unsafe argument: NUL byte")
			return nil, &r, nil
		}
		if arg == "--" {
			endOfOptions = true
		}
		out = append(out, v)
	}
	return out, nil, nil
}

// sys_exits, as Postfix's global/sys_exits.c maps them.
var sysExits = map[int]struct {
	status envelope.Status
	text   string
}{
	64: {envelope.Status{5, 3, 0}, "command line usage error"},
	65: {envelope.Status{5, 6, 0}, "data format error"},
	66: {envelope.Status{5, 3, 0}, "cannot open input"},
	67: {envelope.Status{5, 1, 1}, "user unknown"},
	68: {envelope.Status{5, 1, 2}, "host name unknown"},
	69: {envelope.Status{5, 3, 0}, "service unavailable"},
	70: {envelope.Status{5, 3, 0}, "internal software error"},
	71: {envelope.Status{4, 3, 0}, "system resource problem"},
	72: {envelope.Status{5, 3, 0}, "critical OS file missing"},
	73: {envelope.Status{5, 2, 0}, "can't create user output file"},
	74: {envelope.Status{5, 3, 0}, "input/output error"},
	75: {envelope.Status{4, 3, 0}, "temporary failure"},
	76: {envelope.Status{5, 5, 0}, "remote error in protocol"},
	77: {envelope.Status{5, 7, 0}, "permission denied"},
	78: {envelope.Status{5, 3, 5}, "local configuration error"},
}

// exitResult maps an exit status (Postfix pipe(8) with sys_exits).
func exitResult(code int, cmd, output string) deliver.Result {
	e, ok := sysExits[code]
	if !ok {
		e.status, e.text = envelope.Status{5, 3, 0}, fmt.Sprintf("unknown mail system error %d", code)
	}
	text := fmt.Sprintf("command %s died with status %d (%s)", cmd, code, e.text)
	if output != "" {
		text += ". Command output: " + output
	}
	if e.status[0] == 4 {
		return result(deliver.Deferred, 451, e.status, text)
	}
	return result(deliver.Bounced, 550, e.status, text)
}

// run runs the command for one recipient.
func (a *Agent) run(ctx context.Context, tmpl *Template, as runAs, msg *deliver.Message, rc deliver.Recipient, log *slog.Logger) deliver.Result {
	args, refused, err := argv(tmpl, a.values(msg, rc))
	if err != nil {
		log.Error("pipe: expand template", "err", err)
		return configError("bad pipe transport")
	}
	if refused != nil {
		log.Warn("pipe: refused", "reply", refused.Reply.String())
		return *refused
	}
	body, err := msg.Open()
	if err != nil {
		log.Error("pipe: open queued message", "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "cannot read queued message")
	}
	defer body.Close()

	cctx, cancel := context.WithTimeout(ctx, a.opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, args[0], args[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + as.home, "USER=" + as.name, "LOGNAME=" + as.name, "LANG=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: as.cred}
	// On the time limit, kill the whole process group, so that a
	// grandchild holding the output pipe open cannot stall us.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out := &limitedBuffer{max: a.opts.MaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		log.Error("pipe: stdin", "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "cannot run command")
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		log.Error("pipe: start command", "cmd", args[0], "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "cannot execute command "+filepath.Base(args[0]))
	}
	copied := make(chan error, 1)
	go func() {
		w := mailfile.NewLFWriter(bufio.NewWriterSize(stdin, 64<<10))
		if strings.Contains(tmpl.Flags, "R") {
			sender := msg.Sender
			fmt.Fprintf(w, "Return-Path: <%s>\n", sanitize(sender))
		}
		if strings.Contains(tmpl.Flags, "D") {
			fmt.Fprintf(w, "Delivered-To: %s\n", sanitize(rc.Address))
		}
		if strings.Contains(tmpl.Flags, "O") {
			orig := rc.Orig
			if orig == "" {
				orig = rc.Address
			}
			fmt.Fprintf(w, "X-Original-To: %s\n", sanitize(orig))
		}
		_, err := io.Copy(w, body)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		stdin.Close()
		copied <- err
	}()
	err = cmd.Wait()
	copyErr := <-copied
	elapsed := time.Since(start)
	output := out.String()
	base := filepath.Base(args[0])

	switch {
	case cctx.Err() != nil && ctx.Err() == nil:
		log.Warn("pipe: time limit", "cmd", args[0], "limit", a.opts.Timeout)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, fmt.Sprintf("command %s time limit exceeded", base))
	case ctx.Err() != nil:
		return result(deliver.Deferred, 451, envelope.Status{4, 4, 7}, "pipe delivery interrupted")
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws, _ := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			log.Warn("pipe: command killed", "cmd", args[0], "signal", ws.Signal().String())
			return result(deliver.Deferred, 451, envelope.Status{4, 3, 0},
				fmt.Sprintf("command %s died with signal %d", base, int(ws.Signal())))
		}
		r := exitResult(ws.ExitStatus(), base, output)
		log.Info("pipe: command failed", "cmd", args[0], "status", ws.ExitStatus(), "reply", r.Reply.String())
		return r
	}
	if err != nil {
		// I/O with the child (WaitDelay exceeded): the outcome is unknown.
		log.Error("pipe: wait", "cmd", args[0], "err", err)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "command "+base+" failed: "+err.Error())
	}
	if copyErr != nil && !errors.Is(copyErr, syscall.EPIPE) && !errors.Is(copyErr, os.ErrClosed) {
		// Reading the queued message failed: the command saw a truncated
		// message, so try again.
		log.Error("pipe: copy message", "err", copyErr)
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "cannot read queued message")
	}
	log.Debug("pipe: delivered", "cmd", args[0], "user", as.name, "elapsed", elapsed)
	return result(deliver.Delivered, 250, envelope.Status{2, 0, 0}, "delivered via "+base)
}

// sanitize drops control characters from a value placed in a header field.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// limitedBuffer keeps the first max bytes written to it, on one line, and
// accepts (and drops) the rest so that the command is never blocked.
type limitedBuffer struct {
	max int
	buf bytes.Buffer
	cut bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
			b.cut = true
		} else {
			b.buf.Write(p)
		}
	} else if len(p) > 0 {
		b.cut = true
	}
	return len(p), nil
}

// String returns the output on one line, with "..." when cut.
func (b *limitedBuffer) String() string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(b.buf.String(), "?")), " ")
	if b.cut {
		s += "..."
	}
	return s
}
