// Package dovecot holds facteur's configuration for Dovecot 2.3 (Debian 12)
// and renders it. The files of this directory are what operators install
// (README.md); they are embedded here so that the test that runs a real
// Dovecot against them (internal/dovecottest, StartSQL) checks exactly those
// files, with their @PLACEHOLDER@s filled in.
package dovecot

import (
	"embed"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

//go:embed 99-facteur.conf dovecot-sql.conf.ext dovecot-sql-app.conf.ext dovecot-dict-sql.conf.ext
var files embed.FS

// Names lists the configuration files, in the order README.md describes
// them. 99-facteur.conf goes to conf.d/, the others to Params.DovecotDir.
var Names = []string{"99-facteur.conf", "dovecot-sql.conf.ext", "dovecot-sql-app.conf.ext", "dovecot-dict-sql.conf.ext"}

// Params are the values of the placeholders (README.md, "Placeholders").
type Params struct {
	DovecotDir  string // @DOVECOT_DIR@: where the .conf.ext files are, /etc/dovecot
	PGConnect   string // @PG_CONNECT@: libpq key=value string, "host=/run/postgresql dbname=facteur user=dovecot"
	MailRoot    string // @MAIL_ROOT@: facteur's mail_root, /var/mail/vhosts
	MailUser    string // @MAIL_USER@: the mail owner's name, vmail
	MailGroup   string // @MAIL_GROUP@: its group's name, vmail
	MailUID     int    // @MAIL_UID@: the mail owner's uid
	MailGID     int    // @MAIL_GID@: its gid
	FacteurUser string // @FACTEUR_USER@: the user facteur's queue runs as (owns the LMTP socket)
}

var placeholderRE = regexp.MustCompile(`@[A-Z][A-Z_]*@`)

// Raw returns the file name as it is in this directory, placeholders and all.
func Raw(name string) ([]byte, error) {
	return files.ReadFile(name)
}

// Render returns every file of Names with the placeholders replaced. It
// refuses values that would break the files: a relative path, a quote in the
// mail root (it sits inside SQL string literals), a line break anywhere, a
// uid or gid of 0 (Dovecot refuses to store mail as root).
func Render(p Params) (map[string][]byte, error) {
	for name, v := range map[string]string{"DovecotDir": p.DovecotDir, "MailRoot": p.MailRoot} {
		if !filepath.IsAbs(v) {
			return nil, fmt.Errorf("dovecot: %s %q is not an absolute path", name, v)
		}
	}
	if strings.ContainsAny(p.MailRoot, `'\%:`) {
		return nil, fmt.Errorf("dovecot: MailRoot %q: no quotes, backslashes, %% or ':' (it is written into SQL and mail locations)", p.MailRoot)
	}
	if p.MailUID <= 0 || p.MailGID <= 0 {
		return nil, fmt.Errorf("dovecot: mail owner %d:%d: Dovecot refuses root, and so does facteur", p.MailUID, p.MailGID)
	}
	vals := map[string]string{
		"@DOVECOT_DIR@":  strings.TrimRight(p.DovecotDir, "/"),
		"@PG_CONNECT@":   p.PGConnect,
		"@MAIL_ROOT@":    strings.TrimRight(p.MailRoot, "/"),
		"@MAIL_USER@":    p.MailUser,
		"@MAIL_GROUP@":   p.MailGroup,
		"@MAIL_UID@":     strconv.Itoa(p.MailUID),
		"@MAIL_GID@":     strconv.Itoa(p.MailGID),
		"@FACTEUR_USER@": p.FacteurUser,
	}
	for k, v := range vals {
		if v == "" || strings.ContainsAny(v, "\r\n\x00") || strings.Contains(v, "@") && k != "@PG_CONNECT@" {
			return nil, fmt.Errorf("dovecot: %s: empty, or holds a line break or '@'", k)
		}
	}
	out := make(map[string][]byte, len(Names))
	for _, name := range Names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var unknown []string
		s := placeholderRE.ReplaceAllStringFunc(string(b), func(ph string) string {
			v, ok := vals[ph]
			if !ok {
				unknown = append(unknown, ph)
				return ph
			}
			return v
		})
		if len(unknown) > 0 {
			return nil, fmt.Errorf("dovecot: %s: unknown placeholders %v", name, unknown)
		}
		out[name] = []byte(s)
	}
	return out, nil
}
