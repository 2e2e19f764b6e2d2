package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func openSpool(t *testing.T, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newSpool(t *testing.T, opts Options) *Spool {
	t.Helper()
	return openSpool(t, filepath.Join(t.TempDir(), "spool"), opts)
}

// body returns n bytes of recognisable content for key.
func body(key string, n int) []byte {
	b := make([]byte, 0, n+64)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "%s line %d\r\n", key, i)
	}
	return b[:n]
}

func commit(t *testing.T, s *Spool, key string, data []byte) {
	t.Helper()
	w, err := s.Create(context.Background(), key)
	if err != nil {
		t.Fatalf("Create(%s): %v", key, err)
	}
	defer w.Abort()
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write(%s): %v", key, err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit(%s): %v", key, err)
	}
}

func readBody(t *testing.T, s *Spool, key string) []byte {
	t.Helper()
	f, err := s.Open(key)
	if err != nil {
		t.Fatalf("Open(%s): %v", key, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func incomingNames(t *testing.T, s *Spool) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), incomingDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func allKeys(t *testing.T, s *Spool) []string {
	t.Helper()
	var keys []string
	err := s.Keys(context.Background(), func(key string, _ time.Time) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	sort.Strings(keys)
	return keys
}

func assertNotCommitted(t *testing.T, s *Spool, key string) {
	t.Helper()
	if _, err := s.Stat(key); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(%s) = %v, want not exist", key, err)
	}
}

func TestCommitThenReadBack(t *testing.T) {
	s := newSpool(t, Options{})
	for _, size := range []int{0, 1, 4096, bufSize - 1, bufSize, bufSize + 1, 3*bufSize + 17} {
		key := fmt.Sprintf("Key%08d", size)
		data := body(key, size)
		w, err := s.Create(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		// Write in odd pieces, partly as strings.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1000+len(rest)%7777)
			if n%2 == 0 {
				_, err = w.WriteString(string(rest[:n]))
			} else {
				_, err = w.Write(rest[:n])
			}
			if err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if w.Size() != int64(size) {
			t.Errorf("Size() = %d, want %d", w.Size(), size)
		}
		if err := w.Commit(); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if err := w.Abort(); err != nil {
			t.Errorf("Abort after Commit: %v", err)
		}
		if err := w.Commit(); !errors.Is(err, ErrWriterDone) {
			t.Errorf("second Commit = %v, want ErrWriterDone", err)
		}
		if got := readBody(t, s, key); !bytes.Equal(got, data) {
			t.Errorf("%s: read back %d bytes, want %d", key, len(got), len(data))
		}
		fi, err := s.Stat(key)
		if err != nil || fi.Size() != int64(size) {
			t.Errorf("Stat(%s) = %v, %v; want size %d", key, fi, err, size)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %v, want 0600", key, perm)
		}
		p := s.Path(key)
		if want := filepath.Join(s.Dir(), "q", bucketName(bucketOf(key)), key); p != want {
			t.Errorf("Path = %q, want %q", p, want)
		}
	}
	if names := incomingNames(t, s); len(names) != 0 {
		t.Errorf("incoming/ not empty after commits: %v", names)
	}
	for _, d := range []string{s.Dir(), filepath.Join(s.Dir(), "incoming"), filepath.Join(s.Dir(), "q", "00"), filepath.Join(s.Dir(), "q", "ff")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o700 {
			t.Errorf("%s: mode %v, want 0700", d, perm)
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	s := newSpool(t, Options{})
	w, err := s.Create(context.Background(), "AbortMe123")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body("x", 200_000)); err != nil {
		t.Fatal(err)
	}
	if len(incomingNames(t, s)) != 1 {
		t.Fatalf("want one temp file while writing, have %v", incomingNames(t, s))
	}
	for range 3 {
		if err := w.Abort(); err != nil {
			t.Fatalf("Abort: %v", err)
		}
	}
	if names := incomingNames(t, s); len(names) != 0 {
		t.Errorf("incoming/ after Abort: %v", names)
	}
	assertNotCommitted(t, s, "AbortMe123")
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrWriterDone) {
		t.Errorf("Write after Abort = %v, want ErrWriterDone", err)
	}
	if err := w.Commit(); !errors.Is(err, ErrWriterDone) {
		t.Errorf("Commit after Abort = %v, want ErrWriterDone", err)
	}
}

func TestEachFailingStepLeavesNothing(t *testing.T) {
	errInjected := errors.New("injected")
	for _, step := range []Step{StepCreate, StepWrite, StepSyncFile, StepLink, StepSyncDir} {
		for _, inj := range []error{errInjected, syscall.ENOSPC, syscall.EDQUOT} {
			for _, group := range []bool{true, false} {
				t.Run(fmt.Sprintf("%v/%v/group=%v", step, inj, group), func(t *testing.T) {
					const key = "FailKey12345"
					var calls atomic.Int32
					s := newSpool(t, Options{NoGroupSync: !group, Hooks: Hooks{Before: func(st Step, k string) error {
						if k != key {
							t.Errorf("hook called with key %q", k)
						}
						if st == step {
							calls.Add(1)
							return inj
						}
						return nil
					}}})
					err := func() error {
						w, err := s.Create(context.Background(), key)
						if err != nil {
							return err
						}
						defer w.Abort()
						if _, err := w.Write(body(key, 100_000)); err != nil {
							return err // flushes a full buffer: StepWrite
						}
						return w.Commit()
					}()
					if calls.Load() == 0 {
						t.Fatalf("hook for %v never called", step)
					}
					if !errors.Is(err, inj) {
						t.Fatalf("err = %v, want %v", err, inj)
					}
					wantNoSpace := inj != errInjected
					if errors.Is(err, ErrNoSpace) != wantNoSpace {
						t.Errorf("errors.Is(%v, ErrNoSpace) = %v, want %v", err, !wantNoSpace, wantNoSpace)
					}
					if names := incomingNames(t, s); len(names) != 0 {
						t.Errorf("temp files left: %v", names)
					}
					assertNotCommitted(t, s, key)
					if keys := allKeys(t, s); len(keys) != 0 {
						t.Errorf("Keys = %v, want none", keys)
					}
				})
			}
		}
	}
}

func TestWriteErrorRemovesTempAtOnce(t *testing.T) {
	s := newSpool(t, Options{Hooks: Hooks{Before: func(st Step, _ string) error {
		if st == StepWrite {
			return syscall.ENOSPC
		}
		return nil
	}}})
	w, err := s.Create(context.Background(), "FullDisk0001")
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Write(make([]byte, 2*bufSize))
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Write = %v, want ErrNoSpace", err)
	}
	// Space is given back before the caller gets round to Abort.
	if names := incomingNames(t, s); len(names) != 0 {
		t.Errorf("temp files left after write error: %v", names)
	}
	if _, err2 := w.Write([]byte("more")); err2 != err {
		t.Errorf("second Write = %v, want the sticky %v", err2, err)
	}
	if err2 := w.Commit(); err2 != err {
		t.Errorf("Commit = %v, want the sticky %v", err2, err)
	}
}

func TestCommitSameKeyTwiceKeepsFirst(t *testing.T) {
	for _, link := range []bool{false, true} {
		t.Run(fmt.Sprintf("link=%v", link), func(t *testing.T) {
			s := newSpool(t, Options{})
			s.useLink.Store(link)
			const key = "Duplicate001"
			// Both writers open before either commits, as two racing
			// enqueues would.
			w1, err := s.Create(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			w2, err := s.Create(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			w1.WriteString("first")
			w2.WriteString("second")
			if err := w1.Commit(); err != nil {
				t.Fatal(err)
			}
			err = w2.Commit()
			if !errors.Is(err, ErrExists) {
				t.Fatalf("second Commit = %v, want ErrExists", err)
			}
			w2.Abort()
			if got := string(readBody(t, s, key)); got != "first" {
				t.Errorf("body = %q, want the first", got)
			}
			if names := incomingNames(t, s); len(names) != 0 {
				t.Errorf("temp files left: %v", names)
			}
			// And later, sequentially.
			w3, _ := s.Create(context.Background(), key)
			w3.WriteString("third")
			if err := w3.Commit(); !errors.Is(err, ErrExists) {
				t.Errorf("third Commit = %v, want ErrExists", err)
			}
			if got := string(readBody(t, s, key)); got != "first" {
				t.Errorf("body = %q, want the first", got)
			}
		})
	}
}

func TestKeysListsOnlyCommitted(t *testing.T) {
	s := newSpool(t, Options{})
	want := []string{"Committed01", "Committed02", "Committed03"}
	start := time.Now().Add(-time.Second)
	for _, k := range want {
		commit(t, s, k, []byte(k))
	}
	open, _ := s.Create(context.Background(), "StillOpen01")
	open.WriteString("in progress")
	defer open.Abort()
	aborted, _ := s.Create(context.Background(), "Aborted0001")
	aborted.WriteString("gone")
	aborted.Abort()
	// Foreign files: not keys, or a key in the wrong directory.
	b := bucketOf("Stranger001")
	os.WriteFile(filepath.Join(s.Dir(), "q", bucketName(b), "not-a-key.txt"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Dir(), "q", bucketName(b+1), "Stranger001"), nil, 0o600)

	var got []string
	err := s.Keys(context.Background(), func(key string, mt time.Time) error {
		if mt.Before(start) || mt.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: modTime %v out of range", key, mt)
		}
		got = append(got, key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Keys = %v, want %v", got, want)
	}

	errStop := errors.New("stop")
	n := 0
	err = s.Keys(context.Background(), func(string, time.Time) error { n++; return errStop })
	if err != errStop || n != 1 {
		t.Errorf("Keys with failing fn = %v after %d calls, want errStop after 1", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Keys(ctx, func(string, time.Time) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Keys with cancelled ctx = %v", err)
	}

	// The reconciler's use: remove while walking.
	err = s.Keys(context.Background(), func(key string, _ time.Time) error { return s.Remove(key) })
	if err != nil {
		t.Fatal(err)
	}
	if keys := allKeys(t, s); len(keys) != 0 {
		t.Errorf("Keys after removing all = %v", keys)
	}
}

func TestRemove(t *testing.T) {
	s := newSpool(t, Options{})
	commit(t, s, "RemoveMe01", []byte("x"))
	if err := s.Remove("RemoveMe01"); err != nil {
		t.Fatal(err)
	}
	assertNotCommitted(t, s, "RemoveMe01")
	if err := s.Remove("RemoveMe01"); err != nil {
		t.Errorf("removing a missing key = %v, want nil", err)
	}
	if _, err := s.Open("RemoveMe01"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(removed) = %v, want ErrNotExist", err)
	}
}

func TestInvalidKeysNeverReachTheFileSystem(t *testing.T) {
	s := newSpool(t, Options{})
	for _, key := range []string{
		"", "short", "../../../etc/passwd", "a/b/c/d/e/f", "..........", "abcdefgh\x00",
		"abcdefg.", "abc defgh", "ключключключ", strings.Repeat("a", 33), "abcdefgh\n",
	} {
		if ValidKey(key) {
			t.Errorf("ValidKey(%q) = true", key)
		}
		if _, err := s.Create(context.Background(), key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Create(%q) = %v", key, err)
		}
		if _, err := s.Open(key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Open(%q) = %v", key, err)
		}
		if _, err := s.Stat(key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v", key, err)
		}
		if err := s.Remove(key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Remove(%q) = %v", key, err)
		}
		if p := s.Path(key); p != "" {
			t.Errorf("Path(%q) = %q", key, p)
		}
	}
	for _, key := range []string{"4Xk9P2mQ7aBz", "00000000", strings.Repeat("Z", 32)} {
		if !ValidKey(key) {
			t.Errorf("ValidKey(%q) = false", key)
		}
	}
}

// The bucket hash is part of the on-disk format.
func TestBucketHashIsStable(t *testing.T) {
	for key, want := range map[string]string{"4Xk9P2mQ7aBz": "12", "AAAAAAAA": "0a", strings.Repeat("z", 32): "6d"} {
		if got := bucketName(bucketOf(key)); got != want {
			t.Errorf("bucket(%s) = %s, want %s", key, got, want)
		}
	}
	var counts [numBuckets]int
	for i := range 100_000 {
		key := fmt.Sprintf("K%011d", i)
		h := fnv.New32a()
		h.Write([]byte(key))
		v := h.Sum32()
		if b := bucketOf(key); b != uint8(v^v>>8^v>>16^v>>24) {
			t.Fatalf("bucketOf(%s) differs from hash/fnv", key)
		}
		counts[bucketOf(key)]++
	}
	for b, n := range counts {
		if n < 250 || n > 550 { // mean 390
			t.Errorf("bucket %02x holds %d of 100000 sequential keys", b, n)
		}
	}
}

func TestMinFreeGivesErrNoSpace(t *testing.T) {
	s := newSpool(t, Options{MinFree: math.MaxUint64})
	free, err := s.Free()
	if err != nil || free == 0 {
		t.Fatalf("Free() = %d, %v", free, err)
	}
	_, err = s.Create(context.Background(), "NoRoom00001")
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Create = %v, want ErrNoSpace", err)
	}
	if names := incomingNames(t, s); len(names) != 0 {
		t.Errorf("temp files left: %v", names)
	}
	s2 := openSpool(t, s.Dir(), Options{MinFree: 1})
	commit(t, s2, "Room0000001", []byte("fits"))
}

func TestCreateHonoursContext(t *testing.T) {
	s := newSpool(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Create(ctx, "Cancelled01"); !errors.Is(err, context.Canceled) {
		t.Errorf("Create = %v, want context.Canceled", err)
	}
}

func TestSweepIncoming(t *testing.T) {
	s := newSpool(t, Options{})
	commit(t, s, "Committed01", []byte("stays"))
	inc := filepath.Join(s.Dir(), incomingDir)
	old := time.Now().Add(-2 * time.Hour)
	for _, name := range []string{"Stale000001.1.1", "Stale000002.1.2", "garbage"} {
		p := filepath.Join(inc, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	live, err := s.Create(context.Background(), "LiveWriter1")
	if err != nil {
		t.Fatal(err)
	}
	live.WriteString("still being written")

	n, err := s.SweepIncoming(context.Background(), time.Hour)
	if err != nil || n != 3 {
		t.Fatalf("SweepIncoming = %d, %v; want 3", n, err)
	}
	if names := incomingNames(t, s); len(names) != 1 || !strings.HasPrefix(names[0], "LiveWriter1.") {
		t.Errorf("incoming/ = %v, want only the live writer", names)
	}
	if err := live.Commit(); err != nil {
		t.Fatalf("live writer's Commit after sweep: %v", err)
	}
	if fmt.Sprint(allKeys(t, s)) != "[Committed01 LiveWriter1]" {
		t.Errorf("Keys = %v", allKeys(t, s))
	}
}

// A crash: writers that never commit, the process goes away (no Abort, no
// Close), a new one opens the spool and sweeps.
func TestCrashThenReopenAndSweep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s1, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s1, "Durable0001", []byte("committed before the crash"))
	for i := range 5 {
		w, err := s1.Create(context.Background(), fmt.Sprintf("Crashed%04d", i))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body("c", 100_000+i)) // partly flushed, never committed
	}
	// The committed body is fully written; the temp files are not.
	time.Sleep(20 * time.Millisecond)

	s2 := openSpool(t, dir, Options{})
	if got := len(incomingNames(t, s2)); got != 5 {
		t.Fatalf("incoming/ has %d files after the crash, want 5", got)
	}
	n, err := s2.SweepIncoming(context.Background(), 10*time.Millisecond)
	if err != nil || n != 5 {
		t.Fatalf("SweepIncoming = %d, %v; want 5", n, err)
	}
	if names := incomingNames(t, s2); len(names) != 0 {
		t.Errorf("incoming/ after sweep: %v", names)
	}
	if fmt.Sprint(allKeys(t, s2)) != "[Durable0001]" {
		t.Errorf("Keys = %v", allKeys(t, s2))
	}
	if got := string(readBody(t, s2, "Durable0001")); got != "committed before the crash" {
		t.Errorf("body = %q", got)
	}
	// A temp name from a previous process with our pid and sequence number
	// does not stop new writers.
	stale := s2.tempName("Reused00001")
	os.WriteFile(stale, nil, 0o600)
	s2.seq.Add(^uint64(0)) // next tempName is the stale one again
	commit(t, s2, "Reused00001", []byte("ok"))
}

func TestConcurrentCommitsAllDurableAndReadable(t *testing.T) {
	for _, group := range []bool{true, false} {
		t.Run(fmt.Sprintf("group=%v", group), func(t *testing.T) {
			s := newSpool(t, Options{NoGroupSync: !group})
			const writers, each = 32, 25
			var wg sync.WaitGroup
			errs := make(chan error, writers*each)
			for g := range writers {
				wg.Go(func() {
					for i := range each {
						key := fmt.Sprintf("C%03dx%05d", g, i)
						w, err := s.Create(context.Background(), key)
						if err != nil {
							errs <- err
							return
						}
						w.Write(body(key, 4096+i*97))
						if err := w.Commit(); err != nil {
							errs <- err
							w.Abort()
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			keys := allKeys(t, s)
			if len(keys) != writers*each {
				t.Fatalf("%d keys, want %d", len(keys), writers*each)
			}
			for g := range writers {
				for i := range each {
					key := fmt.Sprintf("C%03dx%05d", g, i)
					if !bytes.Equal(readBody(t, s, key), body(key, 4096+i*97)) {
						t.Errorf("%s: wrong content", key)
					}
				}
			}
			if names := incomingNames(t, s); len(names) != 0 {
				t.Errorf("temp files left: %v", names)
			}
		})
	}
}

// TestGroupSyncCoversEveryEarlierRename checks the group sync guarantee with a
// model directory: a "rename" adds an item, an fsync makes durable the items
// present when it started, and sync() may return nil only when the caller's
// item is durable.
func TestGroupSyncCoversEveryEarlierRename(t *testing.T) {
	for _, failEvery := range []int{0, 3} {
		t.Run(fmt.Sprintf("failEvery=%d", failEvery), func(t *testing.T) {
			var (
				mu      sync.Mutex
				renamed = map[int]bool{}
				durable = map[int]bool{}
				fsyncs  int
				running atomic.Int32
			)
			var d dirSyncer
			d.init(nil)
			d.fsync = func(*os.File) error {
				if running.Add(1) != 1 {
					t.Error("two fsyncs at once")
				}
				defer running.Add(-1)
				mu.Lock()
				fsyncs++
				n := fsyncs
				snap := make([]int, 0, len(renamed))
				for k := range renamed {
					snap = append(snap, k)
				}
				mu.Unlock()
				time.Sleep(200 * time.Microsecond)
				if failEvery > 0 && n%failEvery == 0 {
					return fmt.Errorf("fsync %d failed", n)
				}
				mu.Lock()
				for _, k := range snap {
					durable[k] = true
				}
				mu.Unlock()
				return nil
			}
			const callers, rounds = 16, 50
			var wg sync.WaitGroup
			var okCalls, failCalls atomic.Int32
			for c := range callers {
				wg.Go(func() {
					for r := range rounds {
						item := c*rounds + r
						mu.Lock()
						renamed[item] = true
						mu.Unlock()
						if err := d.sync(); err != nil {
							failCalls.Add(1)
							continue
						}
						okCalls.Add(1)
						mu.Lock()
						ok := durable[item]
						mu.Unlock()
						if !ok {
							t.Errorf("sync returned nil but item %d is not durable", item)
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%d syncs (%d ok, %d failed) with %d fsyncs", callers*rounds, okCalls.Load(), failCalls.Load(), fsyncs)
			if fsyncs >= callers*rounds/2 {
				t.Errorf("%d fsyncs for %d concurrent syncs: not shared", fsyncs, callers*rounds)
			}
			if failEvery > 0 && failCalls.Load() == 0 {
				t.Error("no sync reported a failed fsync")
			}
		})
	}
}

func TestOpenRejectsAFileAsSubdirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	os.Mkdir(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "incoming"), nil, 0o600)
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("Open succeeded with incoming/ a file")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "no", "parent"), Options{}); err == nil {
		t.Fatal("Open succeeded without the parent directory")
	}
}

func TestStepString(t *testing.T) {
	if StepSyncDir.String() != "sync dir" || Step(42).String() != "step(42)" {
		t.Errorf("got %q, %q", StepSyncDir, Step(42))
	}
}

func TestContentsReadsBackBeforeCommit(t *testing.T) {
	s := newSpool(t, Options{})
	w, err := s.Create(context.Background(), "Contents01")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	data := body("Contents01", 3*bufSize+5)
	if _, err := w.Write(data[:bufSize+3]); err != nil {
		t.Fatal(err)
	}
	r, err := w.Contents()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data[:bufSize+3]) {
		t.Fatalf("Contents read %d bytes (%v), want %d", len(got), err, bufSize+3)
	}
	// Writing goes on after a read; the committed body is whole.
	if _, err := w.Write(data[bufSize+3:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, s, "Contents01"); !bytes.Equal(got, data) {
		t.Errorf("read back %d bytes, want %d", len(got), len(data))
	}
	if _, err := w.Contents(); !errors.Is(err, ErrWriterDone) {
		t.Errorf("Contents after Commit = %v, want ErrWriterDone", err)
	}
}
