//go:build unix

package health

import (
	"fmt"
	"syscall"
)

// FreeBytes returns the space available to unprivileged users on the file
// system holding path, in bytes (statfs f_bavail).
func FreeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil //nolint:unconvert // field types differ by platform
}

// TotalBytes returns the size of the file system holding path, in bytes.
func TotalBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint64(st.Blocks) * uint64(st.Bsize), nil //nolint:unconvert // field types differ by platform
}
