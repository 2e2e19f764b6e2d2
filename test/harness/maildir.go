package harness

import (
	"bufio"
	"errors"
	"io/fs"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// MaildirMessageIDs returns, for the Maildir at dir, how many files in new/
// and cur/ carry each Message-ID (angle brackets kept). A missing Maildir
// has none.
func MaildirMessageIDs(t testing.TB, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			id, err := messageIDOf(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[id]++
		}
	}
	return out
}

func messageIDOf(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, err := textproto.NewReader(bufio.NewReader(f)).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return "", err
	}
	return strings.TrimSpace(h.Get("Message-Id")), nil
}

// CountFiles returns the number of regular files under dir (0 if dir does
// not exist), and their paths relative to dir.
func CountFiles(t testing.TB, dir string) (int, []string) {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(names), names
}

// CountSpoolFiles counts the message files of a spool directory, committed
// (q/) or not (incoming/); what else the spool's root holds (the queue
// role's lock, the pickup socket) is not a message.
func CountSpoolFiles(t testing.TB, dir string) (int, []string) {
	t.Helper()
	var names []string
	for _, sub := range []string{"incoming", "q"} {
		_, ns := CountFiles(t, filepath.Join(dir, sub))
		for _, n := range ns {
			names = append(names, filepath.Join(sub, n))
		}
	}
	return len(names), names
}
