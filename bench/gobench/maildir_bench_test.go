// Package gobench holds benchmarks of hot paths that their own packages do
// not benchmark yet; bench/run.sh runs them with the others. Manual, not CI.
package gobench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/maildir"
)

// BenchmarkMaildirDeliver4K is the Maildir agent writing one 4 KiB message
// for one recipient (tmp/ file, fsync, link into new/, directory fsync),
// spread over 100 mailboxes, unlimited quota. The directory is
// $FACTEUR_BENCH_DIR when set (bench/run.sh points it at bench/work, the
// file system the benchmark's Maildirs live on), else a temp directory.
func BenchmarkMaildirDeliver4K(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n"), 4096/78)
	msg = append([]byte("From: <a@sender.test>\r\nTo: <u@example.test>\r\nSubject: bench\r\n\r\n"), msg...)
	for _, par := range []bool{false, true} {
		name := "serial"
		if par {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			root := b.TempDir()
			if d := os.Getenv("FACTEUR_BENCH_DIR"); d != "" {
				var err error
				if root, err = os.MkdirTemp(d, "maildir-bench-"); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(root) })
			}
			o := maildir.Options{Root: root, Hostname: "bench.invalid", UID: os.Geteuid(), GID: os.Getegid()}
			if os.Geteuid() == 0 { // the mail owner must not be root (DESIGN "Mail ownership")
				u, err := user.Lookup("vmail")
				if err != nil {
					b.Skip("running as root needs a vmail user:", err)
				}
				o.UID, _ = strconv.Atoi(u.Uid)
				o.GID, _ = strconv.Atoi(u.Gid)
				os.Chmod(root, 0o755) //nolint:errcheck
			}
			a, err := maildir.New(o)
			if err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			one := func() {
				i := seq.Add(1)
				rc := deliver.Recipient{Address: fmt.Sprintf("u%03d@example.test", i%100), Orig: "",
					Mailbox: &deliver.Mailbox{Maildir: fmt.Sprintf("example.test/u%03d/", i%100)}}
				m := &deliver.Message{QueueID: fmt.Sprint(i), Sender: "a@sender.test", Size: int64(len(msg)),
					ArrivedAt: time.Now(), Kind: "mail", Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }}
				if r := a.Deliver(context.Background(), "", m, []deliver.Recipient{rc}); r[0].Status != deliver.Delivered {
					b.Fatalf("delivery: %+v", r[0])
				}
			}
			for range 100 { // create the Maildirs outside the timing
				one()
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			if par {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			} else {
				for b.Loop() {
					one()
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
