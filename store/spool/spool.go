package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Sentinel errors. Errors returned by the spool wrap them, so test with
// errors.Is.
var (
	// ErrNoSpace means the spool's file system is short of space: free space
	// is below Options.MinFree when Create is called, or a write or fsync
	// failed with ENOSPC or EDQUOT. The SMTP layer answers 452 4.3.1.
	ErrNoSpace = errors.New("spool: not enough free space")

	// ErrExists means a body with the same key is already committed; the
	// existing body is kept.
	ErrExists = errors.New("spool: key already committed")

	// ErrInvalidKey means a key is not 8 to 32 ASCII letters and digits.
	ErrInvalidKey = errors.New("spool: invalid key")

	// ErrWriterDone means a Writer was used after Commit or Abort.
	ErrWriterDone = errors.New("spool: writer already committed or aborted")
)

// Key length bounds, in bytes.
const (
	MinKeyLen = 8
	MaxKeyLen = 32
)

const (
	incomingDir = "incoming"
	queueDir    = "q"
	numBuckets  = 256
	bufSize     = 64 << 10
	dirPerm     = 0o700
	filePerm    = 0o600
)

// Step names one step of writing a body, for Hooks.
type Step int

// The steps of writing a body, in order.
const (
	StepCreate   Step = iota + 1 // create the temp file in incoming/
	StepWrite                    // each write to the temp file (one per buffer flush)
	StepSyncFile                 // fsync the temp file
	StepLink                     // rename or link the file into q/<hh>/
	StepSyncDir                  // fsync q/<hh>/ (called once per Commit, even when the fsync is shared)
)

var stepNames = [...]string{
	StepCreate:   "create",
	StepWrite:    "write",
	StepSyncFile: "sync file",
	StepLink:     "link",
	StepSyncDir:  "sync dir",
}

func (s Step) String() string {
	if s > 0 && int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "step(" + strconv.Itoa(int(s)) + ")"
}

// Hooks inject faults, for tests. The zero value injects nothing.
type Hooks struct {
	// Before, if non-nil, is called before each step with the step and the
	// key. If it returns an error the step is not performed and fails with
	// that error, exactly as if the system call had returned it (so
	// syscall.ENOSPC becomes ErrNoSpace). It may also block, to hold a
	// writer at a given step. It is called from the writing goroutine and
	// must be safe for concurrent use.
	Before func(step Step, key string) error
}

// Options configure a Spool. The zero value is usable.
type Options struct {
	// MinFree is the free space, in bytes, below which Create fails with
	// ErrNoSpace before writing anything. 0 disables the check.
	MinFree uint64

	// NoGroupSync makes every Commit fsync its directory itself instead of
	// sharing fsyncs with concurrent Commits. Both are equally durable; this
	// is for benchmarks and for file systems where sharing does not pay.
	NoGroupSync bool

	// Hooks inject faults, for tests.
	Hooks Hooks
}

// Spool is a directory of message bodies. It is safe for concurrent use.
type Spool struct {
	dir      string
	incoming string
	opts     Options
	buckets  [numBuckets]bucket

	pid       string
	seq       atomic.Uint64
	useLink   atomic.Bool // renameat2(RENAME_NOREPLACE) is not supported here
	closeOnce sync.Once
}

// bucket is one directory of committed bodies, q/<hh>/.
type bucket struct {
	path string
	sync dirSyncer
}

// Open opens the spool in dir, creating dir (whose parent must exist) and its
// subdirectories with mode 0700 if they do not exist. It does not remove anything: call SweepIncoming for
// files left by a crash.
func Open(dir string, opts Options) (*Spool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	s := &Spool{
		dir:      dir,
		incoming: filepath.Join(dir, incomingDir),
		opts:     opts,
		pid:      strconv.Itoa(os.Getpid()),
	}
	created := false
	mkdir := func(path string) error {
		err := os.Mkdir(path, dirPerm)
		if err == nil {
			created = true
			return nil
		}
		if errors.Is(err, fs.ErrExist) {
			fi, serr := os.Stat(path)
			if serr != nil {
				return serr
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", path)
			}
			return nil
		}
		return err
	}
	qdir := filepath.Join(dir, queueDir)
	for _, p := range []string{dir, s.incoming, qdir} {
		if err := mkdir(p); err != nil {
			return nil, fmt.Errorf("spool: open %s: %w", dir, err)
		}
	}
	for i := range s.buckets {
		b := &s.buckets[i]
		b.path = filepath.Join(qdir, bucketName(uint8(i)))
		if err := mkdir(b.path); err != nil {
			s.Close()
			return nil, fmt.Errorf("spool: open %s: %w", dir, err)
		}
		f, err := os.Open(b.path)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("spool: open %s: %w", dir, err)
		}
		b.sync.init(f)
	}
	if created {
		// Make the new directories themselves durable, so that a later
		// Commit's directory fsync is enough.
		for _, p := range []string{qdir, dir, filepath.Dir(dir)} {
			if err := syncDir(p); err != nil {
				s.Close()
				return nil, fmt.Errorf("spool: open %s: sync %s: %w", dir, p, mapNoSpace(err))
			}
		}
	}
	return s, nil
}

// Close releases the directory handles. Call it only when no Writer is in
// use; the Spool must not be used afterwards.
func (s *Spool) Close() error {
	var first error
	s.closeOnce.Do(func() {
		for i := range s.buckets {
			if f := s.buckets[i].sync.f; f != nil {
				if err := f.Close(); err != nil && first == nil {
					first = err
				}
			}
		}
	})
	return first
}

// Dir returns the spool's absolute directory.
func (s *Spool) Dir() string { return s.dir }

// ValidKey reports whether key is 8 to 32 ASCII letters and digits.
func ValidKey(key string) bool {
	if len(key) < MinKeyLen || len(key) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func checkKey(key string) error {
	if !ValidKey(key) {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return nil
}

// bucketOf returns the bucket index of key: FNV-1a (32 bits) folded to 8 bits.
// This is part of the on-disk format.
func bucketOf(key string) uint8 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return uint8(h ^ h>>8 ^ h>>16 ^ h>>24)
}

const hexDigits = "0123456789abcdef"

func bucketName(b uint8) string {
	return string([]byte{hexDigits[b>>4], hexDigits[b&15]})
}

// path returns the committed path of a valid key.
func (s *Spool) path(key string) string {
	return s.buckets[bucketOf(key)].path + string(filepath.Separator) + key
}

// Path returns the path where the body of key is (or would be) committed, for
// diagnostics. It returns "" for an invalid key.
func (s *Spool) Path(key string) string {
	if !ValidKey(key) {
		return ""
	}
	return s.path(key)
}

// Open opens the committed body of key for reading. A missing body gives an
// error that matches fs.ErrNotExist.
func (s *Spool) Open(key string) (*os.File, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", key, err)
	}
	return f, nil
}

// Stat returns information about the committed body of key. A missing body
// gives an error that matches fs.ErrNotExist.
func (s *Spool) Stat(key string) (fs.FileInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return nil, fmt.Errorf("spool: stat %s: %w", key, err)
	}
	return fi, nil
}

// Remove removes the committed body of key. Removing a missing body is not an
// error. The directory is not fsynced: a removal undone by a crash leaves an
// unreferenced body, which the reconciler removes again.
func (s *Spool) Remove(key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := os.Remove(s.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: remove %s: %w", key, err)
	}
	return nil
}

// Keys calls fn for each committed body, with its key and modification time
// (the time it was written), in no particular order. Bodies committed or
// removed during the walk may or may not be seen. Files that are not valid
// keys in their right directory are skipped. If fn returns an error, Keys stops
// and returns that error unchanged; fn may call Remove.
func (s *Spool) Keys(ctx context.Context, fn func(key string, modTime time.Time) error) error {
	for i := range s.buckets {
		if err := s.walkBucket(ctx, uint8(i), fn); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spool) walkBucket(ctx context.Context, bi uint8, fn func(key string, modTime time.Time) error) error {
	b := &s.buckets[bi]
	d, err := os.Open(b.path)
	if err != nil {
		return fmt.Errorf("spool: list %s: %w", b.path, err)
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(1024)
		for _, e := range ents {
			name := e.Name()
			if !e.Type().IsRegular() || !ValidKey(name) || bucketOf(name) != bi {
				continue
			}
			fi, ierr := e.Info()
			if ierr != nil {
				if errors.Is(ierr, fs.ErrNotExist) {
					continue // removed meanwhile
				}
				return fmt.Errorf("spool: list %s: %w", b.path, ierr)
			}
			if ferr := fn(name, fi.ModTime()); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("spool: list %s: %w", b.path, err)
		}
	}
}

// SweepIncoming removes files in incoming/ last modified more than olderThan
// ago: bodies whose writer crashed or never finished. olderThan must exceed
// the longest time a Writer may stay open, or a live Writer loses its file
// and its Commit fails. It returns how many files it removed.
func (s *Spool) SweepIncoming(ctx context.Context, olderThan time.Duration) (int, error) {
	d, err := os.Open(s.incoming)
	if err != nil {
		return 0, fmt.Errorf("spool: sweep: %w", err)
	}
	defer d.Close()
	cutoff := time.Now().Add(-olderThan)
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		ents, err := d.ReadDir(1024)
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			fi, ierr := e.Info()
			if ierr != nil {
				if errors.Is(ierr, fs.ErrNotExist) {
					continue
				}
				return n, fmt.Errorf("spool: sweep: %w", ierr)
			}
			if !fi.ModTime().Before(cutoff) {
				continue
			}
			rerr := os.Remove(filepath.Join(s.incoming, e.Name()))
			if rerr == nil {
				n++
			} else if !errors.Is(rerr, fs.ErrNotExist) {
				return n, fmt.Errorf("spool: sweep: %w", rerr)
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("spool: sweep: %w", err)
		}
	}
}

// Free returns the space available to this process on the spool's file
// system, in bytes.
func (s *Spool) Free() (uint64, error) {
	n, err := freeBytes(s.dir)
	if err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", s.dir, err)
	}
	return n, nil
}

// Create starts writing the body of key into a temp file. The caller must end
// the Writer with Commit or Abort. If free space is below Options.MinFree it
// fails with ErrNoSpace. Create does not check whether key is already
// committed: Commit does.
func (s *Spool) Create(ctx context.Context, key string) (*Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if s.opts.MinFree > 0 {
		free, err := freeBytes(s.dir)
		if err != nil {
			return nil, fmt.Errorf("spool: create %s: statfs: %w", key, err)
		}
		if free < s.opts.MinFree {
			return nil, fmt.Errorf("spool: create %s: %w (%d bytes free, minimum %d)", key, ErrNoSpace, free, s.opts.MinFree)
		}
	}
	if h := s.opts.Hooks.Before; h != nil {
		if err := h(StepCreate, key); err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", key, mapNoSpace(err))
		}
	}
	for tries := 0; ; tries++ {
		name := s.tempName(key)
		// Read-write: a content filter reads the body back before Commit
		// (Writer.Contents).
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
		if err == nil {
			return newWriter(s, key, name, f), nil
		}
		// A name left by an earlier process with the same pid: try the next.
		if !errors.Is(err, fs.ErrExist) || tries >= 100 {
			return nil, fmt.Errorf("spool: create %s: %w", key, mapNoSpace(err))
		}
	}
}

// tempName returns incoming/<key>.<pid>.<seq>.
func (s *Spool) tempName(key string) string {
	var sb strings.Builder
	sb.Grow(len(s.incoming) + len(key) + len(s.pid) + 24)
	sb.WriteString(s.incoming)
	sb.WriteByte(filepath.Separator)
	sb.WriteString(key)
	sb.WriteByte('.')
	sb.WriteString(s.pid)
	sb.WriteByte('.')
	var buf [20]byte
	sb.Write(strconv.AppendUint(buf[:0], s.seq.Add(1), 10))
	return sb.String()
}

// mapNoSpace wraps ENOSPC and EDQUOT so that they also match ErrNoSpace.
func mapNoSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// syncDir fsyncs the directory at path.
func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
