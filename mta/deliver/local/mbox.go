package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// mboxOptions configure one append to an mbox file.
type mboxOptions struct {
	locks    []string
	attempts int
	delay    time.Duration
	stale    time.Duration
	// owner is the uid an existing file must have (-1: any).
	owner int64
	// dotlockMayFail: a dot-lock that cannot be created (the directory is
	// not writable) is skipped, as Postfix does for file destinations.
	dotlockMayFail bool
	now            func() time.Time
}

// errLockBusy means a lock stayed held for every attempt.
var errLockBusy = errors.New("mailbox is locked by another process")

// appendMbox appends the message read from r to the mbox file path, with a
// From_ line naming sender; see the package comment. It returns the reply
// for the parent.
func appendMbox(path string, o mboxOptions, sender string, r io.Reader) helperReply {
	if o.now == nil {
		o.now = time.Now
	}
	if slices.Contains(o.locks, LockDot) {
		unlock, err := dotlock(path, o)
		switch {
		case err == nil:
			defer unlock()
		case o.dotlockMayFail && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)):
			// No dot-lock in a directory we cannot write: the kernel
			// locks still apply.
		default:
			return mboxFailure(path, "cannot create lock file "+path+".lock", err)
		}
	}
	f, err := openMailbox(path, o.owner)
	if err != nil {
		return mboxFailure(path, "cannot open "+path, err)
	}
	defer f.Close()
	if err := kernelLocks(f, o); err != nil {
		return mboxFailure(path, "cannot lock "+path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return mboxFailure(path, "cannot stat "+path, err)
	}
	orig := fi.Size()
	w := bufio.NewWriterSize(f, 64<<10)
	_, err = w.WriteString("From " + fromSender(sender) + " " + o.now().Format(fromDate) + "\n")
	if err == nil {
		err = copyQuoted(w, r)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		// Leave the mailbox as it was: a partial message would corrupt the
		// next one's From_ line.
		if terr := f.Truncate(orig); terr == nil {
			_ = f.Sync()
		}
		var re *msgReadError
		if errors.As(err, &re) {
			return helperReply{Status: deliver.Deferred.String(), Code: 451, Enhanced: envelope.Status{4, 3, 0},
				Text: "cannot read queued message"}
		}
		return mboxFailure(path, "error writing message to "+path, err)
	}
	return helperReply{Status: deliver.Delivered.String(), Code: 250, Enhanced: envelope.Status{2, 0, 0},
		Text: "delivered to " + path}
}

// mboxFailure maps an error to a reply. Everything defers (DESIGN.md: a
// failure under the operator's control never bounces) except a file that
// grew past the system's limit.
func mboxFailure(path, what string, err error) helperReply {
	reason := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		reason = pe.Err.Error()
	}
	text := what + ": " + reason
	switch {
	case errors.Is(err, syscall.EFBIG):
		return helperReply{Status: deliver.Bounced.String(), Code: 552, Enhanced: envelope.Status{5, 2, 2}, Text: text}
	case errors.Is(err, syscall.EDQUOT):
		return helperReply{Status: deliver.Deferred.String(), Code: 452, Enhanced: envelope.Status{4, 2, 2}, Text: text}
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EROFS):
		st := envelope.StorageFull()
		return helperReply{Status: deliver.Deferred.String(), Code: st.Code, Enhanced: st.Enhanced, Text: text}
	case errors.Is(err, errLockBusy):
		return helperReply{Status: deliver.Deferred.String(), Code: 451, Enhanced: envelope.Status{4, 2, 0}, Text: text}
	}
	return helperReply{Status: deliver.Deferred.String(), Code: 451, Enhanced: envelope.Status{4, 2, 0}, Text: text}
}

// dotlock creates path.lock with O_EXCL, removing a lock older than
// o.stale, and returns its removal.
func dotlock(path string, o mboxOptions) (func(), error) {
	lock := path + ".lock"
	for try := 0; try < o.attempts; try++ {
		f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err == nil {
			_, werr := f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				_ = os.Remove(lock)
				return nil, werr
			}
			return func() { _ = os.Remove(lock) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if fi, serr := os.Lstat(lock); serr == nil && o.now().Sub(fi.ModTime()) > o.stale {
			// A stale lock: its holder died (Postfix stale_lock_time).
			if rerr := os.Remove(lock); rerr == nil || errors.Is(rerr, fs.ErrNotExist) {
				continue
			}
		}
		if try+1 < o.attempts {
			time.Sleep(o.delay)
		}
	}
	return nil, errLockBusy
}

// openMailbox opens path for appending, creating it (mode 0600) when it is
// missing. The file must be a regular file, not a symbolic link, with one
// link (a hard link could make us write into another file), owned by owner
// unless owner is -1 or we have just created it (the helper runs as the
// owner).
func openMailbox(path string, owner int64) (*os.File, error) {
	const flags = os.O_WRONLY | os.O_APPEND | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	for try := 0; ; try++ {
		created := false
		f, err := os.OpenFile(path, flags, 0)
		if errors.Is(err, fs.ErrNotExist) {
			f, err = os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) && try < 3 {
				continue // created meanwhile by someone else
			}
			created = err == nil
		}
		if err != nil {
			if errors.Is(err, syscall.ELOOP) {
				return nil, fmt.Errorf("%s is a symbolic link: refused", path)
			}
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.Mode().IsRegular():
			err = fmt.Errorf("%s is not a regular file", path)
		case st.Nlink != 1:
			err = fmt.Errorf("%s has %d links: refused", path, st.Nlink)
		case owner >= 0 && int64(st.Uid) != owner && !created:
			err = fmt.Errorf("%s is owned by uid %d, not %d", path, st.Uid, owner)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
}

// kernelLocks takes the fcntl(2) and flock(2) locks that o asks for on f,
// without blocking, trying o.attempts times.
func kernelLocks(f *os.File, o mboxOptions) error {
	fd := int(f.Fd())
	if slices.Contains(o.locks, LockFcntl) {
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
		if err := retryLock(o, func() error { return syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk) }); err != nil {
			return fmt.Errorf("fcntl: %w", err)
		}
	}
	if slices.Contains(o.locks, LockFlock) {
		if err := retryLock(o, func() error { return syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) }); err != nil {
			return fmt.Errorf("flock: %w", err)
		}
	}
	return nil
}

func retryLock(o mboxOptions, lock func() error) error {
	for try := 0; try < o.attempts; try++ {
		err := lock()
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EINTR) {
			return err
		}
		if try+1 < o.attempts {
			time.Sleep(o.delay)
		}
	}
	return errLockBusy
}

// msgReadError marks a failure to read the message (not to write the file).
type msgReadError struct{ err error }

func (e *msgReadError) Error() string { return "read message: " + e.err.Error() }
func (e *msgReadError) Unwrap() error { return e.err }

var fromPrefix = []byte("From ")

// copyQuoted copies the message from r to w in mbox form: LF line ends
// (a CR before LF is dropped), ">From " for lines that begin with "From "
// (mboxo, as Postfix), a final line end, and the empty line that ends a
// message.
func copyQuoted(w *bufio.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bol := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if bol && bytes.HasPrefix(chunk, fromPrefix) {
				if werr := w.WriteByte('>'); werr != nil {
					return werr
				}
			}
			bol = chunk[len(chunk)-1] == '\n'
			if bol && len(chunk) >= 2 && chunk[len(chunk)-2] == '\r' {
				chunk = append(chunk[:len(chunk)-2], '\n')
			}
			if _, werr := w.Write(chunk); werr != nil {
				return werr
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &msgReadError{err}
		}
	}
	if !bol {
		if err := w.WriteByte('\n'); err != nil {
			return err
		}
	}
	return w.WriteByte('\n')
}
