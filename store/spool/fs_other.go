//go:build unix && !linux

package spool

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errNoRenameNoReplace: outside Linux the spool always uses link(2), which
// never replaces a file either.
var errNoRenameNoReplace = errors.New("renameat2 RENAME_NOREPLACE not supported")

func renameNoReplace(oldpath, newpath string) error { return errNoRenameNoReplace }

func syncFile(f *os.File) error { return f.Sync() }

func freeBytes(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	if int64(st.Bavail) < 0 { // below the root reserve, on the BSDs
		return 0, nil
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
