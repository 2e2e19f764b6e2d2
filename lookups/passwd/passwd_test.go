package passwd

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

const vectorsFile = "../../testdata/passwd/doveadm-vectors.txt"

type vector struct {
	line             int
	scheme, password string
	stored           string
}

func readVectors(tb testing.TB) []vector {
	tb.Helper()
	f, err := os.Open(vectorsFile)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			tb.Fatalf("%s:%d: want 3 tab-separated fields, got %d", vectorsFile, n, len(f))
		}
		vs = append(vs, vector{n, f[0], f[1], f[2]})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(vs) < 50 {
		tb.Fatalf("%s: only %d vectors", vectorsFile, len(vs))
	}
	return vs
}

func cheap(t testing.TB, mod func(*Options)) *Hasher {
	t.Helper()
	o := CheapOptions()
	if mod != nil {
		mod(&o)
	}
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDoveadmVectorsVerify(t *testing.T) {
	h := cheap(t, nil)
	for _, v := range readVectors(t) {
		t.Run(strings.ReplaceAll(v.scheme, "/", "_"), func(t *testing.T) {
			t.Parallel()
			name, ok := Scheme(v.stored)
			if v.scheme == "(none)" {
				if ok {
					t.Errorf("line %d: Scheme() = %q, true for a bare value", v.line, name)
				}
			} else if !ok || name != v.scheme {
				t.Errorf("line %d: Scheme() = %q, %v; want %q", v.line, name, ok, v.scheme)
			}
			ok, _, err := h.Verify(v.stored, v.password)
			if err != nil || !ok {
				t.Errorf("line %d: Verify(right password) = %v, %v; want true", v.line, ok, err)
			}
			// Change the first bytes, which even bcrypt's 72-byte limit sees.
			wrongs := []string{"wrong" + v.password, "!" + v.password[1:], ""}
			if p, err := h.parse(v.stored); err == nil && costly(p) {
				wrongs = wrongs[:1] // Dovecot's Argon2 vectors take 64 MiB and ~0.3 s each
			}
			for _, wrong := range wrongs {
				ok, up, err := h.Verify(v.stored, wrong)
				if err != nil || ok || up {
					t.Errorf("line %d: Verify(wrong password) = %v, %v, %v; want false, false, nil", v.line, ok, up, err)
				}
			}
		})
	}
}

// Dovecot reads the lower-case scheme names some tools write.
func TestSchemeNameIsCaseInsensitive(t *testing.T) {
	h := cheap(t, nil)
	for _, v := range readVectors(t) {
		if v.scheme != "SSHA512" && v.scheme != "SHA512-CRYPT" {
			continue
		}
		stored := "{" + strings.ToLower(v.scheme) + "}" + strings.SplitN(v.stored, "}", 2)[1]
		if ok, _, err := h.Verify(stored, v.password); !ok || err != nil {
			t.Errorf("Verify(%s) = %v, %v", stored, ok, err)
		}
	}
}

func TestVerifyBcryptUsesOnlyFirst72BytesLikeDovecot(t *testing.T) {
	h := cheap(t, nil)
	for _, v := range readVectors(t) {
		if v.scheme == "BLF-CRYPT" && len(v.password) > 72 {
			ok, _, err := h.Verify(v.stored, v.password[:72]+"different tail")
			if !ok || err != nil {
				t.Errorf("Verify(first 72 bytes + other tail) = %v, %v; doveadm says true", ok, err)
			}
			return
		}
	}
	t.Fatal("no BLF-CRYPT vector over 72 bytes")
}

var hashForms = map[string]*regexp.Regexp{
	SchemeArgon2ID:    regexp.MustCompile(`^\{ARGON2ID\}\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`),
	SchemeBlfCrypt:    regexp.MustCompile(`^\{BLF-CRYPT\}\$2y\$04\$[./A-Za-z0-9]{53}$`),
	SchemeSHA512Crypt: regexp.MustCompile(`^\{SHA512-CRYPT\}\$6\$rounds=1000\$[./A-Za-z0-9]{16}\$[./A-Za-z0-9]{86}$`),
}

var testPasswords = []string{
	"secret",
	"pässwörd ünïcode",
	`sp ace $dollar {brace} "quote" \back`,
	strings.Repeat("z", 72),
}

func TestHashRoundTrip(t *testing.T) {
	for scheme, form := range hashForms {
		h := cheap(t, func(o *Options) { o.Scheme = scheme })
		for _, pw := range testPasswords {
			s, err := h.Hash(pw)
			if err != nil {
				t.Fatalf("%s: Hash: %v", scheme, err)
			}
			if !form.MatchString(s) {
				t.Errorf("%s: Hash = %q, not in doveadm's form %s", scheme, s, form)
			}
			if s2, _ := h.Hash(pw); s2 == s {
				t.Errorf("%s: two hashes of one password are equal: no fresh salt", scheme)
			}
			ok, up, err := h.Verify(s, pw)
			if !ok || up || err != nil {
				t.Errorf("%s: Verify(own hash) = %v, %v, %v; want true, false, nil", scheme, ok, up, err)
			}
			if ok, _, err := h.Verify(s, "x"+pw); ok || err != nil {
				t.Errorf("%s: Verify(wrong) = %v, %v", scheme, ok, err)
			}
		}
	}
}

func TestDefaultOptionsWriteDoveadmsArgon2idParameters(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Options(); got != DefaultOptions() {
		t.Fatalf("New(Options{}).Options() = %+v, want DefaultOptions %+v", got, DefaultOptions())
	}
	if testing.Short() {
		t.Skip("64 MiB Argon2 in -short mode")
	}
	s, err := h.Hash("secret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s, "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$") {
		t.Errorf("Hash = %q", s)
	}
}

// doveadm runs Dovecot's own verifier; it needs no running Dovecot and, with -c /dev/null, no config.
func doveadm(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("doveadm")
	if err != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatalf("doveadm not on PATH and FACTEUR_REQUIRE_PEERS=1 (apt-get install dovecot-core)")
		}
		t.Skip("doveadm not on PATH: install dovecot-core to check hashes against Dovecot")
	}
	return path
}

func doveadmVerifies(t *testing.T, path, stored, password string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-c", "/dev/null", "pw", "-t", stored, "-p", password).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil && strings.Contains(string(out), "(verified)"):
		return true
	case errors.As(err, &ee) && strings.Contains(string(out), "Password mismatch"):
		return false
	}
	t.Fatalf("doveadm pw -t %s: %v: %s", stored, err, out)
	return false
}

func TestDoveadmVerifiesFacteurHashes(t *testing.T) {
	path := doveadm(t)
	for scheme := range hashForms {
		for _, mod := range []func(*Options){
			func(o *Options) { o.Scheme = scheme },
			func(o *Options) { o.Scheme = scheme; o.Argon2Threads = 2; o.BcryptCost = 5; o.SHACryptRounds = 5000 },
		} {
			h := cheap(t, mod)
			for _, pw := range testPasswords {
				t.Run(scheme, func(t *testing.T) {
					t.Parallel()
					s, err := h.Hash(pw)
					if err != nil {
						t.Fatal(err)
					}
					if !doveadmVerifies(t, path, s, pw) {
						t.Errorf("doveadm rejects %s for %q", s, pw)
					}
					if doveadmVerifies(t, path, s, "wrong"+pw) {
						t.Errorf("doveadm accepts %s for a wrong password", s)
					}
				})
			}
		}
	}
}

func TestNeedsUpgrade(t *testing.T) {
	argonCheap := cheap(t, nil)
	argonMore := cheap(t, func(o *Options) { o.Argon2Memory = 128 })
	argonMoreTime := cheap(t, func(o *Options) { o.Argon2Time = 2 })
	argonFewerThreads := cheap(t, func(o *Options) { o.Argon2Threads = 2 })
	bcrypt4 := cheap(t, func(o *Options) { o.Scheme = SchemeBlfCrypt })
	bcrypt5 := cheap(t, func(o *Options) { o.Scheme = SchemeBlfCrypt; o.BcryptCost = 5 })
	sha1000 := cheap(t, func(o *Options) { o.Scheme = SchemeSHA512Crypt })
	sha2000 := cheap(t, func(o *Options) { o.Scheme = SchemeSHA512Crypt; o.SHACryptRounds = 2000 })

	hashWith := func(h *Hasher) string {
		s, err := h.Hash("secret")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	argon := hashWith(argonCheap)
	bcr := hashWith(bcrypt4)
	sha := hashWith(sha1000)

	tests := []struct {
		name   string
		h      *Hasher
		stored string
		want   bool
	}{
		{"same argon2id", argonCheap, argon, false},
		{"argon2id, more memory configured", argonMore, argon, true},
		{"argon2id, more passes configured", argonMoreTime, argon, true},
		{"argon2id, other threads configured", argonFewerThreads, argon, false},
		{"bcrypt under argon2id", argonCheap, bcr, true},
		{"same bcrypt", bcrypt4, bcr, false},
		{"bcrypt, higher cost configured", bcrypt5, bcr, true},
		{"argon2id under bcrypt", bcrypt4, argon, true},
		{"same sha512-crypt", sha1000, sha, false},
		{"sha512-crypt, more rounds configured", sha2000, sha, true},
		{"bare sha512-crypt, same rounds", sha1000, strings.TrimPrefix(sha, "{SHA512-CRYPT}"), false},
		{"sha512-crypt.b64 is the same hash", sha1000, "{SHA512-CRYPT.B64}" + base64.StdEncoding.EncodeToString([]byte(strings.TrimPrefix(sha, "{SHA512-CRYPT}"))), false},
		{"plain under argon2id", argonCheap, "{PLAIN}secret", true},
		{"md5-crypt under sha512-crypt", sha2000, "$1$ahcu9Gt3$ZvpQSRCIndl7f1JUNj5YV1", true},
	}
	for _, tt := range tests {
		ok, up, err := tt.h.Verify(tt.stored, "secret")
		if !ok || err != nil || up != tt.want {
			t.Errorf("%s: Verify = %v, %v, %v; want true, %v, nil", tt.name, ok, up, err, tt.want)
		}
	}
	// An upgrade is reported only with a match: without the right password there is nothing to rehash.
	if ok, up, err := argonMore.Verify(argon, "wrong"); ok || up || err != nil {
		t.Errorf("wrong password: Verify = %v, %v, %v; want false, false, nil", ok, up, err)
	}
}

func TestBareValuesUseDefaultScheme(t *testing.T) {
	md5hex := "5ebe2294ecd0e0f08eab7690d2a6ee69" // PLAIN-MD5 of "secret"
	tests := []struct {
		def, stored string
		wantOK      bool
		wantErr     error
	}{
		{"CRYPT", "$1$ahcu9Gt3$ZvpQSRCIndl7f1JUNj5YV1", true, nil},
		{"PLAIN-MD5", md5hex, true, nil},
		{"plain-md5.hex", md5hex, true, nil},
		{"CRYPT", md5hex, false, ErrUnsupported}, // DES-crypt or not a crypt string at all
		{"PLAIN", "secret", true, nil},
		{"PLAIN", "$1$ahcu9Gt3$ZvpQSRCIndl7f1JUNj5YV1", true, nil}, // Dovecot: bare $1$ is MD5-CRYPT
		{"SHA512-CRYPT", "$1$ahcu9Gt3$ZvpQSRCIndl7f1JUNj5YV1", true, nil},
		{"ARGON2ID", "$2y$05$r/apoL2xH.OhQ1mhWfuw9erWMZrk3SoFMDzCMv0RvoOcZ.s4ZHVRW", false, ErrMalformed},
	}
	for _, tt := range tests {
		h := cheap(t, func(o *Options) { o.DefaultScheme = tt.def })
		ok, _, err := h.Verify(tt.stored, "secret")
		if ok != tt.wantOK || !errors.Is(err, tt.wantErr) {
			t.Errorf("DefaultScheme %s, Verify(%s) = %v, %v; want %v, %v", tt.def, tt.stored, ok, err, tt.wantOK, tt.wantErr)
		}
	}
}

// Values that are not hashes must be errors, never matches; no error may quote them.
var malformedValues = []string{
	"",
	"{PLAIN}",
	"{PLAIN.B64}",
	"{PLAIN.B64}!!!!",
	"{PLAIN.HEX}zz",
	"{PLAIN.ROT13}secret",
	"{NOSUCHSCHEME}secret",
	"{secret}",
	"{SHA512-CRYPT}",
	"{SHA512-CRYPT}secret",
	"{SHA512-CRYPT}$6$",
	"{SHA512-CRYPT}$6$abc",
	"{SHA512-CRYPT}$6$abc$def",
	"{SHA512-CRYPT}$6$$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI/",
	"{SHA512-CRYPT}$6$rounds=10$8ShneAAH8jgABoHM$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI/",
	"{SHA512-CRYPT}$6$rounds=05000$8ShneAAH8jgABoHM$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI/",
	"{SHA512-CRYPT}$6$rounds=-5000$8ShneAAH8jgABoHM$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI/",
	"{SHA512-CRYPT}$6$8ShneAAH8jgABoHMxxxxx$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI/",
	"{SHA512-CRYPT}$6$8ShneAAH8jgABoHM$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI",
	"{SHA512-CRYPT}$6$8ShneAAH8jgABoHM$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI!",
	"{SHA512-CRYPT}$y$j9T$abc$def",
	"{SHA512-CRYPT.B64}not base64",
	"{CRYPT}abJnggxhB/yWI", // DES
	"{DES-CRYPT}abJnggxhB/yWI",
	"{BLF-CRYPT}$2x$04$NSYoOiRhsLaAIkop/KWmZOYrP/7DCKkSEjn6Hu0yNUtWrouP8kr.C",
	"{BLF-CRYPT}$2y$03$NSYoOiRhsLaAIkop/KWmZOYrP/7DCKkSEjn6Hu0yNUtWrouP8kr.C",
	"{BLF-CRYPT}$2y$32$NSYoOiRhsLaAIkop/KWmZOYrP/7DCKkSEjn6Hu0yNUtWrouP8kr.C",
	"{BLF-CRYPT}$2y$04$NSYoOiRhsLaAIkop/KWmZOYrP/7DCKkSEjn6Hu0yNUtWrouP8kr.",
	"{BLF-CRYPT}$2y$4$$NSYoOiRhsLaAIkop/KWmZOYrP/7DCKkSEjn6Hu0yNUtWrouP8kr.C",
	"{BLF-CRYPT}$2y$04$NSYoOiRhsLaAIkop/KWmZOYrP/7DCKkSEjn6Hu0yNUtWrouP8kr!C",
	"{MD5-CRYPT}$6$8ShneAAH8jgABoHM$GQvQgDXL/OVsBJIz65vERaJo.U/Mp5TRNB5vgUWi332nWS1HjdRv7aO.Ym530P/UfKDVrb8wJNY6CDdu7/EYI/",
	"{MD5-CRYPT}$1$ahcu9Gt3$ZvpQSRCIndl7f1JUNj5YV",
	"{MD5-CRYPT}$1$ahcu9Gt3xx$ZvpQSRCIndl7f1JUNj5YV1",
	"{MD5-CRYPT}$1$$ZvpQSRCIndl7f1JUNj5YV1",
	"{MD5}secret",
	"{MD5}5ebe2294ecd0e0f08eab7690d2a6ee",
	"{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee6",
	"{PLAIN-MD5.HEX}XXbe2294ecd0e0f08eab7690d2a6ee69",
	"{SHA1}",
	"{SHA1}short",
	"{SSHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", // SHA1 of "test", no salt
	"{SSHA512.HEX}00",
	"{ARGON2ID}",
	"{ARGON2ID}secret",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ==$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=16$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$t=3,m=65536,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=0,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=0$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=256$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=7,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=4294967295,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=4294967295,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=+65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2d$v=19$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk",
	"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk$",
	"{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$z5bpi7ipK+ZLwwRMNHN0yQ$mPs",
	"{ARGON2ID.B64}JGFyZ29uMmlk",
	"$6$8ShneAAH8jgABoHM$short",
	"$argon2id$v=19$m=65536,t=3,p=1$4fiFxCoL9sF5vYx0ndqWhQ$E5HfEIR7Wsd18HqOPw58yzMjxavZinHF8+HsQBX0dmk", // not crypt(3)
	"secret",
	"{",
	"}",
	"{}",
	"{}secret",
	"{.}x",
}

func TestMalformedIsAnErrorNeverAMatch(t *testing.T) {
	h := cheap(t, nil)
	for _, stored := range malformedValues {
		for _, pw := range []string{"secret", "", "test"} {
			ok, up, err := h.Verify(stored, pw)
			if ok || up || err == nil {
				t.Errorf("Verify(%q, %q) = %v, %v, %v; want false, false, error", stored, pw, ok, up, err)
				continue
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Errorf("Verify(%q): %v, want ErrMalformed or ErrUnsupported", stored, err)
			}
			if _, rest, _ := splitScheme(stored); len(rest) >= 4 && strings.Contains(err.Error(), rest) ||
				strings.Contains(err.Error(), "secret") {
				t.Errorf("Verify(%q): error %q quotes the stored value", stored, err)
			}
		}
	}
}

func TestHashRefusesBadPasswords(t *testing.T) {
	bc := cheap(t, func(o *Options) { o.Scheme = SchemeBlfCrypt })
	if _, err := bc.Hash(strings.Repeat("a", 73)); !errors.Is(err, ErrPasswordTooLong) {
		t.Errorf("BLF-CRYPT Hash(73 bytes) error = %v, want ErrPasswordTooLong", err)
	}
	if _, err := bc.Hash(strings.Repeat("é", 37)); !errors.Is(err, ErrPasswordTooLong) { // 74 bytes, 37 runes
		t.Errorf("BLF-CRYPT Hash(74 bytes of UTF-8) error = %v, want ErrPasswordTooLong", err)
	}
	for _, s := range []string{SchemeArgon2ID, SchemeSHA512Crypt} {
		h := cheap(t, func(o *Options) { o.Scheme = s })
		long := strings.Repeat("a", 200)
		stored, err := h.Hash(long)
		if err != nil {
			t.Fatalf("%s Hash(200 bytes): %v", s, err)
		}
		if ok, _, _ := h.Verify(stored, long[:199]+"b"); ok {
			t.Errorf("%s: a 200-byte password matched with its last byte changed", s)
		}
	}
	for _, pw := range []string{"", "a\x00b"} {
		if _, err := bc.Hash(pw); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("Hash(%q) error = %v, want ErrInvalidPassword", pw, err)
		}
	}
	// A NUL can reach Verify from a careless caller; it is never a match.
	if ok, _, err := cheap(t, nil).Verify("{PLAIN}a", "a\x00b"); ok || err != nil {
		t.Errorf("Verify with NUL = %v, %v", ok, err)
	}
}

func TestScheme(t *testing.T) {
	tests := []struct {
		stored, want string
		ok           bool
	}{
		{"{ARGON2ID}$argon2id$…", "ARGON2ID", true},
		{"{sha512-crypt.b64}JDYk", "SHA512-CRYPT.B64", true},
		{"{SSHA512.HEX}00", "SSHA512.HEX", true},
		{"{NOSUCH}x", "NOSUCH", true},
		{"$6$abc$def", "", false},
		{"{unterminated", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := Scheme(tt.stored)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Scheme(%q) = %q, %v; want %q, %v", tt.stored, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	bad := []func(*Options){
		func(o *Options) { o.Scheme = "PLAIN" },
		func(o *Options) { o.Scheme = "SSHA512" },
		func(o *Options) { o.BcryptCost = 3 },
		func(o *Options) { o.BcryptCost = 32 },
		func(o *Options) { o.SHACryptRounds = 999 },
		func(o *Options) { o.Argon2Memory = 8; o.Argon2Threads = 2 },
		func(o *Options) { o.Argon2Memory = maxArgon2Memory + 1 },
		func(o *Options) { o.Argon2Time = maxArgon2Time + 1 },
		func(o *Options) { o.DefaultScheme = "NOSUCH" },
		func(o *Options) { o.DefaultScheme = "PLAIN.ROT13" },
	}
	for i, mod := range bad {
		o := CheapOptions()
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("case %d: New(%+v) accepted", i, o)
		}
	}
	if h, err := New(Options{Scheme: "blf-crypt"}); err != nil || h.Options().Scheme != SchemeBlfCrypt {
		t.Errorf("New(blf-crypt) = %v, %v", h, err)
	}
}
