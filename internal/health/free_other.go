//go:build !unix

package health

import "errors"

var errNoStatfs = errors.New("free space is not known on this system")

// FreeBytes is not implemented on this system.
func FreeBytes(path string) (uint64, error) { return 0, errNoStatfs }

// TotalBytes is not implemented on this system.
func TotalBytes(path string) (uint64, error) { return 0, errNoStatfs }
