package pipe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/mailfile"
	"github.com/facteur/facteur/mta/envelope"
)

// This file exports the child-process machinery of the pipe agent for the
// other agents that run programs with a message on their standard input (the
// local agent: commands from aliases and .forward files, and its own helper
// that writes mailboxes as their owner). It changes nothing in the pipe
// agent's own behaviour.

// Identity is who a child process runs as.
type Identity struct {
	// Credential is nil to run as this process's own user.
	Credential *syscall.Credential
	Name       string // user name, for USER and LOGNAME
	Home       string // home directory ("/" when the account has none)
}

// LookupUser finds a user by name or numeric id, as the pipe agent does for
// its user= attribute: root (uid or gid 0) is refused, and the identity has
// no supplementary groups.
func LookupUser(name string) (Identity, error) {
	r, err := lookupUser(name)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Credential: r.cred, Name: r.name, Home: r.home}, nil
}

// Command is one run of a program with a message on its standard input.
type Command struct {
	// Argv is the program (an absolute path) and its arguments; it is
	// executed directly, never through a shell.
	Argv []string
	// Env is the whole environment of the child.
	Env []string
	// Dir is the working directory ("/" when empty).
	Dir string
	// As is the identity; its Credential is applied in the child only (Go's
	// setuid would apply to every thread of this process).
	As Identity
	// Timeout bounds the run; at the limit the whole process group is
	// killed (DefaultTimeout when zero).
	Timeout time.Duration
	// MaxOutput is how much of the output Outcome.Output keeps
	// (DefaultMaxOutput when zero).
	MaxOutput int
	// Stdout, when set, receives the standard output instead of the
	// output buffer (which then holds only the standard error). It must not
	// block.
	Stdout io.Writer
	// Header is written to the standard input before Body, as it is.
	Header string
	// Body is copied to the standard input with its CRLF line ends turned
	// into LF; nil sends only Header.
	Body io.Reader
}

// Outcome is how a Command ended.
type Outcome struct {
	// StartErr is set when the program could not be started.
	StartErr error
	// TimedOut is true when the time limit killed it, Interrupted when ctx
	// was done first.
	TimedOut, Interrupted bool
	// Signal is the signal that ended it, if any.
	Signal syscall.Signal
	// ExitStatus is its exit status (when it exited).
	ExitStatus int
	// WaitErr is an I/O error waiting for it (its outcome is unknown).
	WaitErr error
	// CopyErr is an error reading Body (the program saw a truncated
	// message); a program that closes its input early is not one.
	CopyErr error
	// Output is the start of its output, on one line, cut to MaxOutput
	// bytes ("..." marks a cut).
	Output  string
	Elapsed time.Duration
}

// OK reports whether the program ran to its end, read what it wanted of the
// message, and exited with status 0.
func (o *Outcome) OK() bool {
	return o.StartErr == nil && !o.TimedOut && !o.Interrupted && o.Signal == 0 &&
		o.WaitErr == nil && o.CopyErr == nil && o.ExitStatus == 0
}

// Run runs c until it exits, the time limit or ctx. It never returns early
// while the child's process group may still run.
func (c *Command) Run(ctx context.Context) Outcome {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	maxOut := c.MaxOutput
	if maxOut <= 0 {
		maxOut = DefaultMaxOutput
	}
	dir := c.Dir
	if dir == "" {
		dir = "/"
	}
	if len(c.Argv) == 0 || !filepath.IsAbs(c.Argv[0]) {
		return Outcome{StartErr: fmt.Errorf("command %q is not an absolute path", strings.Join(c.Argv, " "))}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, c.Argv[0], c.Argv[1:]...)
	cmd.Dir = dir
	cmd.Env = c.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.As.Credential}
	// As in the agent: kill the whole process group at the limit, so that
	// a grandchild holding the output open cannot stall us.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out := &limitedBuffer{max: maxOut}
	cmd.Stdout, cmd.Stderr = out, out
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Outcome{StartErr: err}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Outcome{StartErr: err}
	}
	copied := make(chan error, 1)
	go func() {
		var err error
		w := bufio.NewWriterSize(stdin, 64<<10)
		if _, err = w.WriteString(c.Header); err == nil && c.Body != nil {
			lw := mailfile.NewLFWriter(w)
			_, err = io.Copy(lw, c.Body)
			if cerr := lw.Close(); err == nil {
				err = cerr
			}
		}
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		stdin.Close()
		copied <- err
	}()
	werr := cmd.Wait()
	copyErr := <-copied
	o := Outcome{Output: out.String(), Elapsed: time.Since(start)}
	switch {
	case cctx.Err() != nil && ctx.Err() == nil:
		o.TimedOut = true
		return o
	case ctx.Err() != nil:
		o.Interrupted = true
		return o
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		ws, _ := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			o.Signal = ws.Signal()
			return o
		}
		o.ExitStatus = ws.ExitStatus()
	} else if werr != nil {
		o.WaitErr = werr
	}
	if copyErr != nil && !errors.Is(copyErr, syscall.EPIPE) && !errors.Is(copyErr, os.ErrClosed) {
		o.CopyErr = copyErr
	}
	return o
}

// Result maps the outcome as the pipe agent does (see the package comment):
// 0 is Delivered; an exit status through Postfix's sys_exits table; a
// signal, the time limit, a failed start, an I/O error or a truncated
// message defer. name names the command in the reply text; relay goes into
// Result.Relay.
func (o *Outcome) Result(name, relay string) deliver.Result {
	r := o.result(name)
	r.Relay = relay
	return r
}

func (o *Outcome) result(name string) deliver.Result {
	switch {
	case o.StartErr != nil:
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "cannot execute command "+name)
	case o.TimedOut:
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, fmt.Sprintf("command %s time limit exceeded", name))
	case o.Interrupted:
		return result(deliver.Deferred, 451, envelope.Status{4, 4, 7}, "delivery interrupted")
	case o.Signal != 0:
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, fmt.Sprintf("command %s died with signal %d", name, int(o.Signal)))
	case o.ExitStatus != 0:
		return exitResult(o.ExitStatus, name, o.Output)
	case o.WaitErr != nil:
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "command "+name+" failed: "+o.WaitErr.Error())
	case o.CopyErr != nil:
		return result(deliver.Deferred, 451, envelope.Status{4, 3, 0}, "cannot read queued message")
	}
	return result(deliver.Delivered, 250, envelope.Status{2, 0, 0}, "delivered via "+name)
}

// ExitResult maps a command's exit status with Postfix's sys_exits table, as
// the pipe agent does; output is the start of the command's output.
func ExitResult(code int, name, output string) deliver.Result {
	return exitResult(code, name, output)
}

// SanitizeHeaderValue drops control characters from a value placed in a
// header field.
func SanitizeHeaderValue(s string) string { return sanitize(s) }
