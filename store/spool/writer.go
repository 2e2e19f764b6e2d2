package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}

// Writer writes one body into a temp file. It is buffered (64 KiB). End it
// with Commit or Abort; a deferred Abort is the usual way to clean up after
// errors, since Abort does nothing once Commit has succeeded. A Writer is not
// safe for concurrent use.
type Writer struct {
	s    *Spool
	key  string
	tmp  string // temp file path, "" once renamed or removed
	f    *os.File
	bw   *bufio.Writer
	size int64

	err       error // sticky: the first error; the temp file is already gone
	done      bool  // committed or aborted
	committed bool
}

func newWriter(s *Spool, key, tmp string, f *os.File) *Writer {
	w := &Writer{s: s, key: key, tmp: tmp, f: f}
	w.bw = bufPool.Get().(*bufio.Writer)
	if s.opts.Hooks.Before != nil {
		w.bw.Reset(hookedFile{w})
	} else {
		w.bw.Reset(f)
	}
	return w
}

// hookedFile calls the StepWrite hook before each write to the file.
type hookedFile struct{ w *Writer }

func (h hookedFile) Write(p []byte) (int, error) {
	if err := h.w.s.opts.Hooks.Before(StepWrite, h.w.key); err != nil {
		return 0, err
	}
	return h.w.f.Write(p)
}

// Key returns the key being written.
func (w *Writer) Key() string { return w.key }

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Write writes p to the body. After an error the temp file is removed and
// every later call, and Commit, returns the same error.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n, err := w.bw.Write(p)
	w.size += int64(n)
	if err != nil {
		return n, w.fail("write", err)
	}
	return n, nil
}

// WriteString is Write for a string, without a copy.
func (w *Writer) WriteString(str string) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n, err := w.bw.WriteString(str)
	w.size += int64(n)
	if err != nil {
		return n, w.fail("write", err)
	}
	return n, nil
}

var _ io.StringWriter = (*Writer)(nil)

// Contents flushes what was written so far and returns a reader of it, for
// a content filter that reads the body before it is committed (cleanup's
// Message.Filter). The reader reads the temp file with pread, so writing may
// go on; it is valid until Commit or Abort.
func (w *Writer) Contents() (*io.SectionReader, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	if err := w.bw.Flush(); err != nil {
		return nil, w.fail("write", err)
	}
	return io.NewSectionReader(w.f, 0, w.size), nil
}

func (w *Writer) usable() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return ErrWriterDone
	}
	return nil
}

// Commit makes the body durable under its key: it flushes the buffer, fsyncs
// the file, moves it into place without ever replacing a committed body, and
// fsyncs the directory. When it returns nil the body survives a crash. When it
// returns an error nothing is left on disk, neither the temp file nor the
// committed file; errors.Is(err, ErrExists) if the key was already committed
// (the first body is kept) and errors.Is(err, ErrNoSpace) if the disk is full.
func (w *Writer) Commit() error {
	if err := w.usable(); err != nil {
		return err
	}
	hook := w.s.opts.Hooks.Before
	if err := w.bw.Flush(); err != nil {
		return w.fail("write", err)
	}
	w.releaseBuf()
	if hook != nil {
		if err := hook(StepSyncFile, w.key); err != nil {
			return w.fail("sync file", err)
		}
	}
	if err := syncFile(w.f); err != nil {
		return w.fail("sync file", err)
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return w.fail("close", err)
	}

	final := w.s.path(w.key)
	if hook != nil {
		if err := hook(StepLink, w.key); err != nil {
			return w.fail("link", err)
		}
	}
	if err := w.s.moveIntoPlace(w.tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%w: %w", ErrExists, err)
		}
		return w.fail("link", err)
	}
	w.tmp = "" // renamed, or linked and the temp name unlinked

	if hook != nil {
		if err := hook(StepSyncDir, w.key); err != nil {
			return w.failCommitted(final, err)
		}
	}
	b := &w.s.buckets[bucketOf(w.key)]
	if w.s.opts.NoGroupSync {
		err = b.sync.do()
	} else {
		err = b.sync.sync()
	}
	if err != nil {
		return w.failCommitted(final, err)
	}
	w.done, w.committed = true, true
	return nil
}

// failCommitted undoes a move into place whose directory fsync failed: the
// caller is told the body is not stored, so it must not stay. (If the removal
// itself is lost in a crash, the reconciler removes the unreferenced body.)
func (w *Writer) failCommitted(final string, err error) error {
	_ = os.Remove(final)
	return w.fail("sync dir", err)
}

// fail records the first error, removes the temp file and returns the error.
func (w *Writer) fail(step string, err error) error {
	w.err = fmt.Errorf("spool: commit %s: %s: %w", w.key, step, mapNoSpace(err))
	w.cleanup()
	w.done = true
	return w.err
}

// Abort discards the body: it closes and removes the temp file. It does
// nothing after a successful Commit, and may be called any number of times.
func (w *Writer) Abort() error {
	if w.committed {
		return nil
	}
	err := w.cleanup()
	w.done = true
	if w.err == nil {
		w.err = ErrWriterDone
	}
	return err
}

func (w *Writer) cleanup() error {
	w.releaseBuf()
	var err error
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	if w.tmp != "" {
		if rerr := os.Remove(w.tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("spool: abort %s: %w", w.key, rerr)
		}
		w.tmp = ""
	}
	return err
}

func (w *Writer) releaseBuf() {
	if w.bw != nil {
		w.bw.Reset(nil)
		bufPool.Put(w.bw)
		w.bw = nil
	}
}

// moveIntoPlace renames tmp to final, failing with an error that matches
// fs.ErrExist if final exists. It uses renameat2(RENAME_NOREPLACE) and falls
// back, for good, to link(2) and unlink(2) on file systems without it.
func (s *Spool) moveIntoPlace(tmp, final string) error {
	if !s.useLink.Load() {
		err := renameNoReplace(tmp, final)
		if !errors.Is(err, errNoRenameNoReplace) {
			return err
		}
		s.useLink.Store(true)
	}
	if err := os.Link(tmp, final); err != nil {
		return err
	}
	// The body is in place. A temp name left behind (unlink failed, or a
	// crash now) is a second link to the same file that SweepIncoming
	// removes later.
	_ = os.Remove(tmp)
	return nil
}
