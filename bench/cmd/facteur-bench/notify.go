package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// deliveryClock timestamps deliveries as they happen, with inotify on the
// directories where messages land. A file's mtime comes from the kernel's
// coarse clock (one tick: 4 ms here), too coarse for latencies of a few
// milliseconds; an inotify event read at once is as precise as the accept
// time the client takes (both are time.Now() in this process).
type deliveryClock struct {
	f    *os.File
	wd   map[int32]string
	mu   sync.Mutex
	seen map[string]int64 // path → unix ns of the first event
	lost bool             // the event queue overflowed
	done chan struct{}
}

// watchDirs watches dirs for mask (IN_CREATE|IN_MOVED_TO for Maildir new/,
// where files arrive complete by link or rename; IN_CLOSE_WRITE for
// smtp-sink's directory, which writes in place).
func watchDirs(dirs []string, mask uint32) (*deliveryClock, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	c := &deliveryClock{f: os.NewFile(uintptr(fd), "inotify"), wd: map[int32]string{}, seen: map[string]int64{},
		done: make(chan struct{})}
	for _, d := range dirs {
		w, err := syscall.InotifyAddWatch(fd, d, mask)
		if err != nil {
			c.f.Close()
			return nil, &os.PathError{Op: "inotify_add_watch", Path: d, Err: err}
		}
		c.wd[int32(w)] = d
	}
	go c.loop()
	return c, nil
}

func (c *deliveryClock) loop() {
	defer close(c.done)
	buf := make([]byte, 256<<10)
	for {
		n, err := c.f.Read(buf)
		if err != nil {
			return // closed
		}
		now := time.Now().UnixNano()
		c.mu.Lock()
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
				c.lost = true
				continue
			}
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if d, ok := c.wd[ev.Wd]; ok && len(name) > 0 {
				p := filepath.Join(d, string(name))
				if _, dup := c.seen[p]; !dup {
					c.seen[p] = now
				}
			}
		}
		c.mu.Unlock()
	}
}

// stop ends the watch; at answers afterwards.
func (c *deliveryClock) stop() {
	if c == nil {
		return
	}
	c.f.Close()
	<-c.done
}

// at returns the time path arrived, if an event said so.
func (c *deliveryClock) at(path string) (time.Time, bool) {
	if c == nil {
		return time.Time{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ns, ok := c.seen[path]
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
