package address

import "testing"

// FuzzParse checks that no input makes the parsers panic and that the
// canonical form is a fixed point: Canonical of a parsed address parses to
// the same address and the same Canonical. Seeds are in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add("John.Doe@Example.COM")
	f.Add(`"john doe"@bücher.example.`)
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := Parse(s); err == nil {
			checkFixedPoint(t, "Parse", s, a)
			if n, err := Normalize(s); err != nil || n != a.Canonical() {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", s, n, err, a.Canonical())
			}
		}
		if a, err := ParseInternal(s); err == nil {
			checkFixedPoint(t, "ParseInternal", s, a)
		}
		if d, err := Domain(s); err == nil {
			if again, err := Domain(d); err != nil || again != d {
				t.Fatalf("Domain(Domain(%q)) = %q, %v; want %q", s, again, err, d)
			}
			if len(d) > maxDomainLen {
				t.Fatalf("Domain(%q) = %q, longer than %d", s, d, maxDomainLen)
			}
		}
		_, _ = NormalizeDomainOrAddress(s)
		_ = StripSourceRoute(s)
		_, _ = SplitExtension(s, "+-")
	})
}

func checkFixedPoint(t *testing.T, fn, s string, a Address) {
	t.Helper()
	c := a.Canonical()
	if len(c) > maxPathLen || len(a.String()) > maxPathLen {
		t.Fatalf("%s(%q): Canonical %q or String %q longer than %d", fn, s, c, a.String(), maxPathLen)
	}
	b, err := Parse(c)
	if err != nil {
		t.Fatalf("%s(%q).Canonical() = %q does not parse: %v", fn, s, c, err)
	}
	if b.Canonical() != c {
		t.Fatalf("%s(%q).Canonical() = %q parses to Canonical %q", fn, s, c, b.Canonical())
	}
	// The sender's spelling survives the external and the internal form.
	for _, p := range []struct {
		name string
		f    func(string) (Address, error)
		in   string
	}{
		{"Parse", Parse, a.String()},
		{"ParseInternal", ParseInternal, a.Local + "@" + a.Domain},
	} {
		b, err := p.f(p.in)
		if err != nil || b.Local != a.Local || b.Domain != a.Domain {
			t.Fatalf("%s(%q) = %+v, %v; want Local %q, Domain %q (from %s(%q))", p.name, p.in, b, err, a.Local, a.Domain, fn, s)
		}
	}
}
