package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/emersion/go-milter"
)

// v6Milter is a minimal protocol-version-6 milter written against the wire
// format, for what go-milter's version-2 server cannot show: SMFIC_DATA,
// SMFIP_HDR_LEADSPC and a negotiation without downgrade.
type v6Milter struct {
	protocol gomilter.OptProtocol
	data     []byte // answer to SMFIC_DATA: code then data
	eom      [][]byte

	mu       sync.Mutex
	conns    int
	commands []byte
	headers  []string
}

func (v *v6Milter) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			v.mu.Lock()
			v.conns++
			v.mu.Unlock()
			go v.handle(c)
		}
	}()
	return "inet:" + ln.Addr().String()
}

func writePkt(w io.Writer, code byte, data []byte) error {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(len(data)+1))
	b.WriteByte(code)
	b.Write(data)
	_, err := w.Write(b.Bytes())
	return err
}

func (v *v6Milter) handle(c net.Conn) {
	defer c.Close()
	for {
		var n uint32
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		code, data := buf[0], buf[1:]
		v.mu.Lock()
		v.commands = append(v.commands, code)
		if code == 'L' {
			parts := strings.SplitN(string(data), "\x00", 3)
			v.headers = append(v.headers, parts[0]+":"+parts[1])
		}
		v.mu.Unlock()
		var err error
		switch code {
		case 'O':
			var b bytes.Buffer
			binary.Write(&b, binary.BigEndian, []uint32{6, uint32(allActions), uint32(v.protocol)})
			err = writePkt(c, 'O', b.Bytes())
		case 'D', 'A':
		case 'Q':
			return
		case 'T':
			err = writePkt(c, v.data[0], v.data[1:])
		case 'E':
			for _, m := range v.eom {
				if err = writePkt(c, m[0], m[1:]); err != nil {
					return
				}
			}
			err = writePkt(c, 'a', nil)
		default:
			err = writePkt(c, 'c', nil)
		}
		if err != nil {
			return
		}
	}
}

func (v *v6Milter) seen() (conns int, commands string, headers []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.conns, string(v.commands), append([]string(nil), v.headers...)
}

func TestDataStageReject(t *testing.T) {
	ctx := context.Background()
	m := &v6Milter{data: []byte("y550 5.7.1 No DATA today\x00")}
	s := newClient(t, Config{Addr: m.serve(t)}).NewSession(nil, nil)
	defer s.Close()
	s.Connect(ctx, "h", netip.MustParseAddr("192.0.2.7"), 1)
	s.Mail(ctx, "a@example.org", nil)
	s.Rcpt(ctx, "b@example.net", nil)
	v := s.Data(ctx)
	if v.Decision != Reject || v.Reply.String() != "550 5.7.1 No DATA today" {
		t.Fatalf("data verdict %+v", v)
	}
	// A second message starts cleanly; the first was aborted.
	if v := s.Mail(ctx, "a@example.org", nil); v.Decision != Continue {
		t.Errorf("next mail: %+v", v)
	}
	s.Close()
	conns, commands, _ := m.seen()
	if conns != 1 {
		t.Errorf("%d connections, want 1 (version 6 needs no downgrade)", conns)
	}
	if !strings.Contains(commands, "TA") {
		t.Errorf("commands %q: want DATA then ABORT", commands)
	}
}

// TestLeadingSpace checks SMFIP_HDR_LEADSPC: the milter gets header values
// exactly as they are, and sends the whitespace of its own values itself.
func TestLeadingSpace(t *testing.T) {
	ctx := context.Background()
	add := append([]byte("hX-Lead\x00"), []byte("\tlead\x00")...)
	m := &v6Milter{
		protocol: gomilter.OptHeaderLeadingSpace | gomilter.OptNoData,
		eom:      [][]byte{add},
	}
	s := envelopeRun(t, ctx, newClient(t, Config{Addr: m.serve(t)}), "bob@example.net")
	hdr, body := splitMessage("Subject:  two spaces\r\nFrom:none\r\n\r\nbody\r\n")
	res, err := s.Message(ctx, hdr, body)
	if err != nil || res.Decision != Continue {
		t.Fatalf("Message = %+v, %v", res, err)
	}
	_, commands, headers := m.seen()
	if strings.Contains(commands, "T") {
		t.Errorf("DATA sent to a milter that asked not to get it: %q", commands)
	}
	if len(headers) != 2 || headers[0] != "Subject:  two spaces" || headers[1] != "From:none" {
		t.Errorf("milter saw %q", headers)
	}
	var out bytes.Buffer
	res.Apply(&out, hdr, body, nil)
	if want := "Subject:  two spaces\r\nFrom:none\r\nX-Lead:\tlead\r\n\r\nbody\r\n"; out.String() != want {
		t.Errorf("applied %q, want %q", out.String(), want)
	}
}
