package maildir

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
)

// BenchmarkDeliver4K: one recipient per delivery, 8 deliveries at once to
// one hot mailbox (bench/'s smtp-source sends a session's messages to one
// recipient) or to 100 mailboxes; and one delivery for 10 recipients.
func BenchmarkDeliver4K(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n"), 4096/78)
	body = append([]byte("From: <a@sender.test>\r\nTo: <u@example.test>\r\nSubject: bench\r\n\r\n"), body...)
	msg := func() *deliver.Message {
		return &deliver.Message{QueueID: "BENCH", Sender: "a@sender.test", Size: int64(len(body)), ArrivedAt: time.Now(),
			Kind: "mail", Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }}
	}
	for _, c := range []struct {
		name           string
		mailboxes, per int
	}{{"hot-mailbox", 1, 1}, {"100-mailboxes", 100, 1}, {"10-recipients", 100, 10}} {
		b.Run(c.name, func(b *testing.B) {
			root := b.TempDir()
			if d := os.Getenv("FACTEUR_BENCH_DIR"); d != "" {
				var err error
				if root, err = os.MkdirTemp(d, "maildir-bench-"); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(root) })
			}
			a := newAgent(b, root, nil)
			var seq atomic.Int64
			one := func() {
				var rcpts []deliver.Recipient
				for range c.per {
					i := seq.Add(1) % int64(c.mailboxes)
					rcpts = append(rcpts, rcpt(fmt.Sprintf("u%03d@example.test", i), nil))
				}
				for _, r := range a.Deliver(context.Background(), "", msg(), rcpts) {
					if r.Status != deliver.Delivered {
						b.Fatalf("delivery: %+v", r)
					}
				}
			}
			for range 100 {
				one()
			}
			b.SetBytes(int64(len(body) * c.per))
			b.ResetTimer()
			if c.per > 1 {
				for b.Loop() {
					one()
				}
			} else {
				b.SetParallelism(4) // 8 goroutines on 2 CPUs
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			}
			b.ReportMetric(float64(b.N*c.per)/b.Elapsed().Seconds(), "files/s")
		})
	}
}
