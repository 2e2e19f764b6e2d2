package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// Maildir++ quota (https://www.courier-mta.org/imap/README.maildirquota.html),
// the maildirsize file that Dovecot's maildir quota backend reads and writes
// too. Its first line is the quota definition ("<bytes>S"); every other line
// is "<bytes> <messages>", a delta, and the usage is their sum. Deliveries
// append a line with one write on an O_APPEND descriptor; the file is
// rebuilt from a scan of the Maildir when it is missing, when its definition
// differs from the mailbox's quota, when it has grown to 5120 bytes, or when
// it says the delivery would go over quota and it has not changed for 15
// minutes (a client may have deleted mail without updating it).

const (
	maildirsizeName  = "maildirsize"
	maildirsizeLimit = 5120
	maildirsizeStale = 15 * time.Minute
)

// maildirsize is a Maildir's usage as its maildirsize file says.
type maildirsize struct {
	bytes, messages int64
}

// loadMaildirsize reads maildirsize for a mailbox with quota bytes, and
// rebuilds it when Maildir++ says so; size is the message about to be
// delivered (for the staleness rule).
func (a *Agent) loadMaildirsize(md *os.Root, quota, size int64) (*maildirsize, error) {
	def := strconv.FormatInt(quota, 10) + "S"
	data, err := md.ReadFile(maildirsizeName)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return a.recalc(md, def)
	case err != nil:
		return nil, err
	case len(data) >= maildirsizeLimit:
		return a.recalc(md, def)
	}
	m, fileDef, ok := parseMaildirsize(data)
	if !ok || fileDef != def {
		return a.recalc(md, def)
	}
	if m.bytes+size > quota {
		fi, err := md.Stat(maildirsizeName)
		if err != nil {
			return nil, err
		}
		if time.Since(fi.ModTime()) > maildirsizeStale {
			return a.recalc(md, def)
		}
	}
	return m, nil
}

// parseMaildirsize sums a maildirsize file. ok is false when it is
// malformed (then it is rebuilt). A last line without its newline is a
// write in progress or a torn one; it is ignored.
func parseMaildirsize(data []byte) (m *maildirsize, def string, ok bool) {
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 {
		return nil, "", false
	}
	m = &maildirsize{}
	def = strings.TrimSpace(lines[0])
	for _, l := range lines[1 : len(lines)-1] {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, "", false
		}
		b, err1 := strconv.ParseInt(f[0], 10, 64)
		n, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, "", false
		}
		m.bytes += b
		m.messages += n
	}
	return m, def, true
}

// recalc scans the Maildir (new/ and cur/ of INBOX and of every Maildir++
// folder, ".name") and writes a fresh maildirsize: to tmp/ first, then
// renamed over the old one, as Maildir++ says.
func (a *Agent) recalc(md *os.Root, def string) (*maildirsize, error) {
	m := &maildirsize{}
	dirs := []string{"."}
	top, err := fs.ReadDir(md.FS(), ".")
	if err != nil {
		return nil, err
	}
	for _, e := range top {
		if n := e.Name(); len(n) > 1 && n[0] == '.' && n != ".." && e.IsDir() {
			dirs = append(dirs, n)
		}
	}
	for _, d := range dirs {
		for _, sub := range []string{"new", "cur"} {
			p := path.Join(d, sub) // fs.FS paths: "new", ".Sent/new"
			ents, err := fs.ReadDir(md.FS(), p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			for _, e := range ents {
				if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
					continue
				}
				sz, ok := parseSize(e.Name())
				if !ok {
					fi, err := e.Info()
					if errors.Is(err, fs.ErrNotExist) {
						continue // moved or expunged meanwhile
					}
					if err != nil {
						return nil, err
					}
					sz = fi.Size()
				}
				m.bytes += sz
				m.messages++
			}
		}
	}
	content := fmt.Sprintf("%s\n%d %d\n", def, m.bytes, m.messages)
	name, f, err := a.createTmp(md)
	if err != nil {
		return nil, err
	}
	tmp := "tmp/" + name
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = md.Rename(tmp, maildirsizeName)
	}
	if err != nil {
		_ = md.Remove(tmp)
		return nil, fmt.Errorf("rewrite maildirsize: %w", err)
	}
	return m, nil
}

// add appends a "<bytes> <messages>" line in one write. A missing file is
// left missing: the next delivery rebuilds it from a scan, which counts this
// message.
func (m *maildirsize) add(md *os.Root, bytes, messages int64) error {
	f, err := md.OpenFile(maildirsizeName, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	line := []byte(fmt.Sprintf("%d %d\n", bytes, messages))
	_, err = f.Write(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		m.bytes += bytes
		m.messages += messages
	}
	return err
}
