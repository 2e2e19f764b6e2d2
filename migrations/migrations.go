// Package migrations holds facteur's PostgreSQL schema as goose SQL
// migrations, embedded in the binary.
package migrations

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"sort"
)

// FS holds the *.sql migration files.
//
//go:embed *.sql
var FS embed.FS

// Hash returns a short digest of every migration's name and contents, so a
// test template database can be named after the schema it holds.
func Hash() string {
	names, _ := fs.Glob(FS, "*.sql")
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, _ := FS.ReadFile(n)
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(b)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
