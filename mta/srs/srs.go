// Package srs implements the Sender Rewriting Scheme (SRS) as libsrs2,
// postsrsd and Mail::SRS (the "guarded" scheme) write it, so that addresses
// made by any of them reverse here and the other way round.
//
// When facteur forwards mail from a non-local sender to a non-local address,
// the envelope sender is rewritten into the forwarding domain (DESIGN
// "Forwarding"), so that the next hop's SPF check sees a sender of ours, and
// bounces come back to us:
//
//	alice@origin.example  ->  SRS0=HHHH=TT=origin.example=alice@fwd.example
//
// HHHH is a truncated HMAC over the timestamp, host and user (four base64
// characters by default), TT the day of the rewrite in two base32 characters
// (days since the epoch, modulo 1024). Forwarding an SRS0 address again makes
// an SRS1 address that names the first forwarder and keeps its opaque part:
//
//	SRS0=HHHH=TT=origin.example=alice@fwd1.example
//	  ->  SRS1=GGGG=fwd1.example==HHHH=TT=origin.example=alice@fwd2.example
//
// Reverse undoes one step: an SRS0 address of ours gives the original sender
// (after checking the hash and the age), an SRS1 address gives the SRS0
// address at the first forwarder (after checking our hash). The receive side
// (smtpd, lookups) reverses SRS0=/SRS1= recipients of local domains at RCPT
// time with Reverse, telling forged or expired addresses (ErrBadHash,
// ErrExpired: reject with 550 5.1.1) from addresses that are not SRS at all
// (ErrNotSRS: look up as usual); IsSRS is the cheap test.
//
// SECURITY: the package does no I/O and keeps no state beyond its options.
// The secrets make SRS addresses unforgeable: without them, anyone could use
// the forwarding domain as an open relay for bounces ("backscatter"). The
// first secret signs; every secret verifies, so a secret can be rotated by
// adding the new one in front and removing the old one after MaxAge days.
// Hashes are compared in constant time, and case-insensitively as the SRS
// specification allows (some MTAs fold the local part to lower case), which
// costs less than one bit per hash character.
package srs

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"
)

// Errors of Reverse. Callers test them with errors.Is.
var (
	// ErrNotSRS means the address is not an SRS address: deliver or look it
	// up as any other.
	ErrNotSRS = errors.New("not an SRS address")
	// ErrMalformed means the address has an SRS0 or SRS1 tag but not the
	// fields that follow it.
	ErrMalformed = errors.New("malformed SRS address")
	// ErrBadHash means the hash does not match under any secret: the
	// address was forged or altered.
	ErrBadHash = errors.New("SRS hash invalid")
	// ErrExpired means the timestamp is older than MaxAge days (or in the
	// future).
	ErrExpired = errors.New("SRS timestamp out of date")
)

// Defaults of Options, those of libsrs2 and postsrsd.
const (
	DefaultMaxAge     = 21 // days
	DefaultHashLength = 4  // base64 characters
)

// Algorithms of Options.Algorithm.
const (
	// SHA1 is HMAC-SHA1, what libsrs2, postsrsd and Mail::SRS use: choose it
	// when another forwarder must reverse our addresses with a shared secret.
	SHA1 = "sha1"
	// SHA256 is HMAC-SHA256, truncated to the same hash length.
	SHA256 = "sha256"
)

const (
	tag0 = "SRS0"
	tag1 = "SRS1"
	sep  = "=" // the separator between fields after the first one

	// timestamps: one-day precision, two base32 characters (1024 days).
	base32Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	timeSlots   = 1024
	day         = 24 * 60 * 60
)

// Options configures an SRS rewriter.
type Options struct {
	// Secrets are the HMAC keys: the first signs new addresses, all of them
	// verify. At least one, none empty.
	Secrets []string
	// MaxAge is how many days an SRS0 address stays valid; 0 means
	// DefaultMaxAge.
	MaxAge int
	// HashLength is the number of base64 characters of the hash, 0 means
	// DefaultHashLength; at most 20. Reverse requires exactly this many.
	HashLength int
	// Algorithm is SHA1 (the default, compatible with libsrs2) or SHA256.
	Algorithm string
	// Separator follows the SRS0/SRS1 tag in addresses made here: '=' (the
	// default), '+' or '-'. Reverse accepts any of the three.
	Separator byte
	// AlwaysRewrite rewrites senders that are already in the forwarding
	// domain too (libsrs2's alwaysrewrite).
	AlwaysRewrite bool
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// SRS rewrites and reverses addresses. It is safe for concurrent use.
type SRS struct {
	secrets [][]byte
	maxAge  int64
	hashLen int
	newHash func() hash.Hash
	sep     string
	always  bool
	now     func() time.Time
}

// New checks o and returns a rewriter.
func New(o Options) (*SRS, error) {
	if len(o.Secrets) == 0 {
		return nil, errors.New("srs: no secret")
	}
	s := &SRS{
		maxAge:  int64(o.MaxAge),
		hashLen: o.HashLength,
		sep:     string(o.Separator),
		always:  o.AlwaysRewrite,
		now:     o.Now,
	}
	for i, sec := range o.Secrets {
		if sec == "" {
			return nil, fmt.Errorf("srs: secret %d is empty", i+1)
		}
		s.secrets = append(s.secrets, []byte(sec))
	}
	if s.maxAge == 0 {
		s.maxAge = DefaultMaxAge
	}
	if s.maxAge < 1 || s.maxAge >= timeSlots {
		return nil, fmt.Errorf("srs: max age %d days out of range 1..%d", o.MaxAge, timeSlots-1)
	}
	if s.hashLen == 0 {
		s.hashLen = DefaultHashLength
	}
	if s.hashLen < 1 || s.hashLen > 20 {
		return nil, fmt.Errorf("srs: hash length %d out of range 1..20", o.HashLength)
	}
	switch strings.ToLower(o.Algorithm) {
	case "", SHA1:
		s.newHash = sha1.New
	case SHA256:
		s.newHash = sha256.New
	default:
		return nil, fmt.Errorf("srs: unknown algorithm %q", o.Algorithm)
	}
	switch o.Separator {
	case 0:
		s.sep = "="
	case '=', '+', '-':
	default:
		return nil, fmt.Errorf("srs: separator %q is not one of = + -", o.Separator)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// IsSRS reports whether addr (an address or a bare local part) has an SRS0
// or SRS1 local part, in any case. It does not check the hash.
func IsSRS(addr string) bool {
	user, _ := split(addr)
	return hasTag(user, tag0) || hasTag(user, tag1)
}

// Forward returns the envelope sender to use when mail from sender is
// forwarded by localDomain (a domain, or an address whose domain is used):
//
//   - the null sender stays null, and an address without a domain is
//     returned unchanged;
//   - a sender already in localDomain is returned unchanged, unless
//     AlwaysRewrite is set;
//   - an SRS0 address becomes an SRS1 address naming its forwarder, an SRS1
//     address is re-signed for localDomain (the original forwarder and opaque
//     part are kept), anything else becomes an SRS0 address.
//
// The result may have a local part longer than 64 octets (RFC 5321
// 4.5.3.1.1); libsrs2 makes the same addresses and most servers accept them.
func (s *SRS) Forward(sender, localDomain string) string {
	if i := strings.LastIndexByte(localDomain, '@'); i >= 0 {
		localDomain = localDomain[i+1:]
	}
	user, host := split(sender)
	if sender == "" || user == "" || host == "" || localDomain == "" {
		return sender
	}
	if !s.always && strings.EqualFold(strings.TrimSuffix(host, "."), strings.TrimSuffix(localDomain, ".")) {
		return sender
	}
	if hasTag(user, tag1) {
		// SRS1<sep>hash=srshost=srsuser: keep the first forwarder and its
		// opaque part, sign them with our secret (Mail::SRS::Guarded).
		if f := strings.SplitN(user[len(tag1)+1:], sep, 3); len(f) == 3 && f[1] != "" && f[2] != "" {
			return tag1 + s.sep + s.hash(0, f[1], f[2]) + sep + f[1] + sep + f[2] + "@" + localDomain
		}
		// A malformed SRS1 address is rewritten as an ordinary one.
	} else if hasTag(user, tag0) {
		// The opaque part keeps its leading separator, so SRS1 addresses
		// have "==" after the first forwarder's host.
		srsuser := user[len(tag0):]
		return tag1 + s.sep + s.hash(0, host, srsuser) + sep + host + sep + srsuser + "@" + localDomain
	}
	ts := timestamp(s.now())
	return tag0 + s.sep + s.hash(0, ts, host, user) + sep + ts + sep + host + sep + user + "@" + localDomain
}

// Reverse undoes one forwarding step. For an SRS0 address it checks the hash
// and the timestamp and returns the original sender; for an SRS1 address it
// checks the hash and returns the SRS0 address at the first forwarder, to
// which the bounce must be sent. The domain of addr is not checked: the
// caller decides which domains are ours. Errors: ErrNotSRS, ErrMalformed,
// ErrBadHash, ErrExpired (wrapped with the address).
func (s *SRS) Reverse(addr string) (string, error) {
	user, _ := split(addr)
	if user == "" {
		user = addr
	}
	switch {
	case hasTag(user, tag1):
		f := strings.SplitN(user[len(tag1)+1:], sep, 3)
		if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
			return "", fmt.Errorf("reverse %q: %w", addr, ErrMalformed)
		}
		if !s.verify(f[0], f[1], f[2]) {
			return "", fmt.Errorf("reverse %q: %w", addr, ErrBadHash)
		}
		return tag0 + f[2] + "@" + f[1], nil
	case hasTag(user, tag0):
		f := strings.SplitN(user[len(tag0)+1:], sep, 4)
		if len(f) != 4 || f[0] == "" || f[1] == "" || f[2] == "" || f[3] == "" {
			return "", fmt.Errorf("reverse %q: %w", addr, ErrMalformed)
		}
		if !s.verify(f[0], f[1], f[2], f[3]) {
			return "", fmt.Errorf("reverse %q: %w", addr, ErrBadHash)
		}
		if err := s.checkTimestamp(f[1]); err != nil {
			return "", fmt.Errorf("reverse %q: %w", addr, err)
		}
		return f[3] + "@" + f[2], nil
	}
	return "", fmt.Errorf("reverse %q: %w", addr, ErrNotSRS)
}

// hash returns the first hashLen base64 characters of the HMAC, under secret
// i, of the lower-cased fields concatenated (libsrs2 srs_hash_create_v).
func (s *SRS) hash(i int, fields ...string) string {
	m := hmac.New(s.newHash, s.secrets[i])
	for _, f := range fields {
		m.Write([]byte(strings.ToLower(f)))
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil))[:s.hashLen]
}

// verify reports whether got is the hash of fields under any secret, exactly
// or ignoring case (libsrs2 srs_hash_check compares with strncasecmp).
func (s *SRS) verify(got string, fields ...string) bool {
	if len(got) != s.hashLen {
		return false
	}
	ok := 0
	for i := range s.secrets {
		want := s.hash(i, fields...)
		ok |= subtle.ConstantTimeCompare([]byte(got), []byte(want))
		ok |= subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(strings.ToLower(want)))
	}
	return ok == 1
}

// checkTimestamp accepts a timestamp (in any case) from today or at most
// maxAge days ago, counting modulo 1024 days as libsrs2 does.
func (s *SRS) checkTimestamp(ts string) error {
	if len(ts) != 2 {
		return ErrMalformed
	}
	then := int64(0)
	for _, c := range strings.ToUpper(ts) {
		i := strings.IndexRune(base32Chars, c)
		if i < 0 {
			return ErrMalformed
		}
		then = then<<5 | int64(i)
	}
	now := (s.now().Unix() / day) % timeSlots
	for now < then {
		now += timeSlots
	}
	if now > then+s.maxAge {
		return ErrExpired
	}
	return nil
}

// timestamp returns the day of t in two base32 characters.
func timestamp(t time.Time) string {
	d := t.Unix() / day
	return string([]byte{base32Chars[(d>>5)&31], base32Chars[d&31]})
}

// hasTag reports whether user starts with tag (in any case) and one of the
// separators = + -.
func hasTag(user, tag string) bool {
	if len(user) <= len(tag) || !strings.EqualFold(user[:len(tag)], tag) {
		return false
	}
	switch user[len(tag)] {
	case '=', '+', '-':
		return true
	}
	return false
}

// split splits an address at its last '@'; without one, user is addr.
func split(addr string) (user, host string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}
