//go:build !linux

package pickup

import (
	"errors"
	"net"
)

// peerUID is implemented on Linux only (SO_PEERCRED); elsewhere every
// connection is refused.
func peerUID(*net.UnixConn) (uint32, error) {
	return 0, errors.New("peer credentials: not supported on this system")
}
