package srs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// postsrsdNow is the fake time of postsrsd's own test suite
// (tests/blackbox/socketmap.py, tests/unit/test_srs2.c: 2020-01-01 00:01:00
// UTC, secret "tops3cr3t"), whose expected addresses were made by libsrs2.
// Matching them shows that our addresses are interchangeable with postsrsd's.
var postsrsdNow = time.Unix(1577836860, 0)

func newSRS(t *testing.T, o Options) *SRS {
	t.Helper()
	if o.Secrets == nil {
		o.Secrets = []string{"tops3cr3t"}
	}
	if o.Now == nil {
		o.Now = func() time.Time { return postsrsdNow }
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestForwardMatchesPostsrsd(t *testing.T) {
	s := newSRS(t, Options{})
	for _, tc := range []struct{ sender, domain, want string }{
		{"test@example.com", "example.com", "test@example.com"},
		{"test@otherdomain.com", "example.com", "SRS0=vmyz=2W=otherdomain.com=test@example.com"},
		{"foo", "example.com", "foo"},
		{"", "example.com", ""},
		{"SRS0=XjO9=2V=otherdomain.com=test@example.com", "example.com", "SRS0=XjO9=2V=otherdomain.com=test@example.com"},
		{"SRS0=opaque+string@otherdomain.com", "example.com", "SRS1=chaI=otherdomain.com==opaque+string@example.com"},
		{"SRS1=X=thirddomain.com==opaque+string@otherdomain.com", "example.com", "SRS1=JIBX=thirddomain.com==opaque+string@example.com"},
		{"test@" + strings.Repeat("a", 512-9) + ".net", "example.com", "SRS0=G7tR=2W=" + strings.Repeat("a", 512-9) + ".net=test@example.com"},
		// The forwarding domain may be given as an address.
		{"test@otherdomain.com", "postmaster@example.com", "SRS0=vmyz=2W=otherdomain.com=test@example.com"},
		// Same domain, other case: not rewritten.
		{"test@Example.COM", "example.com", "test@Example.COM"},
	} {
		if got := s.Forward(tc.sender, tc.domain); got != tc.want {
			t.Errorf("Forward(%q, %q) = %q, want %q", tc.sender, tc.domain, got, tc.want)
		}
	}
}

func TestReverseMatchesPostsrsd(t *testing.T) {
	s := newSRS(t, Options{})
	for _, tc := range []struct {
		addr, want string
		err        error
	}{
		{"test@example.com", "", ErrNotSRS},
		{"SRS0=vmyz=2W=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		{"SRS0=XjO9=2V=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		{"SRS1=JIBX=thirddomain.com==opaque+string@example.com", "SRS0=opaque+string@thirddomain.com", nil},
		// Six months old, and six months in the future.
		{"SRS0=te87=T7=otherdomain.com=test@example.com", "", ErrExpired},
		{"SRS0=VcIb=7N=otherdomain.com=test@example.com", "", ErrExpired},
		{"SRS0=FAKE=2V=otherdomain.com=test@example.com", "", ErrBadHash},
		// Hashes and timestamps are compared case-insensitively; the result
		// keeps the case it was given.
		{"srs0=xjo9=2v=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		{"SRS0=XJO9=2V=OTHERDOMAIN.COM=TEST@EXAMPLE.COM", "TEST@OTHERDOMAIN.COM", nil},
		{"SRS0=@example.com", "", ErrMalformed},
		{"SRS0=XjO9@example.com", "", ErrMalformed},
		{"SRS0=XjO9=2V@example.com", "", ErrMalformed},
		{"SRS0=XjO9=2V=otherdomain.com@example.com", "", ErrMalformed},
		{"SRS1=JIBX=thirddomain.com@example.com", "", ErrMalformed},
		{"SRS0=iCvJ=2W=" + strings.Repeat("a", 512-34) + ".net=test@example.com", "test@" + strings.Repeat("a", 512-34) + ".net", nil},
		// The other separators after the tag.
		{"SRS0+XjO9=2V=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		{"SRS0-XjO9=2V=otherdomain.com=test@example.com", "test@otherdomain.com", nil},
		// A bare local part reverses too.
		{"SRS0=XjO9=2V=otherdomain.com=test", "test@otherdomain.com", nil},
		// Not SRS: a tag without a separator, or something else.
		{"SRS0xXjO9=2V=otherdomain.com=test@example.com", "", ErrNotSRS},
		{"SRS2=a=b=c=d@example.com", "", ErrNotSRS},
	} {
		got, err := s.Reverse(tc.addr)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("Reverse(%q) = %q, %v; want %q, %v", tc.addr, got, err, tc.want, tc.err)
		}
	}
}

func TestTamperedAddressesFailTheHash(t *testing.T) {
	s := newSRS(t, Options{})
	fwd := s.Forward("alice@origin.example", "fwd.example")
	for _, tamper := range []struct{ from, to string }{
		{"=origin.example=", "=evil.example="},
		{"=alice@", "=mallory@"},
	} {
		bad := strings.Replace(fwd, tamper.from, tamper.to, 1)
		if bad == fwd {
			t.Fatalf("tampering %q did not change %q", tamper.from, fwd)
		}
		if _, err := s.Reverse(bad); !errors.Is(err, ErrBadHash) {
			t.Errorf("Reverse(%q): %v, want ErrBadHash", bad, err)
		}
	}
	// A different timestamp changes the hash too.
	f := strings.SplitN(fwd, "=", 5)
	f[2] = timestamp(postsrsdNow.Add(-24 * time.Hour))
	if _, err := s.Reverse(strings.Join(f, "=")); !errors.Is(err, ErrBadHash) {
		t.Errorf("Reverse with an altered timestamp: %v, want ErrBadHash", err)
	}
	// A hash of the wrong length never matches.
	if _, err := s.Reverse(strings.Replace(fwd, "SRS0="+f[1], "SRS0="+f[1][:3], 1)); !errors.Is(err, ErrBadHash) {
		t.Errorf("short hash: %v", err)
	}
	// Another secret does not verify.
	other := newSRS(t, Options{Secrets: []string{"another secret"}})
	if _, err := other.Reverse(fwd); !errors.Is(err, ErrBadHash) {
		t.Errorf("Reverse under another secret: %v, want ErrBadHash", err)
	}
}

func TestTimestampValidity(t *testing.T) {
	now := postsrsdNow
	s := newSRS(t, Options{MaxAge: 21, Now: func() time.Time { return now }})
	addr := s.Forward("bob@origin.example", "fwd.example")
	for _, tc := range []struct {
		after time.Duration
		err   error
	}{
		{0, nil},
		{21 * 24 * time.Hour, nil},
		{22 * 24 * time.Hour, ErrExpired},
		{-24 * time.Hour, ErrExpired}, // made "tomorrow": from the future
		{1024 * 24 * time.Hour, nil},  // the 10-bit day counter wraps, as libsrs2's does
	} {
		now = postsrsdNow.Add(tc.after)
		got, err := s.Reverse(addr)
		if !errors.Is(err, tc.err) {
			t.Errorf("%v later: %q, %v; want %v", tc.after, got, err, tc.err)
		}
		if err == nil && got != "bob@origin.example" {
			t.Errorf("%v later: %q", tc.after, got)
		}
	}
}

func TestSecretRotationFirstSignsAllVerify(t *testing.T) {
	old := newSRS(t, Options{Secrets: []string{"old"}})
	rotated := newSRS(t, Options{Secrets: []string{"new", "old"}})
	oldAddr := old.Forward("carol@origin.example", "fwd.example")
	if got, err := rotated.Reverse(oldAddr); err != nil || got != "carol@origin.example" {
		t.Fatalf("an address signed with the old secret: %q, %v", got, err)
	}
	newAddr := rotated.Forward("carol@origin.example", "fwd.example")
	if newAddr == oldAddr {
		t.Fatal("the rotated rewriter still signs with the old secret")
	}
	if _, err := old.Reverse(newAddr); !errors.Is(err, ErrBadHash) {
		t.Fatalf("the old secret verified an address of the new one: %v", err)
	}
	onlyNew := newSRS(t, Options{Secrets: []string{"new"}})
	if got, err := onlyNew.Reverse(newAddr); err != nil || got != "carol@origin.example" {
		t.Fatalf("new secret: %q, %v", got, err)
	}
}

func TestSRS1ChainsBackToTheFirstForwarder(t *testing.T) {
	first := newSRS(t, Options{Secrets: []string{"first"}})
	second := newSRS(t, Options{Secrets: []string{"second"}})
	third := newSRS(t, Options{Secrets: []string{"third"}})

	a0 := first.Forward("dave@origin.example", "fwd1.example")
	a1 := second.Forward(a0, "fwd2.example")
	if !strings.HasPrefix(a1, "SRS1=") || !strings.Contains(a1, "=fwd1.example==") || !strings.HasSuffix(a1, "@fwd2.example") {
		t.Fatalf("second hop made %q", a1)
	}
	a2 := third.Forward(a1, "fwd3.example")
	if !strings.HasPrefix(a2, "SRS1=") || !strings.Contains(a2, "=fwd1.example==") || !strings.HasSuffix(a2, "@fwd3.example") {
		t.Fatalf("third hop made %q", a2)
	}
	// A bounce to the third forwarder goes straight to the first one.
	back, err := third.Reverse(a2)
	if err != nil || back != a0[:strings.LastIndexByte(a0, '@')]+"@fwd1.example" {
		t.Fatalf("third reversed %q to %q, %v; want %q", a2, back, err, a0)
	}
	if back, err := second.Reverse(a1); err != nil || back != a0 {
		t.Fatalf("second reversed %q to %q, %v", a1, back, err)
	}
	if got, err := first.Reverse(back); err != nil || got != "dave@origin.example" {
		t.Fatalf("first reversed %q to %q, %v", back, got, err)
	}
	// The second forwarder's hash does not verify at the third.
	if _, err := third.Reverse(a1); !errors.Is(err, ErrBadHash) {
		t.Fatalf("third accepted the second's SRS1 address: %v", err)
	}
}

func TestSHA256AndOptions(t *testing.T) {
	s1 := newSRS(t, Options{})
	s256 := newSRS(t, Options{Algorithm: SHA256, HashLength: 6, Separator: '+'})
	a := s256.Forward("erin@origin.example", "fwd.example")
	if !strings.HasPrefix(a, "SRS0+") {
		t.Fatalf("separator: %q", a)
	}
	if h := strings.SplitN(a[len("SRS0+"):], "=", 2)[0]; len(h) != 6 {
		t.Fatalf("hash length of %q", a)
	}
	if got, err := s256.Reverse(a); err != nil || got != "erin@origin.example" {
		t.Fatalf("SHA256 reverse: %q, %v", got, err)
	}
	if _, err := s1.Reverse(a); !errors.Is(err, ErrBadHash) {
		t.Fatalf("SHA1 verified a SHA256 address: %v", err)
	}
	always := newSRS(t, Options{AlwaysRewrite: true})
	got := always.Forward("test@example.com", "example.com")
	if back, err := always.Reverse(got); !strings.HasPrefix(got, "SRS0=") || err != nil || back != "test@example.com" {
		t.Fatalf("AlwaysRewrite made %q, reversed to %q, %v", got, back, err)
	}
	for _, o := range []Options{
		{},
		{Secrets: []string{""}},
		{Secrets: []string{"x"}, Algorithm: "md5"},
		{Secrets: []string{"x"}, Separator: '#'},
		{Secrets: []string{"x"}, MaxAge: 1024},
		{Secrets: []string{"x"}, HashLength: 40},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestIsSRS(t *testing.T) {
	for addr, want := range map[string]bool{
		"SRS0=a=b=c=d@x.example": true,
		"srs1+a=b==c@x.example":  true,
		"SRS0-x":                 true,
		"SRS0@x.example":         false,
		"srs@x.example":          false,
		"alice@x.example":        false,
		"SRS0":                   false,
	} {
		if got := IsSRS(addr); got != want {
			t.Errorf("IsSRS(%q) = %v", addr, got)
		}
	}
}
