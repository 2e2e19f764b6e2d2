package passwd

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/go-crypt/crypt/algorithm/md5crypt"
	"github.com/go-crypt/crypt/algorithm/shacrypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// kind is how a scheme's (decoded) value is read.
type kind int

const (
	kindArgon2   kind = iota + 1 // $argon2i$ or $argon2id$ string
	kindCrypt                    // crypt(3) string, dispatched on its $id$
	kindMD5Crypt                 // $1$ string only
	kindMD5                      // $1$ string, or else a PLAIN-MD5 digest (Dovecot's {MD5})
	kindDigest                   // hash(password [+ salt]), raw bytes
	kindPlain                    // the password itself
)

// encoding is how a scheme's value is encoded in the stored string.
type encoding int

const (
	encNone encoding = iota
	encHex
	encBase64
)

// schemeInfo describes one Dovecot scheme name.
type schemeInfo struct {
	kind    kind
	enc     encoding         // default encoding
	newHash func() hash.Hash // kindDigest
	salted  bool             // kindDigest: salt follows the digest
	alg     alg              // kindDigest, kindPlain: the algorithm, for upgrade decisions
}

// schemes maps Dovecot's scheme names (password-scheme.c) to how they are read.
var schemes = map[string]schemeInfo{
	"ARGON2ID":     {kind: kindArgon2},
	"ARGON2I":      {kind: kindArgon2},
	"CRYPT":        {kind: kindCrypt},
	"BLF-CRYPT":    {kind: kindCrypt},
	"SHA256-CRYPT": {kind: kindCrypt},
	"SHA512-CRYPT": {kind: kindCrypt},
	"MD5-CRYPT":    {kind: kindMD5Crypt},
	"MD5":          {kind: kindMD5},
	"PLAIN-MD5":    {kind: kindDigest, enc: encHex, newHash: md5.New, alg: algMD5},
	"LDAP-MD5":     {kind: kindDigest, enc: encBase64, newHash: md5.New, alg: algMD5},
	"SMD5":         {kind: kindDigest, enc: encBase64, newHash: md5.New, salted: true, alg: algSMD5},
	"SHA":          {kind: kindDigest, enc: encBase64, newHash: sha1.New, alg: algSHA1},
	"SHA1":         {kind: kindDigest, enc: encBase64, newHash: sha1.New, alg: algSHA1},
	"SSHA":         {kind: kindDigest, enc: encBase64, newHash: sha1.New, salted: true, alg: algSSHA},
	"SHA256":       {kind: kindDigest, enc: encBase64, newHash: sha256.New, alg: algSHA256},
	"SSHA256":      {kind: kindDigest, enc: encBase64, newHash: sha256.New, salted: true, alg: algSSHA256},
	"SHA512":       {kind: kindDigest, enc: encBase64, newHash: sha512.New, alg: algSHA512},
	"SSHA512":      {kind: kindDigest, enc: encBase64, newHash: sha512.New, salted: true, alg: algSSHA512},
	"PLAIN":        {kind: kindPlain, alg: algPlain},
	"CLEARTEXT":    {kind: kindPlain, alg: algPlain},
	"CLEAR":        {kind: kindPlain, alg: algPlain},
}

// alg is the algorithm a stored value turned out to use.
type alg int

const (
	algArgon2ID alg = iota + 1
	algArgon2I
	algBcrypt
	algSHA512Crypt
	algSHA256Crypt
	algMD5Crypt
	algMD5
	algSMD5
	algSHA1
	algSSHA
	algSHA256
	algSSHA256
	algSHA512
	algSSHA512
	algPlain
)

// parsed is a stored value, decoded and checked, ready to match.
type parsed struct {
	alg     alg
	argonM  uint32 // Argon2 m= (KiB)
	argonT  uint32 // Argon2 t=
	argonP  uint8  // Argon2 p=
	cost    int    // bcrypt cost; SHA-crypt rounds
	salt    []byte // Argon2, SHA-crypt, MD5-crypt and salted digests
	key     []byte // Argon2, bcrypt (the whole crypt string), SHA-crypt and MD5-crypt (encoded), digests, plain
	newHash func() hash.Hash
}

// splitScheme splits "{SCHEME}rest" as Dovecot's password_get_scheme does: the scheme runs to the
// first '}'.
func splitScheme(stored string) (name, rest string, ok bool) {
	if !strings.HasPrefix(stored, "{") {
		return "", stored, false
	}
	i := strings.IndexByte(stored, '}')
	if i < 0 {
		return "", stored, false
	}
	return stored[1:i], stored[i+1:], true
}

// lookupScheme finds a scheme name, with an optional encoding suffix, case-insensitively as Dovecot
// does. The returned error never quotes the name: a mistyped stored value could be a password.
func lookupScheme(name string) (schemeInfo, string, error) {
	base, suffix, _ := strings.Cut(strings.ToUpper(name), ".")
	info, ok := schemes[base]
	if !ok {
		return schemeInfo{}, "", fmt.Errorf("%w: unknown scheme", ErrUnsupported)
	}
	switch suffix {
	case "", "HEX", "B64", "BASE64":
	default:
		return schemeInfo{}, "", fmt.Errorf("%w: %s: unknown encoding suffix", ErrUnsupported, base)
	}
	return info, suffix, nil
}

func malformed(scheme, why string) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, scheme, why)
}

// parse reads a stored value into a parsed hash, without computing anything expensive.
func (h *Hasher) parse(stored string) (*parsed, error) {
	name, payload, ok := splitScheme(stored)
	var (
		info   schemeInfo
		suffix string
		err    error
	)
	switch {
	case ok:
		info, suffix, err = lookupScheme(name)
		if err != nil {
			return nil, err
		}
		name, _, _ = strings.Cut(strings.ToUpper(name), ".")
	case strings.HasPrefix(stored, "$1$"):
		// Dovecot's password_get_scheme: a bare $1$ is MD5-CRYPT whatever the default.
		name, info = "MD5-CRYPT", schemes["MD5-CRYPT"]
	default:
		info, suffix = h.defScheme, h.defEncName
		name, _, _ = strings.Cut(strings.ToUpper(h.opts.DefaultScheme), ".")
	}
	if payload == "" {
		return nil, malformed(name, "empty value")
	}
	return parseValue(name, info, suffix, payload)
}

// parseValue decodes payload per scheme info and encoding suffix (Dovecot's password_decode).
func parseValue(name string, info schemeInfo, suffix, payload string) (*parsed, error) {
	enc := info.enc
	switch suffix {
	case "HEX":
		enc = encHex
	case "B64", "BASE64":
		enc = encBase64
	}
	rawLen := 0
	if info.kind == kindDigest && !info.salted {
		rawLen = info.newHash().Size()
	}
	var raw []byte
	switch {
	case enc == encNone:
		raw = []byte(payload)
	case suffix == "" && rawLen > 0 && len(payload) == 2*rawLen:
		// Dovecot guesses between hex and base64 by length when no suffix is given.
		var err error
		if raw, err = hex.DecodeString(payload); err != nil {
			raw, err = decodeBase64(payload)
			if err != nil {
				return nil, malformed(name, "neither hex nor base64")
			}
		}
	case suffix == "" && rawLen > 0:
		var err error
		if raw, err = decodeBase64(payload); err != nil {
			return nil, malformed(name, "invalid base64")
		}
	case enc == encHex:
		var err error
		if raw, err = hex.DecodeString(payload); err != nil {
			return nil, malformed(name, "invalid hex")
		}
	default:
		var err error
		if raw, err = decodeBase64(payload); err != nil {
			return nil, malformed(name, "invalid base64")
		}
	}
	if len(raw) == 0 {
		return nil, malformed(name, "empty value")
	}

	switch info.kind {
	case kindArgon2:
		return parseArgon2(name, string(raw))
	case kindCrypt:
		return parseCrypt(name, string(raw))
	case kindMD5Crypt:
		if !strings.HasPrefix(string(raw), "$1$") {
			return nil, malformed(name, "not a $1$ string")
		}
		return parseMD5Crypt(name, string(raw))
	case kindMD5:
		if strings.HasPrefix(string(raw), "$1$") {
			return parseMD5Crypt(name, string(raw))
		}
		return parseValue(name, schemes["PLAIN-MD5"], "", string(raw))
	case kindDigest:
		size := info.newHash().Size()
		if info.salted {
			if len(raw) <= size {
				return nil, malformed(name, "too short for a salted digest")
			}
			return &parsed{alg: info.alg, newHash: info.newHash, key: raw[:size], salt: raw[size:]}, nil
		}
		if len(raw) != size {
			return nil, malformed(name, fmt.Sprintf("digest is %d bytes, want %d", len(raw), size))
		}
		return &parsed{alg: info.alg, newHash: info.newHash, key: raw}, nil
	case kindPlain:
		return &parsed{alg: algPlain, key: raw}, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupported, name)
}

// decodeBase64 reads standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// parseArgon2 reads libsodium's encoding: $argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>, salt and hash
// in unpadded standard base64.
func parseArgon2(name, s string) (*parsed, error) {
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return nil, malformed(name, "not an $argon2…$ string")
	}
	p := &parsed{}
	switch f[1] {
	case "argon2id":
		p.alg = algArgon2ID
	case "argon2i":
		p.alg = algArgon2I
	case "argon2d":
		return nil, fmt.Errorf("%w: %s: argon2d", ErrUnsupported, name)
	default:
		return nil, malformed(name, "not an $argon2…$ string")
	}
	if f[2] != "v=19" {
		if strings.HasPrefix(f[2], "v=") {
			return nil, fmt.Errorf("%w: %s: only Argon2 version 19 is supported", ErrUnsupported, name)
		}
		return nil, malformed(name, "missing v=")
	}
	params := strings.Split(f[3], ",")
	if len(params) != 3 {
		return nil, malformed(name, "want m=,t=,p=")
	}
	var vals [3]uint64
	for i, k := range []string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(params[i], k)
		if !ok {
			return nil, malformed(name, "want m=,t=,p=")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, malformed(name, "bad "+k+" value")
		}
		vals[i] = n
	}
	m, t, threads := vals[0], vals[1], vals[2]
	switch {
	case threads < 1 || threads > 255:
		return nil, fmt.Errorf("%w: %s: p= out of range [1, 255]", ErrUnsupported, name)
	case t < 1:
		return nil, malformed(name, "t= is 0")
	case m < 8*threads:
		return nil, malformed(name, "m= below 8×p")
	case m > maxArgon2Memory || t > maxArgon2Time:
		return nil, fmt.Errorf("%w: %s: cost beyond m=%d, t=%d", ErrUnsupported, name, maxArgon2Memory, maxArgon2Time)
	}
	p.argonM, p.argonT, p.argonP = uint32(m), uint32(t), uint8(threads)
	var err error
	if p.salt, err = base64.RawStdEncoding.DecodeString(f[4]); err != nil || len(p.salt) < 8 {
		return nil, malformed(name, "bad salt")
	}
	if p.key, err = base64.RawStdEncoding.DecodeString(f[5]); err != nil || len(p.key) < 4 {
		return nil, malformed(name, "bad hash")
	}
	return p, nil
}

// parseCrypt reads a crypt(3) string by its $id$, as libxcrypt does for Dovecot's crypt schemes.
func parseCrypt(name, s string) (*parsed, error) {
	switch {
	case strings.HasPrefix(s, "$6$"):
		return parseSHACrypt(name, s, algSHA512Crypt)
	case strings.HasPrefix(s, "$5$"):
		return parseSHACrypt(name, s, algSHA256Crypt)
	case strings.HasPrefix(s, "$1$"):
		return parseMD5Crypt(name, s)
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return parseBcrypt(name, s)
	case strings.HasPrefix(s, "$2"):
		return nil, fmt.Errorf("%w: %s: bcrypt variant other than $2a$, $2b$, $2y$", ErrUnsupported, name)
	case strings.HasPrefix(s, "$"):
		return nil, fmt.Errorf("%w: %s: crypt method", ErrUnsupported, name)
	}
	return nil, fmt.Errorf("%w: %s: DES or unknown crypt", ErrUnsupported, name)
}

// parseBcrypt reads $2y$NN$<22 salt chars><31 hash chars>.
func parseBcrypt(name, s string) (*parsed, error) {
	if len(s) != 60 || s[6] != '$' || !isDigit(s[4]) || !isDigit(s[5]) || !isCryptB64(s[7:]) {
		return nil, malformed(name, "not a bcrypt string")
	}
	cost := int(s[4]-'0')*10 + int(s[5]-'0')
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, malformed(name, "bcrypt cost out of range")
	}
	return &parsed{alg: algBcrypt, cost: cost, key: []byte(s)}, nil
}

// parseSHACrypt reads $6$[rounds=N$]salt$hash (and $5$). Like glibc, which writes the rounds it used,
// it accepts only rounds that glibc would write back unchanged: 1000 to 999999999, no leading zero.
func parseSHACrypt(name, s string, a alg) (*parsed, error) {
	rest := s[3:]
	rounds := shacrypt.IterationsDefaultOmitted
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		num, after, ok := strings.Cut(r, "$")
		if !ok {
			return nil, malformed(name, "bad rounds=")
		}
		n, err := strconv.Atoi(num)
		if err != nil || strconv.Itoa(n) != num || n < shacrypt.IterationsMin || n > shacrypt.IterationsMax {
			return nil, malformed(name, "bad rounds=")
		}
		rounds, rest = n, after
	}
	salt, key, ok := strings.Cut(rest, "$")
	keyLen := 86
	if a == algSHA256Crypt {
		keyLen = 43
	}
	if !ok || salt == "" || len(salt) > shacrypt.SaltLengthMax || strings.ContainsAny(salt, "\n:") ||
		len(key) != keyLen || !isCryptB64(key) {
		return nil, malformed(name, "not a SHA-crypt string")
	}
	return &parsed{alg: a, cost: rounds, salt: []byte(salt), key: []byte(key)}, nil
}

// parseMD5Crypt reads $1$salt$hash, with a salt of 1 to 8 characters.
func parseMD5Crypt(name, s string) (*parsed, error) {
	salt, key, ok := strings.Cut(s[3:], "$")
	if !ok || salt == "" || len(salt) > 8 || strings.ContainsAny(salt, "\n:") || len(key) != 22 || !isCryptB64(key) {
		return nil, malformed(name, "not an MD5-crypt string")
	}
	return &parsed{alg: algMD5Crypt, salt: []byte(salt), key: []byte(key)}, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isCryptB64 reports whether s uses only crypt's base64 alphabet ./0-9A-Za-z.
func isCryptB64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '/' || isDigit(c) || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// match computes the hash of password with p's parameters and compares it in constant time.
func (p *parsed) match(password []byte) (bool, error) {
	switch p.alg {
	case algArgon2ID, algArgon2I:
		f := argon2.IDKey
		if p.alg == algArgon2I {
			f = argon2.Key
		}
		k := f(password, p.salt, p.argonT, p.argonM, p.argonP, uint32(len(p.key)))
		return subtle.ConstantTimeCompare(k, p.key) == 1, nil
	case algBcrypt:
		// x/crypto reads $2y$ and $2b$ as $2a$: the same computation in OpenBSD and libxcrypt. Like
		// them, it uses only the first 72 bytes of the password.
		err := bcrypt.CompareHashAndPassword(p.key, password)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
			return false, nil
		}
		return false, malformed("BLF-CRYPT", "bcrypt refused the string")
	case algSHA512Crypt, algSHA256Crypt:
		v := shacrypt.VariantSHA512
		if p.alg == algSHA256Crypt {
			v = shacrypt.VariantSHA256
		}
		sh, err := shacrypt.New(shacrypt.WithVariant(v), shacrypt.WithIterations(p.cost))
		if err != nil {
			return false, malformed("SHA-CRYPT", "rounds")
		}
		d, err := sh.HashWithSalt(string(password), p.salt)
		if err != nil {
			return false, malformed("SHA-CRYPT", "salt")
		}
		return subtle.ConstantTimeCompare(d.Key(), p.key) == 1, nil
	case algMD5Crypt:
		mh, err := md5crypt.New(md5crypt.WithVariant(md5crypt.VariantStandard))
		if err != nil {
			return false, fmt.Errorf("passwd: md5-crypt: %w", err)
		}
		d, err := mh.HashWithSalt(string(password), p.salt)
		if err != nil {
			return false, malformed("MD5-CRYPT", "salt")
		}
		return subtle.ConstantTimeCompare(d.Key(), p.key) == 1, nil
	case algPlain:
		// Compare digests so that the time does not depend on where, or whether, lengths differ.
		a, b := sha256.Sum256(password), sha256.Sum256(p.key)
		return hmac.Equal(a[:], b[:]), nil
	default:
		hh := p.newHash()
		hh.Write(password)
		hh.Write(p.salt)
		return subtle.ConstantTimeCompare(hh.Sum(nil), p.key) == 1, nil
	}
}
