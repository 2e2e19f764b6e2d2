package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/facteur/facteur/store"
)

// RSABits is the size of generated RSA keys (RFC 8301 3.2: at least 1024,
// 2048 recommended; larger keys do not fit one DNS string and some
// verifiers still refuse 4096).
const RSABits = 2048

// Key is a generated or parsed key pair, in the forms dkim_key stores.
type Key struct {
	// Algorithm is store.DKIMRSASHA256 or store.DKIMEd25519SHA256.
	Algorithm string
	// PrivatePEM is the PKCS#8 PEM private key (secret).
	PrivatePEM string
	// PublicKey is the p= value of the DNS record.
	PublicKey string
	// DNSRecord is the TXT record to publish at
	// <selector>._domainkey.<domain>: "v=DKIM1; k=rsa; p=…".
	DNSRecord string
}

// NormalizeAlgorithm maps the names an operator types ("rsa", "ed25519",
// or the signature algorithms themselves) to the stored form.
func NormalizeAlgorithm(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "rsa", store.DKIMRSASHA256:
		return store.DKIMRSASHA256, nil
	case "ed25519", store.DKIMEd25519SHA256:
		return store.DKIMEd25519SHA256, nil
	}
	return "", fmt.Errorf("unknown DKIM algorithm %q (rsa or ed25519)", s)
}

// Generate makes a new key pair: 2048-bit RSA for "rsa" (rsa-sha256), or
// Ed25519 for "ed25519" (ed25519-sha256, RFC 8463). Not every verifier knows
// Ed25519 yet: sign with both by giving a domain an RSA key, or use RSA.
func Generate(algorithm string) (Key, error) {
	alg, err := NormalizeAlgorithm(algorithm)
	if err != nil {
		return Key{}, err
	}
	var priv crypto.Signer
	switch alg {
	case store.DKIMRSASHA256:
		priv, err = rsa.GenerateKey(rand.Reader, RSABits)
	default:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return Key{}, fmt.Errorf("generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return Key{}, fmt.Errorf("encode private key: %w", err)
	}
	k, err := keyOf(priv)
	if err != nil {
		return Key{}, err
	}
	k.PrivatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return k, nil
}

// ParsePrivateKey reads a PEM private key: PKCS#8 (RSA or Ed25519), or
// PKCS#1 ("RSA PRIVATE KEY", as opendkim-genkey writes). It returns the key
// and its public forms (PrivatePEM is pemText as given).
func ParsePrivateKey(pemText string) (crypto.Signer, Key, error) {
	b, _ := pem.Decode([]byte(pemText))
	if b == nil {
		return nil, Key{}, errors.New("no PEM private key found")
	}
	var priv any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, Key{}, fmt.Errorf("unsupported PEM block %q", b.Type)
	}
	if err != nil {
		return nil, Key{}, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, Key{}, fmt.Errorf("unsupported private key type %T", priv)
	}
	k, err := keyOf(s)
	if err != nil {
		return nil, Key{}, err
	}
	if r, ok := s.(*rsa.PrivateKey); ok && r.N.BitLen() < 1024 {
		// RFC 8301 3.2: verifiers must not accept shorter keys.
		return nil, Key{}, fmt.Errorf("RSA key of %d bits is too short (at least 1024)", r.N.BitLen())
	}
	k.PrivatePEM = pemText
	return s, k, nil
}

// keyOf returns the public forms of priv's key.
func keyOf(priv crypto.Signer) (Key, error) {
	switch pub := priv.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return Key{}, fmt.Errorf("encode public key: %w", err)
		}
		p := base64.StdEncoding.EncodeToString(der)
		return Key{Algorithm: store.DKIMRSASHA256, PublicKey: p, DNSRecord: "v=DKIM1; k=rsa; p=" + p}, nil
	case ed25519.PublicKey:
		// RFC 8463 4.2: the raw 32-byte key, not a SubjectPublicKeyInfo.
		p := base64.StdEncoding.EncodeToString(pub)
		return Key{Algorithm: store.DKIMEd25519SHA256, PublicKey: p, DNSRecord: "v=DKIM1; k=ed25519; p=" + p}, nil
	}
	return Key{}, fmt.Errorf("unsupported key type %T", priv.Public())
}

// ZoneRecord formats a TXT record for a zone file: the record split into
// strings of at most 255 octets (RFC 1035 3.3.14; a 2048-bit RSA key is
// longer), as in
//
//	s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIB…" "…" )
func ZoneRecord(name, record string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(name, ".") + ". IN TXT (")
	for len(record) > 0 {
		n := min(len(record), 255)
		b.WriteString(" \"" + record[:n] + "\"")
		record = record[n:]
	}
	b.WriteString(" )")
	return b.String()
}
