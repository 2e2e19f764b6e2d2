package address

import "testing"

func TestSplitExtension(t *testing.T) {
	tests := []struct {
		local, delims, user, ext string
	}{
		{"user+foo", "+", "user", "foo"},
		{"user+foo+bar", "+", "user", "foo+bar"},
		{"user-foo+bar", "+-", "user", "foo+bar"}, // first of any delimiter
		{"user+foo-bar", "+-", "user", "foo-bar"},
		{"user+", "+", "user", ""},
		{"User+Foo", "+", "User", "Foo"}, // spelling kept
		{"user", "+", "user", ""},
		{"user+foo", "", "user+foo", ""},
		{"user+foo", "-", "user+foo", ""},
		{"+foo", "+", "+foo", ""},      // would leave an empty user
		{"-foo+x", "+-", "-foo+x", ""}, // so is a leading delimiter of another kind
		{"", "+", "", ""},
		{"jürgen+ä", "+", "jürgen", "ä"},
		{"a§b", "§", "a", "b"}, // a multi-byte delimiter

		// Reserved names are never split (Postfix split_addr).
		{"postmaster", "+-", "postmaster", ""},
		{"MAILER-DAEMON", "-", "MAILER-DAEMON", ""},
		{"double-bounce", "-", "double-bounce", ""},
		{"owner-list", "-", "owner-list", ""},
		{"list-request", "-", "list-request", ""},
		{"List-Request", "+-", "List-Request", ""},
		{"-request", "-", "-request", ""},
		// owner-/-request are special only when '-' is a delimiter.
		{"owner+x", "+", "owner", "x"},
		{"owner-list+x", "+", "owner-list", "x"},
	}
	for _, tt := range tests {
		user, ext := SplitExtension(tt.local, tt.delims)
		if user != tt.user || ext != tt.ext {
			t.Errorf("SplitExtension(%q, %q) = %q, %q; want %q, %q", tt.local, tt.delims, user, ext, tt.user, tt.ext)
		}
	}
}

func TestHasRouting(t *testing.T) {
	for local, want := range map[string]bool{
		"user":       false,
		"user+tag":   false,
		"first.last": false,
		"user%other": true,
		"other!user": true,
		"user@other": true,
		"a%b@c":      true,
		"john doe":   false,
		"jürgen":     false,
	} {
		if got := HasRouting(local); got != want {
			t.Errorf("HasRouting(%q) = %v; want %v", local, got, want)
		}
	}
	// The relay tests reach HasRouting through both parsers.
	for _, in := range []string{`"user@other.example"@example.com`, `user%other.example@example.com`, `other.example!user@example.com`} {
		a, err := Parse(in)
		if err != nil || !HasRouting(a.Local) {
			t.Errorf("Parse(%q) = %+v, %v; want a routing local part", in, a, err)
		}
	}
	if a, err := ParseInternal("user@other.example@example.com"); err != nil || a.Local != "user@other.example" || !HasRouting(a.Local) {
		t.Errorf("ParseInternal = %+v, %v; want routing local part user@other.example", a, err)
	}
}

func TestStripSourceRoute(t *testing.T) {
	for in, want := range map[string]string{
		"@a,@b:user@d":   "user@d",
		"@a:user@d":      "user@d",
		"<@a,@b:user@d>": "<user@d>",
		"user@d":         "user@d",
		"<user@d>":       "<user@d>",
		`@a:"x:y"@d`:     `"x:y"@d`,
		"@example.com":   "@example.com", // no ':', left for Parse to reject
		"":               "",
		"<>":             "<>",
	} {
		if got := StripSourceRoute(in); got != want {
			t.Errorf("StripSourceRoute(%q) = %q; want %q", in, got, want)
		}
	}
	if a, err := Parse(StripSourceRoute("@relay.example,@other.example:John@Example.COM")); err != nil || a.Canonical() != "john@example.com" {
		t.Errorf("Parse after StripSourceRoute = %+v, %v", a, err)
	}
}
