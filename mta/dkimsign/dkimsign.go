// Package dkimsign signs outbound mail with DKIM (RFC 6376, RFC 8463) using
// the keys of the dkim_key table, and generates those keys.
//
// Signing authority (DESIGN, "Signing authority"): a message is signed only
// with the key of the domain of its From: header, and only when the
// submitting identity may send as that domain. Sign takes the permission
// check as a function and refuses to work without one, reads the From:
// header itself, and checks it against the domain the caller names, so a
// customer can never obtain another customer's signature by what it puts in
// the message or by a caller that forgets to ask.
//
// SECURITY: the package reads private keys from the database and holds them
// in memory (parsed, cached for CacheTTL); it never logs them. It exposes
// nothing to the network; the message it reads is untrusted, and only its
// header block is parsed (bounded by MaxHeaderBytes).
package dkimsign

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// Keys gives the signing key of a domain: its newest active key. found is
// false when the domain has none (the mail goes unsigned); err means the
// database could not answer. *store.Store satisfies it.
type Keys interface {
	ActiveDKIMKey(ctx context.Context, domain string) (k store.DKIMKey, found bool, err error)
}

// Unauthorized says what Sign does with a message whose From: domain the
// submitting identity may not send as.
type Unauthorized int

const (
	// Reject makes Sign return envelope.SenderNotOwned (553 5.7.1): the
	// message is refused.
	Reject Unauthorized = iota
	// SendUnsigned makes Sign return no signature and no error: the message
	// goes out unsigned (and fails DMARC at receivers, as it should).
	SendUnsigned
)

// Options configures a Signer. The zero value is usable.
type Options struct {
	// Unauthorized is the policy for a From: domain the identity may not
	// use (Reject by default).
	Unauthorized Unauthorized
	// CacheTTL is how long a domain's key (or its absence) is kept; default
	// 60 s, negative: no cache. Invalidate drops the cache at once (call it
	// on NOTIFY facteur_config).
	CacheTTL time.Duration
	// MaxHeaderBytes bounds the header block read to find From: (default
	// 1 MiB); a longer header is an error.
	MaxHeaderBytes int
	// Now is the clock (default time.Now), for the cache.
	Now func() time.Time
	// Logger receives key problems (default: discard).
	Logger *slog.Logger
}

// Signer signs messages with the keys of the dkim_key table. It is safe for
// concurrent use.
type Signer struct {
	keys Keys
	opts Options

	mu    sync.Mutex
	cache map[string]cacheEntry
	gen   uint64 // bumped by Invalidate, so a load racing it is not cached
}

type cacheEntry struct {
	key     *signingKey // nil: the domain has no key
	expires time.Time
}

type signingKey struct {
	domain, selector string
	signer           crypto.Signer
}

// Errors of Sign that are not replies.
var (
	// ErrNoPermissionCheck means Sign was called without an allowed function.
	ErrNoPermissionCheck = errors.New("dkimsign: no permission check given")
	// ErrKeyMismatch means a dkim_key row's private key does not match its
	// published public key: signatures would not verify.
	ErrKeyMismatch = errors.New("dkimsign: private key does not match the published public key")
)

// New returns a Signer over keys.
func New(keys Keys, opts Options) *Signer {
	if opts.CacheTTL == 0 {
		opts.CacheTTL = 60 * time.Second
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 1 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Signer{keys: keys, opts: opts, cache: map[string]cacheEntry{}}
}

// Invalidate drops every cached key; the next message of each domain loads
// its key again.
func (s *Signer) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache = map[string]cacheEntry{}
	s.gen++
}

// Sign reads a whole message (header and body, lines ending in CRLF) and
// returns the DKIM-Signature header field to prepend to it, folded and
// ending in CRLF ("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
// …\r\n"), or "" when the message goes out unsigned.
//
// fromDomain is the domain of the message's From: header as the caller
// checked it; allowed reports whether the submitting identity (the SASL
// user, or the local user of a pickup submission) may send as a domain
// (lookups' sender permission). Sign reads the From: header itself: it must
// hold addresses of exactly one domain, equal to fromDomain, and allowed
// must say yes for it. Otherwise, by Options.Unauthorized, the result is
// envelope.SenderNotOwned (553 5.7.1) or no signature. A nil allowed is
// ErrNoPermissionCheck, never a signature.
//
// A domain without an active key is not signed ("", nil). A database
// failure or a broken key is an error (wrapped, not a reply): the caller
// answers 451 4.3.0 and the client tries again.
func (s *Signer) Sign(ctx context.Context, fromDomain string, allowed func(domain string) bool, msg io.Reader) (string, error) {
	if allowed == nil {
		return "", ErrNoPermissionCheck
	}
	br := bufio.NewReader(msg)
	hdr, err := readHeader(br, s.opts.MaxHeaderBytes)
	if err != nil {
		return "", fmt.Errorf("dkimsign: read header: %w", err)
	}
	want, werr := address.Domain(fromDomain)
	got, from, gerr := headerFromDomain(hdr)
	switch {
	case werr != nil || gerr != nil || got != want || !allowed(got):
		// Drain the body so the caller's reader is in a known state.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return "", fmt.Errorf("dkimsign: read message: %w", err)
		}
		if s.opts.Unauthorized == SendUnsigned {
			return "", nil
		}
		if from == "" {
			from = fromDomain
		}
		return "", envelope.SenderNotOwned(from)
	}
	k, err := s.key(ctx, got)
	if err != nil {
		return "", err
	}
	if k == nil {
		if _, err := io.Copy(io.Discard, br); err != nil {
			return "", fmt.Errorf("dkimsign: read message: %w", err)
		}
		return "", nil
	}
	signer, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 k.domain,
		Selector:               k.selector,
		Signer:                 k.signer,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             headerKeys(hdr),
	})
	if err != nil {
		return "", fmt.Errorf("dkimsign: %w", err)
	}
	if _, err := signer.Write(hdr); err != nil {
		signer.Close()
		return "", fmt.Errorf("dkimsign: sign: %w", err)
	}
	if _, err := io.Copy(signer, br); err != nil {
		signer.Close()
		return "", fmt.Errorf("dkimsign: read message: %w", err)
	}
	if err := signer.Close(); err != nil {
		return "", fmt.Errorf("dkimsign: sign: %w", err)
	}
	return signer.Signature(), nil
}

// key returns the signing key of domain, from the cache or the database.
func (s *Signer) key(ctx context.Context, domain string) (*signingKey, error) {
	now := s.opts.Now()
	s.mu.Lock()
	e, ok := s.cache[domain]
	gen := s.gen
	s.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.key, nil
	}
	row, found, err := s.keys.ActiveDKIMKey(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("dkimsign: %w", err)
	}
	var k *signingKey
	if found {
		priv, pub, err := ParsePrivateKey(row.PrivateKey)
		if err != nil {
			s.opts.Logger.Error("dkimsign: unusable key", "key", row.DNSName, "err", err)
			return nil, fmt.Errorf("dkimsign: key %s: %w", row.DNSName, err)
		}
		if pub.PublicKey != row.PublicKey || pub.Algorithm != row.Algorithm {
			s.opts.Logger.Error("dkimsign: unusable key", "key", row.DNSName, "err", ErrKeyMismatch)
			return nil, fmt.Errorf("key %s: %w", row.DNSName, ErrKeyMismatch)
		}
		k = &signingKey{domain: row.Domain, selector: row.Selector, signer: priv}
	}
	if s.opts.CacheTTL > 0 {
		s.mu.Lock()
		if s.gen == gen {
			s.cache[domain] = cacheEntry{key: k, expires: now.Add(s.opts.CacheTTL)}
		}
		s.mu.Unlock()
	}
	return k, nil
}

// readHeader reads the header block up to and including the empty line
// that ends it (or to the end of a message without a body).
func readHeader(br *bufio.Reader, limit int) ([]byte, error) {
	var h bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		long := false
		for errors.Is(err, bufio.ErrBufferFull) {
			long = true
			h.Write(line)
			if h.Len() > limit {
				return nil, errors.New("header too long")
			}
			line, err = br.ReadSlice('\n')
		}
		h.Write(line)
		if h.Len() > limit {
			return nil, errors.New("header too long")
		}
		if err == io.EOF {
			return h.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		if !long && (string(line) == "\r\n" || string(line) == "\n") {
			return h.Bytes(), nil
		}
	}
}

// headerFromDomain returns the one domain of the From: header's addresses,
// in canonical form, and the first address as written (for the reply).
func headerFromDomain(hdr []byte) (domain, first string, err error) {
	raw := hdr
	if !bytes.HasSuffix(raw, []byte("\n\r\n")) && !bytes.HasSuffix(raw, []byte("\n\n")) {
		raw = append(append([]byte{}, raw...), "\r\n"...)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return "", "", fmt.Errorf("parse header: %w", err)
	}
	if n := len(m.Header["From"]); n != 1 {
		return "", "", fmt.Errorf("%d From: fields", n)
	}
	list, err := m.Header.AddressList("From")
	if err != nil || len(list) == 0 {
		return "", "", fmt.Errorf("From: %v", err)
	}
	first = list[0].Address
	for _, a := range list {
		i := strings.LastIndexByte(a.Address, '@')
		if i < 0 {
			return "", first, errors.New("From: address without a domain")
		}
		d, err := address.Domain(a.Address[i+1:])
		if err != nil {
			return "", first, err
		}
		if domain != "" && d != domain {
			return "", first, errors.New("From: addresses of several domains")
		}
		domain = d
	}
	return domain, first, nil
}

// signedFields are the header fields signed when present (RFC 6376 5.4.1),
// and oversigned: each is listed once more than it occurs, so that adding
// one breaks the signature (RFC 6376 8.15). Fields listed in oversignOnly
// are listed even when absent.
var signedFields = []string{
	"From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"In-Reply-To", "References",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post",
	"List-Owner", "List-Archive",
}

var oversigned = map[string]bool{
	"from": true, "sender": true, "reply-to": true, "subject": true, "date": true, "message-id": true,
	"to": true, "cc": true, "mime-version": true, "content-type": true, "content-transfer-encoding": true,
	"list-unsubscribe": true, "list-unsubscribe-post": true,
}

// headerKeys returns the h= list for a header block.
func headerKeys(hdr []byte) []string {
	count := map[string]int{}
	for _, line := range bytes.Split(hdr, []byte("\n")) {
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if i := bytes.IndexByte(line, ':'); i > 0 {
			count[strings.ToLower(strings.TrimRight(string(line[:i]), " \t"))]++
		}
	}
	var keys []string
	for _, f := range signedFields {
		l := strings.ToLower(f)
		n := count[l]
		if oversigned[l] {
			n++
		}
		for range n {
			keys = append(keys, f)
		}
	}
	return keys
}
