//go:build linux

package spool

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errNoRenameNoReplace means the file system or kernel lacks
// renameat2(RENAME_NOREPLACE); the caller falls back to link(2).
var errNoRenameNoReplace = errors.New("renameat2 RENAME_NOREPLACE not supported")

// renameNoReplace renames oldpath to newpath unless newpath exists, in which
// case it fails with EEXIST (which matches fs.ErrExist).
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch err {
	case nil:
		return nil
	case unix.EINVAL, unix.ENOSYS, unix.ENOTSUP:
		return errNoRenameNoReplace
	}
	return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: err}
}

// syncFile flushes a newly written file's data and the metadata needed to
// read it back (its size) to stable storage.
func syncFile(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// freeBytes returns the space available to unprivileged users on the file
// system holding path.
func freeBytes(path string) (uint64, error) {
	var st unix.Statfs_t
	for {
		err := unix.Statfs(path, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return st.Bavail * uint64(st.Bsize), nil
	}
}
