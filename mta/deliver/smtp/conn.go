package smtp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// deadlineConn gives every read and write a deadline. go-smtp sets one
// around each command and clears it afterwards, but writes the message body
// with none: there, and wherever no deadline is set, each read or write gets
// timeout (Postfix smtp_data_xfer_timeout), so a server that stops reading
// cannot hold a delivery forever.
type deadlineConn struct {
	net.Conn
	timeout time.Duration

	mu         sync.Mutex
	rset, wset bool // the caller set a deadline
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.rset, c.wset = !t.IsZero(), !t.IsZero()
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rset = !t.IsZero()
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wset = !t.IsZero()
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if !c.rset {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if !c.wset {
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// prefixConn returns prefix before the data of Conn. After STARTTLS, a new
// go-smtp client is made over the TLS connection, and it expects a greeting:
// prefix is that greeting. (go-smtp's own STARTTLS cannot be used, because
// it sends the first EHLO as "localhost" rather than our name.)
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// maxReply bounds a reply read by readReply: RFC 5321 4.5.3.1.5 allows 512
// octets a line; a few lines are enough for STARTTLS.
const maxReply = 4096

// rawCommand sends cmd and reads its reply on conn directly, one byte at a
// time, so that nothing after the reply is read: used for STARTTLS, after
// which the server's next bytes belong to the TLS handshake.
func rawCommand(conn net.Conn, cmd string, timeout time.Duration) (code int, text string, err error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, "", err
	}
	defer conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, cmd+"\r\n"); err != nil {
		return 0, "", err
	}
	return readReply(conn)
}

// readReply reads one (possibly multi-line) reply (RFC 5321 4.2.1) and
// returns its code and text, lines joined with "\n".
func readReply(r io.Reader) (int, string, error) {
	var (
		line  []byte
		lines []string
		total int
		b     [1]byte
	)
	for {
		n, err := r.Read(b[:])
		if n == 0 {
			if err == nil {
				continue
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		if total++; total > maxReply {
			return 0, "", errors.New("reply too long")
		}
		if b[0] != '\n' {
			line = append(line, b[0])
			continue
		}
		l := strings.TrimSuffix(string(line), "\r")
		line = line[:0]
		if len(l) < 3 {
			return 0, "", fmt.Errorf("malformed reply line %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil || code < 100 || code > 599 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			return 0, "", fmt.Errorf("malformed reply line %q", l)
		}
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		lines = append(lines, text)
		if len(l) == 3 || l[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
	}
}
