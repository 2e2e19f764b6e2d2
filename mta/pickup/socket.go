package pickup

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// SocketMode is the pickup socket's mode: every local user may connect;
// what each may do is decided from its peer credentials.
const SocketMode = 0o666

// Listen creates the pickup socket at path and returns its listener, which
// removes the socket when closed.
//
// The directory must exist, be owned by root or by this process's user, and
// not be writable by group or others unless it is sticky (as /tmp), so that
// nobody else can replace the socket. A file already at path is removed only
// when it is a socket on which no daemon answers (a stale socket left by a
// crash) and, in a sticky directory, only when this process's user owns it.
// The socket gets SocketMode, and the directory, when this process's user
// owns it, gets the search permission (o+x, g+x) that other users need to
// reach the socket; its contents stay as private as they were.
func Listen(path string, log *slog.Logger) (*net.UnixListener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("pickup: no socket path")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("pickup: socket path: %w", err)
	}
	// A unix socket path holds at most 107 bytes (sun_path, unix(7)).
	if len(path) > 107 {
		return nil, fmt.Errorf("pickup: socket path %s is %d bytes long, more than the 107 a unix socket allows", path, len(path))
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("pickup: socket directory: %w", err)
	}
	if !di.IsDir() {
		return nil, fmt.Errorf("pickup: socket directory %s is not a directory", dir)
	}
	euid := uint32(os.Geteuid())
	downer := ownerOf(di)
	if downer != 0 && downer != euid {
		return nil, fmt.Errorf("pickup: socket directory %s belongs to uid %d, not to root or to this process (uid %d)", dir, downer, euid)
	}
	sticky := di.Mode()&fs.ModeSticky != 0
	if di.Mode().Perm()&0o022 != 0 && !sticky {
		return nil, fmt.Errorf("pickup: socket directory %s is writable by group or others (mode %o): another user could replace the socket", dir, di.Mode().Perm())
	}

	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("pickup: %s exists and is not a socket; not removing it", path)
		}
		if sticky && ownerOf(fi) != euid {
			return nil, fmt.Errorf("pickup: socket %s belongs to uid %d; not removing it", path, ownerOf(fi))
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("pickup: socket %s is in use: another daemon is running", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pickup: remove stale socket: %w", err)
		}
		log.Info("stale pickup socket removed", "path", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pickup: %w", err)
	}

	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("pickup: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, SocketMode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("pickup: socket mode: %w", err)
	}
	if want := di.Mode().Perm() | 0o011; downer == euid && !sticky && want != di.Mode().Perm() {
		mode := want | (di.Mode() & (fs.ModeSetgid | fs.ModeSetuid))
		if err := os.Chmod(dir, mode); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("pickup: make socket directory searchable: %w", err)
		}
		log.Info("socket directory made searchable so that local users reach the socket", "dir", dir, "mode", fmt.Sprintf("%o", want))
	}
	return ln, nil
}

// ownerOf returns the uid owning a file.
func ownerOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}
