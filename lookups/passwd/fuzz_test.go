package passwd

import (
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary stored values to Verify: it must never panic, never report a match
// together with an error, and never report an upgrade without a match. Values whose cost would make
// one run slow (big Argon2, bcrypt or SHA-crypt parameters) are only parsed, not computed.
func FuzzVerify(f *testing.F) {
	for _, v := range readVectors(f) {
		if h, err := New(CheapOptions()); err == nil {
			if p, err := h.parse(v.stored); err == nil && !costly(p) {
				f.Add(v.stored, v.password)
			}
		}
	}
	for _, s := range malformedValues {
		f.Add(s, "secret")
	}
	f.Add("{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA", "x")
	f.Add("{SHA512-CRYPT}$6$rounds=1000$salt$"+strings.Repeat("a", 86), "x")
	f.Add("{MD5}$1$salt$"+strings.Repeat("a", 22), "x")
	f.Add("{SSHA.HEX}0011", "")

	h, err := New(CheapOptions())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stored, password string) {
		p, perr := h.parse(stored)
		if perr == nil && costly(p) {
			return
		}
		ok, up, err := h.Verify(stored, password)
		if perr != nil && err == nil {
			t.Fatalf("parse error %v but Verify error %v", perr, err)
		}
		if ok && err != nil {
			t.Fatalf("Verify(%q) = match and error %v", stored, err)
		}
		if up && !ok {
			t.Fatalf("Verify(%q) = upgrade without a match", stored)
		}
	})
}

// costly reports whether matching p would take more than a few milliseconds.
func costly(p *parsed) bool {
	switch p.alg {
	case algArgon2ID, algArgon2I:
		return uint64(p.argonM)*uint64(p.argonT) > 1<<12
	case algBcrypt:
		return p.cost > 6
	case algSHA512Crypt, algSHA256Crypt:
		return p.cost > 20000
	}
	return false
}
