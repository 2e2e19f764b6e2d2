package cleanup_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
)

// BenchmarkEnqueue4K queues 4 KiB messages for one mailbox, end to end:
// lookup (cached), Received:, spool file with fsync, rename and directory
// fsync, the rows in one transaction, the coalesced NOTIFY. It reports
// msgs/s. The test cluster runs with fsync=off, so the database side is
// cheaper than in production; the spool's fsyncs are real (on whatever
// file system holds the temp directory).
func BenchmarkEnqueue4K(b *testing.B) { benchmarkEnqueue(b, nil) }

// BenchmarkEnqueue4KWithCheck is BenchmarkEnqueue4K with a Message.Check
// that reads the whole message and prepends a field, as inbound
// authentication and DKIM signing do (without their DNS and crypto): the
// cost of the tee and of the prepend column.
func BenchmarkEnqueue4KWithCheck(b *testing.B) {
	benchmarkEnqueue(b, func(ctx context.Context, r io.Reader) (string, error) {
		_, err := io.Copy(io.Discard, r)
		return "Authentication-Results: mx.example.com;\r\n\tspf=pass smtp.mailfrom=a@sender.test;\r\n\tdkim=none;\r\n\tdmarc=none header.from=sender.test\r\n", err
	})
}

func benchmarkEnqueue(b *testing.B, check func(context.Context, io.Reader) (string, error)) {
	body := simpleMessage(4096)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
		Client: smtpClient(), Check: check}
	run := func(b *testing.B, parallel bool) {
		e := newEnv(b, func(o *cleanup.Options) { o.NotifyQueue = true; o.Wake = func() {} })
		ctx := context.Background()
		if _, err := e.c.Enqueue(ctx, m, strings.NewReader(body)); err != nil { // warm the caches
			b.Fatal(err)
		}
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.ResetTimer()
		if parallel {
			var fails atomic.Int32
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.c.Enqueue(ctx, m, strings.NewReader(body)); err != nil {
						fails.Add(1)
					}
				}
			})
			if fails.Load() > 0 {
				b.Fatalf("%d enqueues failed", fails.Load())
			}
		} else {
			for b.Loop() {
				if _, err := e.c.Enqueue(ctx, m, strings.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}
