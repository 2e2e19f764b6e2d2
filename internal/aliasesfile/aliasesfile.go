// Package aliasesfile reads the aliases(5) format (/etc/aliases) and the
// destination lists of .forward and :include: files, as Postfix and sendmail
// write them.
//
// An aliases file is a sequence of logical lines "name: dest, dest, ...".
// Empty lines, lines of white space and lines whose first non-blank
// character is "#" are ignored; a line that begins with white space
// continues the logical line before it. The name ends at the first ":"
// outside double quotes; a quoted name may hold any character. Names are
// folded to lower case (Postfix does the same, for case-insensitive
// lookups).
//
// A destination list is split at commas outside double quotes and angle
// brackets. A destination that is one quoted string is unquoted (\" and \\
// escapes), so that "|/usr/bin/cmd -a, -b" keeps its comma. Each destination
// is one of: an address (user@domain, also written <user@domain>), a bare
// local user name, "\user" (the user's own mailbox, with no further
// forwarding), "|command", "/file/name" and ":include:/file/name".
//
// SECURITY: this package only parses; it opens no file. Its input may come
// from a user's .forward file, so it bounds what it keeps (MaxLine) and never
// fails on odd bytes: callers decide what a destination may do.
package aliasesfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxLine bounds a logical line; a longer one is an error for that entry.
const MaxLine = 64 << 10

// Kind says what a destination is.
type Kind int

// Destination kinds.
const (
	Address   Kind = iota + 1 // user@domain
	LocalUser                 // a bare local user name
	NoForward                 // \user: the user's own mailbox
	Command                   // |command
	File                      // /file/name (a trailing "/" means a Maildir)
	Include                   // :include:/file/name
)

var kindNames = [...]string{"", "address", "local user", "own mailbox", "command", "file", "include"}

func (k Kind) String() string {
	if k <= 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Destination is one parsed destination.
type Destination struct {
	Kind Kind
	// Value is the destination in facteur's stored form: "|command",
	// "/file", ":include:/file", "user" (LocalUser and NoForward, without
	// the backslash) or "user@domain".
	Value string
}

// Entry is one alias of an aliases file.
type Entry struct {
	Name         string // folded to lower case, unquoted
	Line         int    // the line where the entry starts
	Destinations []Destination
}

// Problem is an entry (or a line) that could not be read; parsing goes on
// after it, as newaliases does.
type Problem struct {
	Line int
	Err  error
}

func (p Problem) Error() string { return fmt.Sprintf("line %d: %v", p.Line, p.Err) }

// Parse reads an aliases file. Entries that cannot be parsed are reported
// as problems and left out; a repeated name keeps its first entry (Postfix's
// "duplicate entry" warning). err is an I/O error only.
func Parse(r io.Reader) (entries []Entry, problems []Problem, err error) {
	seen := map[string]int{}
	flush := func(text string, line int) {
		if strings.TrimSpace(text) == "" {
			return
		}
		e, perr := parseEntry(text)
		if perr != nil {
			problems = append(problems, Problem{Line: line, Err: perr})
			return
		}
		if first, dup := seen[e.Name]; dup {
			problems = append(problems, Problem{Line: line, Err: fmt.Errorf("duplicate entry %q (first on line %d): ignored", e.Name, first)})
			return
		}
		seen[e.Name] = line
		e.Line = line
		entries = append(entries, e)
	}
	err = logicalLines(r, func(text string, line int, tooLong bool) {
		if tooLong {
			problems = append(problems, Problem{Line: line, Err: fmt.Errorf("entry longer than %d bytes: ignored", MaxLine)})
			return
		}
		flush(text, line)
	})
	return entries, problems, err
}

// logicalLines calls fn with each logical line of r (continuations joined
// with a space), skipping comments and blank lines.
func logicalLines(r io.Reader, fn func(text string, line int, tooLong bool)) error {
	br := bufio.NewReader(r)
	var cur strings.Builder
	start, n := 0, 0
	long := false
	emit := func() {
		if start > 0 {
			fn(cur.String(), start, long)
		}
		cur.Reset()
		start, long = 0, false
	}
	for {
		raw, err := br.ReadString('\n')
		if raw == "" && err != nil {
			if errors.Is(err, io.EOF) {
				emit()
				return nil
			}
			return err
		}
		n++
		line := strings.TrimRight(raw, "\r\n")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "", strings.HasPrefix(trimmed, "#"):
			// Postfix: blank and comment lines are skipped; they do not
			// end a logical line.
		case line[0] == ' ' || line[0] == '\t':
			if start == 0 {
				// A continuation with nothing to continue: a new entry.
				start = n
			} else {
				cur.WriteByte(' ')
			}
			if cur.Len()+len(trimmed) > MaxLine {
				long = true
			} else {
				cur.WriteString(trimmed)
			}
		default:
			emit()
			start = n
			if len(trimmed) > MaxLine {
				long = true
			} else {
				cur.WriteString(trimmed)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				emit()
				return nil
			}
			return err
		}
	}
}

// parseEntry parses "name: destinations".
func parseEntry(text string) (Entry, error) {
	colon := -1
	inQuote := false
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case c == '\\' && inQuote && i+1 < len(text):
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ':' && !inQuote:
			colon = i
		}
		if colon >= 0 {
			break
		}
	}
	if colon < 0 {
		return Entry{}, errors.New("no \":\" after the alias name")
	}
	name := strings.TrimSpace(text[:colon])
	if strings.HasPrefix(name, "\"") {
		u, ok := unquote(name)
		if !ok {
			return Entry{}, fmt.Errorf("bad quoted name %s", name)
		}
		name = u
	}
	if name == "" {
		return Entry{}, errors.New("empty alias name")
	}
	name = strings.ToLower(name)
	dests, err := ParseList(text[colon+1:])
	if err != nil {
		return Entry{}, fmt.Errorf("alias %q: %w", name, err)
	}
	if len(dests) == 0 {
		return Entry{}, fmt.Errorf("alias %q has no destination", name)
	}
	return Entry{Name: name, Destinations: dests}, nil
}

// ParseList parses one comma-separated destination list (the value of an
// alias, or one line of a .forward file).
func ParseList(s string) ([]Destination, error) {
	var out []Destination
	for _, item := range splitList(s) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		d, err := Classify(item)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseForward parses a .forward or :include: file: each line is a
// destination list; blank lines and lines whose first non-blank character
// is "#" are ignored. A line that cannot be parsed is a problem and is left
// out.
func ParseForward(content string) ([]Destination, []Problem) {
	var out []Destination
	var problems []Problem
	for i, line := range strings.Split(content, "\n") {
		t := strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if len(t) > MaxLine {
			problems = append(problems, Problem{Line: i + 1, Err: fmt.Errorf("line longer than %d bytes", MaxLine)})
			continue
		}
		ds, err := ParseList(t)
		if err != nil {
			problems = append(problems, Problem{Line: i + 1, Err: err})
			continue
		}
		out = append(out, ds...)
	}
	return out, problems
}

// splitList splits s at commas outside double quotes and angle brackets.
func splitList(s string) []string {
	var items []string
	inQuote, angle := false, 0
	last := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote && i+1 < len(s):
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '<' && !inQuote:
			angle++
		case c == '>' && !inQuote && angle > 0:
			angle--
		case c == ',' && !inQuote && angle == 0:
			items = append(items, s[last:i])
			last = i + 1
		}
	}
	return append(items, s[last:])
}

// Classify parses one destination (already split from its list).
func Classify(item string) (Destination, error) {
	item = strings.TrimSpace(item)
	if strings.ContainsFunc(item, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		return Destination{}, fmt.Errorf("control character in destination %q", item)
	}
	if len(item) >= 2 && item[0] == '"' && item[len(item)-1] == '"' {
		u, ok := unquote(item)
		if !ok {
			return Destination{}, fmt.Errorf("bad quoted destination %s", item)
		}
		// A quoted command, file or include; anything else quoted is a
		// local part that needed quotes, kept as written.
		if strings.HasPrefix(u, "|") || strings.HasPrefix(u, "/") || hasPrefixFold(u, ":include:") ||
			strings.HasPrefix(u, "\\") {
			item = strings.TrimSpace(u)
		}
	}
	if strings.HasPrefix(item, "<") && strings.HasSuffix(item, ">") {
		item = strings.TrimSpace(item[1 : len(item)-1])
	}
	switch {
	case item == "":
		return Destination{}, errors.New("empty destination")
	case strings.HasPrefix(item, "|"):
		cmd := strings.TrimSpace(item[1:])
		if cmd == "" {
			return Destination{}, errors.New("empty command")
		}
		return Destination{Kind: Command, Value: "|" + cmd}, nil
	case strings.HasPrefix(item, "/"):
		return Destination{Kind: File, Value: item}, nil
	case hasPrefixFold(item, ":include:"):
		p := strings.TrimSpace(item[len(":include:"):])
		if !strings.HasPrefix(p, "/") {
			return Destination{Kind: Include}, fmt.Errorf("include file %q is not an absolute path", p)
		}
		return Destination{Kind: Include, Value: ":include:" + p}, nil
	case strings.HasPrefix(item, "\\"):
		u := strings.TrimSpace(item[1:])
		if !validUser(u) {
			return Destination{}, fmt.Errorf("bad user name in %q", item)
		}
		return Destination{Kind: NoForward, Value: strings.ToLower(u)}, nil
	case strings.ContainsRune(item, '@'):
		if strings.ContainsAny(item, " \t") && !strings.Contains(item, "\"") {
			return Destination{}, fmt.Errorf("bad address %q", item)
		}
		return Destination{Kind: Address, Value: item}, nil
	}
	if !validUser(item) {
		return Destination{}, fmt.Errorf("bad destination %q", item)
	}
	return Destination{Kind: LocalUser, Value: strings.ToLower(item)}, nil
}

// validUser accepts a local user name: no white space, "/", ":", quote or
// control character, and not starting with "-" or ".".
func validUser(u string) bool {
	if u == "" || len(u) > 256 || u[0] == '-' || u[0] == '.' {
		return false
	}
	return !strings.ContainsFunc(u, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune("/:\"\\,<>()", r)
	})
}

// unquote removes the double quotes around s and its \-escapes.
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	in := s[1 : len(s)-1]
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c == '\\' {
			if i+1 >= len(in) {
				return "", false
			}
			i++
			c = in[i]
		} else if c == '"' {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
