// Package passwd hashes and verifies mailbox passwords in Dovecot's "{SCHEME}hash" form, so that
// Dovecot and facteur can share the mailbox table's password column.
//
// Verify reads what Dovecot 2.3 and PostfixAdmin write:
//
//   - {ARGON2ID} and {ARGON2I} (libsodium's $argon2id$v=19$m=…,t=…,p=…$salt$hash);
//   - the crypt(3) family, {CRYPT}, {BLF-CRYPT} ($2y$, $2b$, $2a$), {SHA512-CRYPT} ($6$, with
//     rounds=), {SHA256-CRYPT} ($5$) and {MD5-CRYPT} ($1$). As in Dovecot, whose crypt schemes all
//     call crypt(3), a crypt string is recognised by its own $id$ whatever the {SCHEME} says;
//   - {MD5} (Dovecot's name for MD5-CRYPT, or a PLAIN-MD5 digest);
//   - the digests {SSHA512}, {SSHA256}, {SSHA}, {SMD5}, {SHA512}, {SHA256}, {SHA1} ({SHA}),
//     {PLAIN-MD5} and {LDAP-MD5};
//   - {PLAIN}, {CLEARTEXT} and {CLEAR};
//   - the encoding suffixes .HEX, .B64 and .BASE64 on any of these ({SSHA512.HEX},
//     {SHA512-CRYPT.B64}, …). On a digest scheme the suffix names the digest's encoding; on a
//     crypt, Argon2 or plain scheme it means that the whole string is encoded (doveadm pw -s
//     SHA512-CRYPT.B64 writes the standard, padded base64 of the "$6$…" string).
//
// A stored value without a {SCHEME} prefix is read with Options.DefaultScheme (Dovecot's
// default_pass_scheme, CRYPT unless configured), except that, as in Dovecot, a bare "$1$…" is always
// MD5-CRYPT. PostfixAdmin's default writes bare "$1$…" or "$6$…" strings.
//
// Hash writes ARGON2ID (the default), BLF-CRYPT or SHA512-CRYPT, always with the {SCHEME} prefix, in
// the exact form doveadm pw writes, so Dovecot verifies what facteur writes and the reverse.
//
// A malformed or unsupported stored value is an error, never a match. Comparisons are constant time.
// Nothing here logs, and no error carries a password or any part of a stored value.
package passwd

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/go-crypt/crypt/algorithm/shacrypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Schemes that Hash can write.
const (
	SchemeArgon2ID    = "ARGON2ID"
	SchemeBlfCrypt    = "BLF-CRYPT"
	SchemeSHA512Crypt = "SHA512-CRYPT"
)

var (
	// ErrMalformed is returned by Verify when the stored value cannot be parsed.
	ErrMalformed = errors.New("passwd: malformed stored password hash")
	// ErrUnsupported is returned by Verify for a scheme, variant or encoding that this package does
	// not verify (an unknown {SCHEME}, DES-CRYPT, $2x$, yescrypt, Argon2 other than v=19, …).
	ErrUnsupported = errors.New("passwd: unsupported password scheme")
	// ErrPasswordTooLong is returned by Hash with BLF-CRYPT for a password over 72 bytes: bcrypt
	// ignores every byte after the 72nd.
	ErrPasswordTooLong = errors.New("passwd: password is longer than 72 bytes, the most BLF-CRYPT can hash; use ARGON2ID or a shorter password")
	// ErrInvalidPassword is returned by Hash for an empty password or one containing a NUL byte
	// (Dovecot, in C, would stop reading it at the NUL).
	ErrInvalidPassword = errors.New("passwd: password is empty or contains a NUL byte")
)

// Limits on the cost parameters of stored Argon2 hashes, so that a stored value cannot make a single
// verification allocate or spend without bound. Hash refuses to write anything beyond them.
const (
	maxArgon2Memory = 4 << 20 // KiB: 4 GiB
	maxArgon2Time   = 1 << 10
)

// Options configure a Hasher. A zero field takes its value from DefaultOptions.
type Options struct {
	// Scheme is the scheme Hash writes: ARGON2ID, BLF-CRYPT or SHA512-CRYPT.
	Scheme string
	// Argon2Memory is Argon2's memory cost in KiB (m=).
	Argon2Memory uint32
	// Argon2Time is Argon2's number of passes (t=).
	Argon2Time uint32
	// Argon2Threads is Argon2's parallelism (p=).
	Argon2Threads uint8
	// BcryptCost is bcrypt's log2 cost, 4 to 31.
	BcryptCost int
	// SHACryptRounds is SHA512-CRYPT's rounds=, 1000 to 999999999.
	SHACryptRounds int
	// DefaultScheme reads stored values that have no {SCHEME} prefix, as Dovecot's
	// default_pass_scheme does: CRYPT, or any scheme Verify knows (PLAIN-MD5, SHA512-CRYPT, …).
	DefaultScheme string
}

// DefaultOptions returns the production settings: ARGON2ID with m=65536 (64 MiB), t=3, p=1 (what
// doveadm pw -s ARGON2ID writes); bcrypt cost 12 and 500000 SHA512-CRYPT rounds when those schemes
// are chosen; bare stored values read as CRYPT.
func DefaultOptions() Options {
	return Options{
		Scheme:         SchemeArgon2ID,
		Argon2Memory:   64 * 1024,
		Argon2Time:     3,
		Argon2Threads:  1,
		BcryptCost:     12,
		SHACryptRounds: 500000,
		DefaultScheme:  "CRYPT",
	}
}

// CheapOptions returns the cheapest settings that still make valid hashes, for tests and benchmarks
// in other packages: ARGON2ID with m=64, t=1, p=1, bcrypt cost 4, 1000 SHA512-CRYPT rounds. Never use
// them in production.
func CheapOptions() Options {
	return Options{
		Scheme:         SchemeArgon2ID,
		Argon2Memory:   64,
		Argon2Time:     1,
		Argon2Threads:  1,
		BcryptCost:     bcrypt.MinCost,
		SHACryptRounds: shacrypt.IterationsMin,
		DefaultScheme:  "CRYPT",
	}
}

// Hasher hashes new passwords with one configured scheme and cost, and verifies stored values of any
// supported scheme. It is safe for concurrent use.
type Hasher struct {
	opts       Options
	defScheme  schemeInfo
	defEncName string // encoding suffix of DefaultScheme, if any
}

// New checks opts, fills its zero fields from DefaultOptions and returns a Hasher.
func New(opts Options) (*Hasher, error) {
	def := DefaultOptions()
	if opts.Scheme == "" {
		opts.Scheme = def.Scheme
	}
	if opts.Argon2Memory == 0 {
		opts.Argon2Memory = def.Argon2Memory
	}
	if opts.Argon2Time == 0 {
		opts.Argon2Time = def.Argon2Time
	}
	if opts.Argon2Threads == 0 {
		opts.Argon2Threads = def.Argon2Threads
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = def.BcryptCost
	}
	if opts.SHACryptRounds == 0 {
		opts.SHACryptRounds = def.SHACryptRounds
	}
	if opts.DefaultScheme == "" {
		opts.DefaultScheme = def.DefaultScheme
	}
	opts.Scheme = strings.ToUpper(opts.Scheme)

	switch opts.Scheme {
	case SchemeArgon2ID, SchemeBlfCrypt, SchemeSHA512Crypt:
	default:
		return nil, fmt.Errorf("passwd: cannot hash with scheme %q: use %s, %s or %s",
			opts.Scheme, SchemeArgon2ID, SchemeBlfCrypt, SchemeSHA512Crypt)
	}
	if opts.Argon2Memory < 8*uint32(opts.Argon2Threads) || opts.Argon2Memory > maxArgon2Memory {
		return nil, fmt.Errorf("passwd: Argon2 memory %d KiB out of range [8×threads, %d]", opts.Argon2Memory, maxArgon2Memory)
	}
	if opts.Argon2Time > maxArgon2Time {
		return nil, fmt.Errorf("passwd: Argon2 time %d out of range [1, %d]", opts.Argon2Time, maxArgon2Time)
	}
	if opts.BcryptCost < bcrypt.MinCost || opts.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("passwd: bcrypt cost %d out of range [%d, %d]", opts.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if opts.SHACryptRounds < shacrypt.IterationsMin || opts.SHACryptRounds > shacrypt.IterationsMax {
		return nil, fmt.Errorf("passwd: SHA-crypt rounds %d out of range [%d, %d]", opts.SHACryptRounds, shacrypt.IterationsMin, shacrypt.IterationsMax)
	}
	info, enc, err := lookupScheme(opts.DefaultScheme)
	if err != nil {
		return nil, fmt.Errorf("passwd: default scheme %q: %w", opts.DefaultScheme, err)
	}
	return &Hasher{opts: opts, defScheme: info, defEncName: enc}, nil
}

// Options returns the Hasher's settings, with defaults filled in.
func (h *Hasher) Options() Options { return h.opts }

// Hash returns password hashed with the configured scheme and cost, with its {SCHEME} prefix, ready
// to store. It refuses an empty password or one containing NUL (ErrInvalidPassword), and, for
// BLF-CRYPT, one over 72 bytes (ErrPasswordTooLong).
func (h *Hasher) Hash(password string) (string, error) {
	if password == "" || strings.IndexByte(password, 0) >= 0 {
		return "", ErrInvalidPassword
	}
	switch h.opts.Scheme {
	case SchemeArgon2ID:
		salt := make([]byte, 16)
		rand.Read(salt) // never returns an error (crypto/rand, Go 1.24+)
		key := argon2.IDKey([]byte(password), salt, h.opts.Argon2Time, h.opts.Argon2Memory, h.opts.Argon2Threads, 32)
		return fmt.Sprintf("{%s}$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", SchemeArgon2ID, argon2.Version,
			h.opts.Argon2Memory, h.opts.Argon2Time, h.opts.Argon2Threads,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
	case SchemeBlfCrypt:
		if len(password) > 72 {
			return "", ErrPasswordTooLong
		}
		b, err := bcrypt.GenerateFromPassword([]byte(password), h.opts.BcryptCost)
		if err != nil {
			return "", fmt.Errorf("passwd: bcrypt: %w", err)
		}
		// x/crypto writes $2a$; Dovecot writes $2y$, which libxcrypt computes exactly as x/crypto
		// does (its $2a$ has a rare extra twist for some 8-bit passwords).
		return "{" + SchemeBlfCrypt + "}$2y$" + string(b[4:]), nil
	case SchemeSHA512Crypt:
		sh, err := shacrypt.New(shacrypt.WithVariant(shacrypt.VariantSHA512),
			shacrypt.WithIterations(h.opts.SHACryptRounds), shacrypt.WithSaltLength(16))
		if err != nil {
			return "", fmt.Errorf("passwd: sha512-crypt: %w", err)
		}
		d, err := sh.Hash(password)
		if err != nil {
			return "", fmt.Errorf("passwd: sha512-crypt: %w", err)
		}
		return "{" + SchemeSHA512Crypt + "}" + d.Encode(), nil
	}
	panic("passwd: unreachable: scheme checked in New")
}

// Verify reports whether password matches stored, a value in Dovecot's "{SCHEME}hash" form (or bare,
// read with Options.DefaultScheme). A malformed or unsupported stored value returns an error wrapping
// ErrMalformed or ErrUnsupported, and ok false; an empty value is malformed, even after {PLAIN}
// (where Dovecot would accept an empty password). The error never quotes stored or password.
//
// needsUpgrade is true only when ok is: stored uses another algorithm than the configured Scheme, or
// weaker parameters (lower Argon2 m or t, shorter Argon2 salt or hash, lower bcrypt cost, fewer
// SHA-crypt rounds). The caller, who now holds the plaintext, should then store Hash(password).
func (h *Hasher) Verify(stored, password string) (ok, needsUpgrade bool, err error) {
	p, err := h.parse(stored)
	if err != nil {
		return false, false, err
	}
	if strings.IndexByte(password, 0) >= 0 {
		return false, false, nil // no client can send it; Dovecot would cut it short
	}
	ok, err = p.match([]byte(password))
	if err != nil || !ok {
		return false, false, err
	}
	return true, h.weaker(p), nil
}

// weaker reports whether a stored hash that matched should be rewritten with the configured scheme.
func (h *Hasher) weaker(p *parsed) bool {
	switch h.opts.Scheme {
	case SchemeArgon2ID:
		return p.alg != algArgon2ID || p.argonM < h.opts.Argon2Memory || p.argonT < h.opts.Argon2Time ||
			len(p.salt) < 16 || len(p.key) < 32
	case SchemeBlfCrypt:
		return p.alg != algBcrypt || p.cost < h.opts.BcryptCost
	case SchemeSHA512Crypt:
		return p.alg != algSHA512Crypt || p.cost < h.opts.SHACryptRounds
	}
	return true
}

// Scheme returns the scheme named by stored's "{SCHEME}" prefix, upper-cased and with any encoding
// suffix (".HEX", ".B64"), and true; or "", false when stored has no prefix (a bare value, read with
// the default scheme). It does not check that the scheme is supported.
func Scheme(stored string) (scheme string, ok bool) {
	name, _, ok := splitScheme(stored)
	if !ok {
		return "", false
	}
	return strings.ToUpper(name), true
}
