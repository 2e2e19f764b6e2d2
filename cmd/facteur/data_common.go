package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
)

// This file holds what the data commands (domain, mailbox, alias, …) share:
// the audited store, input normalisation, passwords and output.

// dataStore opens the store and returns a context whose writes are audited
// as done by "cli:<OS user>".
func (a *app) dataStore(cmd *cobra.Command) (*store.Store, context.Context, error) {
	st, err := a.store(cmd.Context())
	if err != nil {
		return nil, nil, err
	}
	return st, store.WithActor(cmd.Context(), dataActor()), nil
}

// dataActor names the operator in the audit log.
func dataActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if n := os.Getenv("USER"); n != "" {
		return "cli:" + n
	}
	return "cli:uid " + strconv.Itoa(os.Getuid())
}

// dataBadInput is an error in what the operator typed: one line, exit status 1.
func dataBadInput(format string, args ...any) error {
	return &exitError{code: exitFailure, err: fmt.Errorf(format, args...)}
}

// dataError turns a store error into the command's error: one line, and exit
// status 1 for the errors the operator's input causes (an unknown name, a
// duplicate, a broken rule, a limit).
func dataError(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrLimitExceeded, store.ErrInUse} {
		if errors.Is(err, k) {
			return &exitError{code: exitFailure, err: err}
		}
	}
	return err
}

// dataNormDomain returns the canonical form of a domain typed by the operator
// (IDNA A-labels, lower case): "Bücher.Example" is "xn--bcher-kva.example".
func dataNormDomain(s string) (string, error) {
	d, err := address.Domain(s)
	if err != nil {
		return "", dataBadInput("domain %q: %v", s, err)
	}
	return d, nil
}

// dataNormAddress returns the canonical form of an address typed by the operator.
func dataNormAddress(s string) (string, error) {
	a, err := address.Normalize(s)
	if err != nil {
		return "", dataBadInput("address %q: %v", s, err)
	}
	return a, nil
}

// dataNormDomainOrAddress accepts a domain, an address or "@domain".
func dataNormDomainOrAddress(s string) (string, error) {
	k, err := address.NormalizeDomainOrAddress(s)
	if err != nil {
		return "", dataBadInput("%q: %v", s, err)
	}
	return k, nil
}

// dataNormAliasAddress accepts local@domain or the catch-all @domain.
func dataNormAliasAddress(s string) (string, error) {
	if !strings.Contains(s, "@") {
		return "", dataBadInput("alias %q: give local@domain, or @domain for a catch-all", s)
	}
	return dataNormDomainOrAddress(s)
}

// dataNormDestination normalises an alias destination: addresses are
// canonicalised; commands (|cmd), files (/path), :include: and bare local
// user names (allowed on local domains only; the database checks) are kept.
func dataNormDestination(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", dataBadInput("empty alias destination")
	case dataIsCommandOrFile(s):
		return s, nil
	case !strings.Contains(s, "@"):
		return strings.ToLower(s), nil
	}
	return dataNormAddress(s)
}

// dataIsCommandOrFile reports whether an alias destination is a |command,
// a /file or an :include: file.
func dataIsCommandOrFile(s string) bool {
	return strings.HasPrefix(s, "|") || strings.HasPrefix(s, "/") || strings.HasPrefix(strings.ToLower(s), ":include:")
}

// dataNormUsername returns an admin user name in its stored form.
func dataNormUsername(s string) (string, error) {
	u := strings.ToLower(strings.TrimSpace(s))
	if u == "" || strings.ContainsFunc(u, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", dataBadInput("admin user name %q: no spaces or control characters, not empty", s)
	}
	return u, nil
}

// dataHasher builds the password hasher from the configuration's [passwords].
func (a *app) dataHasher() (*passwd.Hasher, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	return cfg.hasher()
}

// dataReadPassword reads a new password: the first line of standard input with
// fromStdin, else twice from the terminal without echo. Never from argv.
func dataReadPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", dataBadInput("empty password on standard input")
		}
		return pw, nil
	}
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", dataBadInput("standard input is not a terminal: give the password with --password-stdin")
	}
	prompt := func(p string) (string, error) {
		fmt.Fprint(cmd.ErrOrStderr(), p)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	pw, err := prompt("New password: ")
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", dataBadInput("empty password")
	}
	again, err := prompt("Repeat password: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", dataBadInput("the passwords differ")
	}
	return pw, nil
}

// dataHashNewPassword reads a password and hashes it with the configured scheme.
func (a *app) dataHashNewPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	h, err := a.dataHasher()
	if err != nil {
		return "", err
	}
	pw, err := dataReadPassword(cmd, fromStdin)
	if err != nil {
		return "", err
	}
	hash, err := h.Hash(pw)
	if err != nil {
		return "", dataBadInput("password: %v", err)
	}
	return hash, nil
}

// dataEmit prints v as JSON with --json, else calls human.
func (a *app) dataEmit(cmd *cobra.Command, v any, human func(w io.Writer)) error {
	out := cmd.OutOrStdout()
	if a.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(out)
	return nil
}

// dataEmitDeleted reports a removal.
func (a *app) dataEmitDeleted(cmd *cobra.Command, kind, key string) error {
	return a.dataEmit(cmd, map[string]string{"deleted": kind, "key": key}, func(w io.Writer) {
		fmt.Fprintf(w, "deleted %s %s\n", kind, key)
	})
}

// dataTable prints aligned columns: a header row, then rows.
func dataTable(w io.Writer, header []string, rows [][]string) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	dataTrimLines(w, b.String())
}

// dataTrimLines writes s without the blanks that padding leaves at the end
// of lines.
func dataTrimLines(w io.Writer, s string) {
	for _, l := range strings.SplitAfter(s, "\n") {
		if l == "" {
			continue
		}
		io.WriteString(w, strings.TrimRight(l, " \n")+"\n")
	}
}

// dataFields prints "name: value" lines with the values aligned.
func dataFields(w io.Writer, kv ...string) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "" { // a continuation line
			fmt.Fprintf(tw, "\t%s\n", kv[i+1])
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
	}
	tw.Flush()
	dataTrimLines(w, b.String())
}

func dataYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dataOrDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}

// dataListFlags adds --search, --limit and --offset and returns the options
// they fill.
func dataListFlags(cmd *cobra.Command) *store.ListOptions {
	o := &store.ListOptions{}
	cmd.Flags().StringVar(&o.Search, "search", "", "only entries containing this text (case-insensitive)")
	cmd.Flags().IntVar(&o.Limit, "limit", 0, "at most this many entries (0: all)")
	cmd.Flags().IntVar(&o.Offset, "offset", 0, "skip this many entries")
	return o
}

// dataParseSize reads a byte count: a number with an optional binary suffix
// (K, M, G, T, optionally followed by "iB" or "B"): "512M", "2GiB", "1000".
func dataParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || v <= 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, optionally with K, M, G or T", s)
	}
	return v * mult, nil
}

// dataIsUnlimited reports whether s spells "no limit" for a limit flag.
func dataIsUnlimited(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "unlimited", "none", "-":
		return true
	}
	return false
}

// dataSizeLimit reads a nullable byte limit flag: nil means unlimited.
func dataSizeLimit(name, s string) (*int64, error) {
	if dataIsUnlimited(s) {
		return nil, nil
	}
	v, err := dataParseSize(s)
	if err != nil {
		return nil, dataBadInput("--%s: %v", name, err)
	}
	return &v, nil
}

// dataCountLimit reads a nullable count limit flag: nil means unlimited.
func dataCountLimit(name, s string) (*int32, error) {
	if dataIsUnlimited(s) {
		return nil, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil || v < 0 {
		return nil, dataBadInput("--%s %q: want a count (0 or more) or \"unlimited\"", name, s)
	}
	n := int32(v)
	return &n, nil
}

// dataOptText reads a nullable text flag: "" or "none" stores NULL.
func dataOptText(s string) *string {
	if strings.TrimSpace(s) == "" || strings.EqualFold(strings.TrimSpace(s), "none") {
		return nil
	}
	v := strings.TrimSpace(s)
	return &v
}

// dataFormatSize prints bytes for people.
func dataFormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGT"[exp]) + "iB"
}

// dataFormatLimit prints an optional byte limit.
func dataFormatLimit(n *int64) string {
	if n == nil {
		return "unlimited"
	}
	return dataFormatSize(*n)
}

// dataFormatCount prints a count against an optional maximum: "3/10", "3".
func dataFormatCount(n int64, max *int32) string {
	if max == nil {
		return strconv.FormatInt(n, 10)
	}
	return fmt.Sprintf("%d/%d", n, *max)
}

// dataChanged reports whether the flag was given on the command line.
func dataChanged(cmd *cobra.Command, name string) bool { return cmd.Flags().Changed(name) }

// dataNothingToChange is the error of an update without any flag.
func dataNothingToChange(cmd *cobra.Command) error {
	return dataBadInput("%s: nothing to change (see --help)", cmd.CommandPath())
}

// dataParseID reads the numeric id of a row.
func dataParseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, dataBadInput("%q is not an id (see the list command)", s)
	}
	return id, nil
}

// dataNotFoundAs rewords ErrNotFound from a create, where it means that a
// row the new one refers to (its domain, its mailbox) does not exist.
func dataNotFoundAs(err error, format string, args ...any) error {
	if errors.Is(err, store.ErrNotFound) {
		return &store.Error{Kind: store.ErrNotFound, Message: fmt.Sprintf(format, args...)}
	}
	return err
}
