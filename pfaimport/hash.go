package pfaimport

import (
	"errors"
	"regexp"
	"strings"

	"github.com/facteur/facteur/lookups/passwd"
)

// PostfixAdmin's `encrypt` setting decides what its password columns hold
// (functions.inc.php, pacrypt):
//
//	md5crypt, php_crypt:MD5      bare "$1$salt$hash"
//	php_crypt:SHA256 / :SHA512   bare "$5$…" / "$6$…" (PostfixAdmin's default
//	                             is php_crypt:SHA512 in recent releases)
//	php_crypt:BLOWFISH           bare "$2y$…"
//	system, mysql_encrypt,
//	php_crypt:DES                bare 13-character DES crypt
//	md5                          bare 32 hex digits, MD5 of the password
//	cleartext                    the password itself
//	dovecot:SCHEME, sha512.b64,
//	php_crypt:…:{PREFIX}         "{SCHEME}…", as doveadm pw writes it
//	authlib                      courier's "{MD5RAW}hex", "{MD5}base64",
//	                             "{SHA}base64", "{crypt}…", "{MD5CRYPT}…"
//
// facteur stores Dovecot's {SCHEME} form, so a bare value gets the prefix
// that names what it is, and courier's names that Dovecot does not know are
// renamed. Verification is left to lookups/passwd and Dovecot; facteur's
// login path rewrites any of these with its own scheme at the next login.

var (
	desCryptRE = regexp.MustCompile(`^[./0-9A-Za-z]{13}$`)
	hexMD5RE   = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)
)

// courier authlib scheme names that Dovecot spells differently.
var courierSchemes = map[string]string{
	"MD5RAW":   "PLAIN-MD5",
	"MD5CRYPT": "MD5-CRYPT",
}

// hashChecker parses stored hashes; it never hashes anything.
var hashChecker = func() *passwd.Hasher {
	h, err := passwd.New(passwd.Options{})
	if err != nil {
		panic(err)
	}
	return h
}()

// convertHash returns stored in Dovecot's {SCHEME} form. bareScheme, when
// not empty, is the scheme of bare values that are not crypt strings (the
// operator knows PostfixAdmin's `encrypt` setting); otherwise 32 hex digits
// are PLAIN-MD5, 13 crypt characters DES crypt, and anything else cleartext.
// warn says what the operator should know: a value lookups/passwd cannot
// verify (Dovecot may still), a value taken as cleartext, no password.
func convertHash(stored, bareScheme string) (hash, warn string) {
	if stored == "" {
		return "", "no password: the mailbox receives mail but cannot log in until one is set"
	}
	if name, rest, ok := splitScheme(stored); ok {
		up := strings.ToUpper(name)
		if d, ok := courierSchemes[up]; ok {
			name = d
		}
		hash = "{" + name + "}" + rest
	} else {
		switch {
		case strings.HasPrefix(stored, "$1$"):
			hash = "{MD5-CRYPT}" + stored
		case strings.HasPrefix(stored, "$5$"):
			hash = "{SHA256-CRYPT}" + stored
		case strings.HasPrefix(stored, "$6$"):
			hash = "{SHA512-CRYPT}" + stored
		case strings.HasPrefix(stored, "$2a$"), strings.HasPrefix(stored, "$2b$"), strings.HasPrefix(stored, "$2y$"):
			hash = "{BLF-CRYPT}" + stored
		case strings.HasPrefix(stored, "$argon2id$"):
			hash = "{ARGON2ID}" + stored
		case strings.HasPrefix(stored, "$argon2i$"):
			hash = "{ARGON2I}" + stored
		case strings.HasPrefix(stored, "$"):
			hash = "{CRYPT}" + stored
		case bareScheme != "":
			hash = "{" + strings.ToUpper(bareScheme) + "}" + stored
		case hexMD5RE.MatchString(stored):
			hash = "{PLAIN-MD5}" + strings.ToLower(stored)
		case desCryptRE.MatchString(stored):
			hash = "{CRYPT}" + stored
		default:
			hash = "{PLAIN}" + stored
			warn = "stored in cleartext (PostfixAdmin's encrypt = cleartext): imported as {PLAIN}, rehashed at the next login; give --bare-scheme if these are hashes"
		}
	}
	// A NUL password makes Verify parse the value without computing a hash.
	if _, _, err := hashChecker.Verify(hash, "\x00"); err != nil {
		scheme, _ := passwd.Scheme(hash)
		switch {
		case errors.Is(err, passwd.ErrUnsupported) && scheme == "CRYPT":
			warn = "DES crypt: Dovecot verifies it, facteur's own logins (submission, admin) cannot; have the password reset"
		case errors.Is(err, passwd.ErrUnsupported):
			warn = "scheme " + scheme + ": Dovecot may verify it, facteur's own logins (submission, admin) cannot; have the password reset"
		default:
			warn = "malformed " + scheme + " value: no login can succeed until the password is reset"
		}
	}
	return hash, warn
}

// splitScheme splits "{SCHEME}rest" where SCHEME is a plausible scheme name.
func splitScheme(s string) (name, rest string, ok bool) {
	if !strings.HasPrefix(s, "{") {
		return "", s, false
	}
	i := strings.IndexByte(s, '}')
	if i < 2 {
		return "", s, false
	}
	name = s[1:i]
	for _, c := range name {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", s, false
		}
	}
	return name, s[i+1:], true
}
