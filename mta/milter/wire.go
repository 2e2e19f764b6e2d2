package milter

import (
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// dataCommand sends SMFIC_DATA and reads the answer. go-milter's client has
// no method for it, so this is the one command written here; the packet
// format is go-milter's (a 4-byte big-endian length, the command byte, the
// data).
func dataCommand(m *conn) (*gomilter.Action, error) {
	cont := &gomilter.Action{Code: gomilter.ActContinue}
	if m.sess.ProtocolOption(gomilter.OptNoData) {
		return cont, nil
	}
	timeout := m.cfg.CommandTimeout
	m.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := m.nc.Write([]byte{0, 0, 0, 1, byte(gomilter.CodeData)})
	m.nc.SetWriteDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("milter: data: %w", err)
	}
	if m.sess.ProtocolOption(gomilter.OptNoDataReply) {
		return cont, nil
	}
	for {
		code, data, err := readPacket(m, timeout)
		if err != nil {
			return nil, fmt.Errorf("milter: data: %w", err)
		}
		if code == 'p' { // SMFIR_PROGRESS
			continue
		}
		act := &gomilter.Action{Code: gomilter.ActionCode(code)}
		switch act.Code {
		case gomilter.ActAccept, gomilter.ActContinue, gomilter.ActDiscard, gomilter.ActReject, gomilter.ActTempFail:
		case gomilter.ActReplyCode:
			if len(data) <= 4 {
				return nil, fmt.Errorf("%w: short reply code", errProtocol)
			}
			if act.SMTPCode, err = strconv.Atoi(string(data[:3])); err != nil {
				return nil, fmt.Errorf("%w: reply code %q", errProtocol, data[:3])
			}
			text := data[4:]
			for i, c := range text {
				if c == 0 {
					text = text[:i]
					break
				}
			}
			act.SMTPText = string(text)
		default:
			return nil, fmt.Errorf("%w: unexpected answer %q to DATA", errProtocol, rune(code))
		}
		return act, nil
	}
}

// maxPacket bounds a packet read here, as go-milter bounds its own.
const maxPacket = 1 << 20

func readPacket(m *conn, timeout time.Duration) (byte, []byte, error) {
	m.nc.SetReadDeadline(time.Now().Add(timeout))
	defer m.nc.SetReadDeadline(time.Time{})
	var n uint32
	if err := binary.Read(m.nc, binary.BigEndian, &n); err != nil {
		return 0, nil, err
	}
	if n == 0 || n > maxPacket {
		return 0, nil, fmt.Errorf("%w: packet length %d", errProtocol, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(m.nc, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}
