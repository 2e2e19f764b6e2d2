package address

import (
	"errors"
	"strings"
	"testing"
)

func TestDomain(t *testing.T) {
	tests := []struct {
		in, want string
		err      error // nil: success
	}{
		{"example.com", "example.com", nil},
		{"Example.COM", "example.com", nil},
		{"  example.com \t", "example.com", nil},
		{"example.com.", "example.com", nil},
		{"localhost", "localhost", nil},
		{"bücher.example", "xn--bcher-kva.example", nil},
		{"BÜCHER.example", "xn--bcher-kva.example", nil},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", nil},
		{"XN--BCHER-KVA.EXAMPLE.", "xn--bcher-kva.example", nil},
		{"ｅｘａｍｐｌｅ．com", "example.com", nil},               // full-width letters and dot
		{"例え.テスト", "xn--r8jz45g.xn--zckzah", nil},         // Japanese
		{"faß.de", "xn--fa-hia.de", nil},                  // non-transitional: ß kept
		{"_dmarc.example.com", "_dmarc.example.com", nil}, // underscores like Postfix
		{"my_host.example", "my_host.example", nil},
		{"r1---sn-abc.googlevideo.com", "r1---sn-abc.googlevideo.com", nil}, // "--" at 3-4
		{"1.2.3.example", "1.2.3.example", nil},
		{"a-b.c-d", "a-b.c-d", nil},
		{strings.Repeat("a", 63) + ".example", strings.Repeat("a", 63) + ".example", nil},
		{label63x4(), label63x4(), nil},

		{"", "", ErrSyntax},
		{"   ", "", ErrSyntax},
		{".", "", ErrSyntax},
		{"example.com..", "", ErrSyntax},
		{".example.com", "", ErrSyntax},
		{"a..example", "", ErrSyntax},
		{"exa mple.com", "", ErrSyntax},
		{"exa\tmple.com", "", ErrSyntax},
		{"exa\x00mple.com", "", ErrSyntax},
		{"exa\x7fmple.com", "", ErrSyntax},
		{"user@example.com", "", ErrSyntax},
		{"example.com/x", "", ErrSyntax},
		{"-example.com", "", ErrSyntax},
		{"example-.com", "", ErrSyntax},
		{"example.-com", "", ErrSyntax},
		{"example.c_m", "", ErrSyntax}, // no underscore in the top-level label
		{"example.123", "", ErrSyntax}, // all-numeric top-level label
		{"192.0.2.1", "", ErrSyntax},
		{"xn--zz.example", "", ErrSyntax}, // bad punycode
		{"\xff.example", "", ErrSyntax},
		{"\ufffd.example", "", ErrSyntax},
		{strings.Repeat("a", 64) + ".example", "", ErrTooLong},
		{label63x4() + "a", "", ErrTooLong},
		{strings.Repeat("a.", 600) + "com", "", ErrTooLong},
		{"[192.0.2.1]", "", ErrIPLiteral},
		{"[IPv6:2001:db8::1]", "", ErrIPLiteral},
	}
	for _, tt := range tests {
		got, err := Domain(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Domain(%q) = %q, %v; want error %v", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Domain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		if again, err := Domain(got); err != nil || again != got {
			t.Errorf("Domain(Domain(%q)) = %q, %v; want %q", tt.in, again, err, got)
		}
	}
}

// label63x4 is a 253-character domain: four labels of 63, 63, 63 and 61.
func label63x4() string {
	l := strings.Repeat("a", 63)
	return l + "." + l + "." + l + "." + strings.Repeat("b", 61)
}

// domain252 is a 252-character domain, so "a@" + domain252() has 254.
func domain252() string {
	l := strings.Repeat("a", 63)
	return l + "." + l + "." + l + "." + strings.Repeat("b", 60)
}

func TestDomainUnicode(t *testing.T) {
	for in, want := range map[string]string{
		"xn--bcher-kva.example": "bücher.example",
		"BÜCHER.example.":       "bücher.example",
		"example.com":           "example.com",
	} {
		if got, err := DomainUnicode(in); err != nil || got != want {
			t.Errorf("DomainUnicode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := DomainUnicode("a b"); err == nil {
		t.Errorf("DomainUnicode(%q) succeeded", "a b")
	}
}

func TestIPLiteral(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical; "" if not an IP literal
	}{
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"},
		{"[ipv6:2001:DB8:0:0:0:0:0:1]", "[IPv6:2001:db8::1]"},
		{"[IPv6:::ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]"},
		{"[IPv6:::1]", "[IPv6:::1]"},
		{"192.0.2.1", ""},
		{"[192.0.2]", ""},
		{"[192.0.2.256]", ""},
		{"[192.0.2.01]", ""},
		{"[2001:db8::1]", ""},       // IPv6 needs its tag
		{"[IPv6:192.0.2.1]", ""},    // and IPv4 must not have it
		{"[IPv6:fe80::1%eth0]", ""}, // no zones
		{"[tag:content]", ""},
		{"[]", ""},
		{"[", ""},
		{"[example.com]", ""},
	}
	for _, tt := range tests {
		if got := IsIPLiteral(tt.in); got != (tt.want != "") {
			t.Errorf("IsIPLiteral(%q) = %v", tt.in, got)
		}
		got, err := ipLiteral(tt.in)
		if tt.want == "" {
			if err == nil || !errors.Is(err, ErrSyntax) {
				t.Errorf("ipLiteral(%q) = %q, %v; want syntax error", tt.in, got, err)
			}
		} else if err != nil || got != tt.want {
			t.Errorf("ipLiteral(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if ip, err := ParseIPLiteral("[192.0.2.1]"); err != nil || ip.String() != "192.0.2.1" {
		t.Errorf("ParseIPLiteral = %v, %v", ip, err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in        string
		local     string // Address.Local
		domain    string // Address.Domain
		str       string // String()
		canonical string // Canonical()
		utf8      bool   // NeedsSMTPUTF8()
	}{
		{"john@example.com", "john", "example.com", "john@example.com", "john@example.com", false},
		{"John.Doe@Example.COM", "John.Doe", "example.com", "John.Doe@example.com", "john.doe@example.com", false},
		{"  john@example.com  ", "john", "example.com", "john@example.com", "john@example.com", false},
		{"john@example.com.", "john", "example.com", "john@example.com", "john@example.com", false},
		{"user+tag@example.com", "user+tag", "example.com", "user+tag@example.com", "user+tag@example.com", false},
		{"!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~", "example.com", "!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~@example.com", false},
		{"x@bücher.example", "x", "xn--bcher-kva.example", "x@xn--bcher-kva.example", "x@xn--bcher-kva.example", true},
		{"x@xn--bcher-kva.example", "x", "xn--bcher-kva.example", "x@xn--bcher-kva.example", "x@xn--bcher-kva.example", false},
		{"Jürgen@Bücher.Example", "Jürgen", "xn--bcher-kva.example", "Jürgen@xn--bcher-kva.example", "jürgen@xn--bcher-kva.example", true},
		{"ÄÖÜ@example.com", "ÄÖÜ", "example.com", "ÄÖÜ@example.com", "äöü@example.com", true},
		{"用户@例子.广告", "用户", "xn--fsqu00a.xn--4rr70v", "用户@xn--fsqu00a.xn--4rr70v", "用户@xn--fsqu00a.xn--4rr70v", true},
		{"ΑΒΓ@example.com", "ΑΒΓ", "example.com", "ΑΒΓ@example.com", "αβγ@example.com", true},

		// Quoted local parts: content unquoted in Local, quoted again only if needed.
		{`"john doe"@example.com`, "john doe", "example.com", `"john doe"@example.com`, `"john doe"@example.com`, false},
		{`"John Doe"@example.com`, "John Doe", "example.com", `"John Doe"@example.com`, `"john doe"@example.com`, false},
		{`"john"@example.com`, "john", "example.com", "john@example.com", "john@example.com", false},
		{`"jo\hn"@example.com`, "john", "example.com", "john@example.com", "john@example.com", false},
		{`"a\"b"@example.com`, `a"b`, "example.com", `"a\"b"@example.com`, `"a\"b"@example.com`, false},
		{`"a\\b"@example.com`, `a\b`, "example.com", `"a\\b"@example.com`, `"a\\b"@example.com`, false},
		{`"user@other"@example.com`, "user@other", "example.com", `"user@other"@example.com`, `"user@other"@example.com`, false},
		{`"a..b"@example.com`, "a..b", "example.com", `"a..b"@example.com`, `"a..b"@example.com`, false},
		{`"(x)"@example.com`, "(x)", "example.com", `"(x)"@example.com`, `"(x)"@example.com`, false},
		{`"Jö Ö"@example.com`, "Jö Ö", "example.com", `"Jö Ö"@example.com`, `"jö ö"@example.com`, true},

		// Dots anywhere, as Postfix (and real-world mobile providers).
		{"a..b@example.com", "a..b", "example.com", `"a..b"@example.com`, `"a..b"@example.com`, false},
		{".a@example.com", ".a", "example.com", `".a"@example.com`, `".a"@example.com`, false},
		{"a.@example.com", "a.", "example.com", `"a."@example.com`, `"a."@example.com`, false},

		// Address literals.
		{"postmaster@[192.0.2.1]", "postmaster", "[192.0.2.1]", "postmaster@[192.0.2.1]", "postmaster@[192.0.2.1]", false},
		{"Postmaster@[ipv6:2001:DB8::1]", "Postmaster", "[IPv6:2001:db8::1]", "Postmaster@[IPv6:2001:db8::1]", "postmaster@[IPv6:2001:db8::1]", false},

		// Limits: 64-octet local part, 254-octet address.
		{strings.Repeat("a", 64) + "@example.com", strings.Repeat("a", 64), "example.com", strings.Repeat("a", 64) + "@example.com", strings.Repeat("a", 64) + "@example.com", false},
		{"a@" + domain252(), "a", domain252(), "a@" + domain252(), "a@" + domain252(), false},
	}
	for _, tt := range tests {
		a, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if a.Local != tt.local || a.Domain != tt.domain {
			t.Errorf("Parse(%q) = {%q, %q}; want {%q, %q}", tt.in, a.Local, a.Domain, tt.local, tt.domain)
		}
		if got := a.String(); got != tt.str {
			t.Errorf("Parse(%q).String() = %q; want %q", tt.in, got, tt.str)
		}
		if got := a.Canonical(); got != tt.canonical {
			t.Errorf("Parse(%q).Canonical() = %q; want %q", tt.in, got, tt.canonical)
		}
		if got := a.NeedsSMTPUTF8(); got != tt.utf8 {
			t.Errorf("Parse(%q).NeedsSMTPUTF8() = %v; want %v", tt.in, got, tt.utf8)
		}
		if got, err := Normalize(tt.in); err != nil || got != tt.canonical {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.canonical)
		}
		// String and Canonical are external forms that parse to the same address.
		for _, s := range []string{a.String(), a.Canonical()} {
			b, err := Parse(s)
			if err != nil {
				t.Errorf("Parse(%q) (from %q): %v", s, tt.in, err)
				continue
			}
			if b.Canonical() != a.Canonical() {
				t.Errorf("Parse(%q).Canonical() = %q; want %q", s, b.Canonical(), a.Canonical())
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, in string
		err      error
	}{
		{"empty", "", ErrSyntax},
		{"blank", "   ", ErrSyntax},
		{"no at", "john.example.com", ErrSyntax},
		{"empty local", "@example.com", ErrSyntax},
		{"empty quoted local", `""@example.com`, ErrSyntax},
		{"empty domain", "john@", ErrSyntax},
		{"domain only dot", "john@.", ErrSyntax},
		{"space in local", "john doe@example.com", ErrSyntax},
		{"tab in local", "john\tdoe@example.com", ErrSyntax},
		{"NUL in local", "jo\x00hn@example.com", ErrSyntax},
		{"CR in local", "jo\rhn@example.com", ErrSyntax},
		{"LF in quoted local", "\"jo\nhn\"@example.com", ErrSyntax},
		{"DEL in quoted local", "\"jo\x7fhn\"@example.com", ErrSyntax},
		{"C1 control in local", "jo\u0085hn@example.com", ErrSyntax},
		{"C1 control in quoted local", "\"jo\u0085hn\"@example.com", ErrSyntax},
		{"escaped control", "\"jo\\\x01hn\"@example.com", ErrSyntax},
		{"unterminated quote", `"john@example.com`, ErrSyntax},
		{"trailing backslash", `"john\`, ErrSyntax},
		{"text after quote", `"john"x@example.com`, ErrSyntax},
		{"quote inside local", `jo"hn@example.com`, ErrSyntax},
		{"unquoted at in local", "user@other@example.com", ErrSyntax},
		{"unquoted specials", "a(b)@example.com", ErrSyntax},
		{"unquoted comma", "a,b@example.com", ErrSyntax},
		{"backslash", `a\b@example.com`, ErrSyntax},
		{"angle brackets", "<john@example.com>", ErrSyntax},
		{"source route", "@a,@b:john@example.com", ErrSyntax},
		{"invalid UTF-8 in local", "jo\xffhn@example.com", ErrSyntax},
		{"invalid UTF-8 in quoted local", "\"jo\xffhn\"@example.com", ErrSyntax},
		{"non-ASCII space", "jo\u00a0hn@example.com", ErrSyntax},
		{"space in domain", "john@exa mple.com", ErrSyntax},
		{"space after at", "john@ example.com", ErrSyntax},
		{"at in domain", `"a"@b@example.com`, ErrSyntax},
		{"bad domain", "john@-example.com", ErrSyntax},
		{"numeric domain", "john@192.0.2.1", ErrSyntax},
		{"bad literal", "john@[192.0.2.300]", ErrSyntax},
		{"IPv6 literal without tag", "john@[2001:db8::1]", ErrSyntax},
		{"general literal", "john@[x-tag:foo]", ErrSyntax},
		{"local 65", strings.Repeat("a", 65) + "@example.com", ErrTooLong},
		{"quoted local 65 on the wire", `"` + strings.Repeat("a", 62) + ` "@example.com`, ErrTooLong},
		{"over-escaped local 65 on the wire", `"` + strings.Repeat(`\a`, 32) + `"@example.com`, ErrTooLong},
		{"local longer once lower-cased", strings.Repeat("Ⱥ", 22) + "@example.com", ErrTooLong}, // 2 octets → 3
		{"address 255", strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 62), ErrTooLong},
		{"address 255 with a 253-octet domain", "a@" + label63x4(), ErrTooLong},
		{"label 64", "a@" + strings.Repeat("b", 64) + ".example", ErrTooLong},
		{"huge", strings.Repeat("a", 5000) + "@example.com", ErrTooLong},
	}
	for _, tt := range tests {
		a, err := Parse(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: Parse(%q) = %+v, %v; want error %v", tt.name, tt.in, a, err, tt.err)
		}
		if _, err := Normalize(tt.in); err == nil {
			t.Errorf("%s: Normalize(%q) succeeded", tt.name, tt.in)
		}
	}
}

func TestParseInternal(t *testing.T) {
	tests := []struct {
		in, local, str, canonical string
	}{
		{"John@Example.COM", "John", "John@example.com", "john@example.com"},
		{"john doe@example.com", "john doe", `"john doe"@example.com`, `"john doe"@example.com`},
		{"user@other@example.com", "user@other", `"user@other"@example.com`, `"user@other"@example.com`},
		{`a"b\c@example.com`, `a"b\c`, `"a\"b\\c"@example.com`, `"a\"b\\c"@example.com`},
		{"a..b@example.com", "a..b", `"a..b"@example.com`, `"a..b"@example.com`},
		{" x@example.com", " x", `" x"@example.com`, `" x"@example.com`},
		{"Jürgen@bücher.example", "Jürgen", "Jürgen@xn--bcher-kva.example", "jürgen@xn--bcher-kva.example"},
	}
	for _, tt := range tests {
		a, err := ParseInternal(tt.in)
		if err != nil {
			t.Errorf("ParseInternal(%q): %v", tt.in, err)
			continue
		}
		if a.Local != tt.local || a.String() != tt.str || a.Canonical() != tt.canonical {
			t.Errorf("ParseInternal(%q) = %q, String %q, Canonical %q; want %q, %q, %q",
				tt.in, a.Local, a.String(), a.Canonical(), tt.local, tt.str, tt.canonical)
		}
		if b, err := Parse(a.String()); err != nil || b.Local != a.Local || b.Domain != a.Domain {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", a.String(), b, err, a)
		}
	}
	for _, in := range []string{
		"", "john", "@example.com", "john@", "jo\nhn@example.com", "jo\x00hn@example.com",
		"jo\xffhn@example.com", "john@exa mple.com", "john@example.com ",
		strings.Repeat("a", 65) + "@example.com",
		strings.Repeat(" ", 63) + "@example.com", // 65 octets once quoted
	} {
		if a, err := ParseInternal(in); err == nil {
			t.Errorf("ParseInternal(%q) = %+v; want error", in, a)
		}
	}
}

func TestNeedsSMTPUTF8(t *testing.T) {
	for in, want := range map[string]bool{
		"a@example.com":           false,
		"a@xn--bcher-kva.example": false,
		"a@bücher.example":        true,
		"ä@example.com":           true,
		`"ä b"@example.com`:       true,
		"a@ｅｘａｍｐｌｅ.com":           true, // full-width: not ASCII as received
	} {
		a, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if got := a.NeedsSMTPUTF8(); got != want {
			t.Errorf("Parse(%q).NeedsSMTPUTF8() = %v; want %v", in, got, want)
		}
	}
	// Hand-built addresses are judged by their fields.
	if !(Address{Local: "a", Domain: "bücher.example"}).NeedsSMTPUTF8() {
		t.Error("NeedsSMTPUTF8 of a U-label Domain field = false")
	}
}

func TestZeroAddress(t *testing.T) {
	var a Address
	if a.String() != "" || a.Canonical() != "" {
		t.Errorf("zero Address: String %q, Canonical %q; want empty", a.String(), a.Canonical())
	}
}

func TestNormalizeDomainOrAddress(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Example.COM", "example.com", true},
		{"bücher.example.", "xn--bcher-kva.example", true},
		{"@Example.COM", "@example.com", true},
		{"@bücher.example", "@xn--bcher-kva.example", true},
		{" @example.com ", "@example.com", true},
		{"John@Example.COM", "john@example.com", true},
		{`"John Doe"@Example.COM`, `"john doe"@example.com`, true},
		{"", "", false},
		{"@", "", false},
		{"@@example.com", "", false},
		{"@ example.com", "", false},
		{"@[192.0.2.1]", "", false},
		{"john@", "", false},
		{"exa mple.com", "", false},
		{"@a,@b:john@example.com", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeDomainOrAddress(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NormalizeDomainOrAddress(%q) = %q, %v; want %q (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
