package spool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkCommit4K measures Create, a 4 KiB Write, Commit and Remove of one
// body (the Remove keeps directories at a steady size, as a running queue
// does). The spool is in $FACTEUR_SPOOL_BENCH_DIR if set, else in the test's
// temp directory: fsync costs depend entirely on that file system.
//
// serial: one writer. parallel-*: 16 writers per GOMAXPROCS, with and without
// group sync.
func BenchmarkCommit4K(b *testing.B) {
	data := body("bench", 4096)
	run := func(b *testing.B, opts Options, parallel bool) {
		dir := b.TempDir()
		if d := os.Getenv("FACTEUR_SPOOL_BENCH_DIR"); d != "" {
			var err error
			if dir, err = os.MkdirTemp(d, "bench"); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.RemoveAll(dir) })
		}
		s, err := Open(filepath.Join(dir, "spool"), opts)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var seq atomic.Uint64
		one := func() error {
			key := fmt.Sprintf("B%015x", seq.Add(1))
			w, err := s.Create(context.Background(), key)
			if err != nil {
				return err
			}
			if _, err := w.Write(data); err != nil {
				w.Abort()
				return err
			}
			if err := w.Commit(); err != nil {
				return err
			}
			return s.Remove(key)
		}
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		b.ResetTimer()
		if parallel {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := one(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		} else {
			for b.Loop() {
				if err := one(); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("serial", func(b *testing.B) { run(b, Options{}, false) })
	b.Run("parallel-group", func(b *testing.B) { run(b, Options{}, true) })
	b.Run("parallel-nogroup", func(b *testing.B) { run(b, Options{NoGroupSync: true}, true) })
}
