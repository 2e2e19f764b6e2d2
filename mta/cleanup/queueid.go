package cleanup

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// Queue ids are 12 characters of [0-9A-Za-z]: 7 characters of milliseconds
// since 2020-01-01 UTC (base 62, enough until the year 2131) then 5
// characters (about 30 bits) that start random for each millisecond and
// increase within it. The alphabet is in ASCII order, so ids sort by time as
// strings. Within a process ids strictly increase, so they never repeat; two
// nodes would have to draw the same suffix in the same millisecond, and the
// primary key of queue_message refuses that case (the message gets 451 and is
// retried under a new id).
const (
	queueIDLen    = 12
	queueIDTime   = 7
	queueIDSuffix = queueIDLen - queueIDTime
	alphabet      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

var queueIDEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// suffixSpace is 62^5, the number of distinct suffixes.
const suffixSpace = 62 * 62 * 62 * 62 * 62

// idGen makes queue ids; its state lives in the Cleanup that owns it.
type idGen struct {
	mu     sync.Mutex
	lastMs int64
	suffix uint64
}

func (g *idGen) next(now time.Time) string {
	ms := now.Sub(queueIDEpoch).Milliseconds()
	if ms < 0 {
		ms = 0
	}
	g.mu.Lock()
	if ms > g.lastMs {
		g.lastMs = ms
		// Start low in the suffix space, so that many ids in one
		// millisecond rarely spill into the next.
		g.suffix = randUint64() % (suffixSpace / 2)
	} else {
		// Same millisecond, or the clock stepped back: keep increasing.
		g.suffix++
		if g.suffix >= suffixSpace {
			g.lastMs++
			g.suffix = randUint64() % (suffixSpace / 2)
		}
	}
	ms, suffix := g.lastMs, g.suffix
	g.mu.Unlock()

	var b [queueIDLen]byte
	for i := queueIDTime - 1; i >= 0; i-- {
		b[i] = alphabet[ms%62]
		ms /= 62
	}
	for i := queueIDLen - 1; i >= queueIDTime; i-- {
		b[i] = alphabet[suffix%62]
		suffix /= 62
	}
	return string(b[:])
}

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return binary.LittleEndian.Uint64(b[:])
}

// QueueIDTime returns the time encoded in a queue id made by NewQueueID
// (millisecond precision), and false if id is not such an id.
func QueueIDTime(id string) (time.Time, bool) {
	if len(id) != queueIDLen {
		return time.Time{}, false
	}
	var ms int64
	for i := 0; i < queueIDLen; i++ {
		v := digit(id[i])
		if v < 0 {
			return time.Time{}, false
		}
		if i < queueIDTime {
			ms = ms*62 + int64(v)
		}
	}
	return queueIDEpoch.Add(time.Duration(ms) * time.Millisecond), true
}

func digit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'Z':
		return int(c-'A') + 10
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 36
	}
	return -1
}
