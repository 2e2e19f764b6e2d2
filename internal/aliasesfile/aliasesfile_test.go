package aliasesfile

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// debianAliases is Debian's default /etc/aliases with the usual additions.
const debianAliases = `# /etc/aliases
mailer-daemon: postmaster
postmaster: root
nobody: root
hostmaster: root
usenet: root
news: root
webmaster: root
www: root
ftp: root
abuse: root
noc: root
security: root
root: jane

# A list, continued over lines, with a command and an archive.
staff:	jane,
	bob@example.org,
	"|/usr/bin/logger -t staff, mail",
	/var/archive/staff.mbox,
  # a comment inside does not end the entry
	:include:/etc/mail/staff.extra
"Quoted Name": \jane, <Carol@Example.ORG>
devnull: /dev/null
Upper: jane
`

func TestParseDebian(t *testing.T) {
	entries, problems, err := Parse(strings.NewReader(debianAliases))
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Errorf("problems: %v", problems)
	}
	got := map[string][]Destination{}
	lines := map[string]int{}
	for _, e := range entries {
		got[e.Name] = e.Destinations
		lines[e.Name] = e.Line
	}
	if len(entries) != 17 {
		t.Errorf("%d entries, want 17", len(entries))
	}
	want := map[string][]Destination{
		"mailer-daemon": {{LocalUser, "postmaster"}},
		"root":          {{LocalUser, "jane"}},
		"staff": {
			{LocalUser, "jane"}, {Address, "bob@example.org"},
			{Command, "|/usr/bin/logger -t staff, mail"}, {File, "/var/archive/staff.mbox"},
			{Include, ":include:/etc/mail/staff.extra"},
		},
		"quoted name": {{NoForward, "jane"}, {Address, "Carol@Example.ORG"}},
		"devnull":     {{File, "/dev/null"}},
		"upper":       {{LocalUser, "jane"}},
	}
	for name, w := range want {
		if !reflect.DeepEqual(got[name], w) {
			t.Errorf("%s: %v, want %v", name, got[name], w)
		}
	}
	if lines["staff"] != 17 || lines["root"] != 14 {
		t.Errorf("lines: staff %d root %d, want 17 and 14", lines["staff"], lines["root"])
	}
}

func TestParseProblems(t *testing.T) {
	in := "no colon here\n" +
		"empty:\n" +
		"ok: a\n" +
		"ok: b\n" +
		"bad: \"|unterminated\n" +
		"inc: :include:relative/path\n" +
		"ctl: a\x01b\n" +
		"spaces: john doe@example.org\n" +
		"last: c"
	entries, problems, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name != "ok" || entries[0].Destinations[0].Value != "a" ||
		entries[1].Name != "last" || entries[1].Line != 9 {
		t.Errorf("entries: %+v", entries)
	}
	var lines []int
	for _, p := range problems {
		lines = append(lines, p.Line)
	}
	if fmt.Sprint(lines) != "[1 2 4 5 6 7 8]" {
		t.Errorf("problems on lines %v, want [1 2 4 5 6 7 8]: %v", lines, problems)
	}
	if !strings.Contains(problems[2].Error(), "duplicate") {
		t.Errorf("line 4: %v", problems[2])
	}
}

func TestParseLongEntry(t *testing.T) {
	in := "big: " + strings.Repeat("x@example.org, ", MaxLine/15+10) + "\nsmall: y\n"
	entries, problems, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != "small" || len(problems) != 1 {
		t.Errorf("entries %+v, problems %v", entries, problems)
	}
}

func TestParseForward(t *testing.T) {
	in := "# my forward\r\n" +
		"\\jane, jane@example.org\r\n" +
		"\r\n" +
		"\"|/usr/bin/procmail -f-\"\n" +
		"/home/jane/archive\n" +
		"bad\x00line\n"
	got, problems := ParseForward(in)
	want := []Destination{{NoForward, "jane"}, {Address, "jane@example.org"},
		{Command, "|/usr/bin/procmail -f-"}, {File, "/home/jane/archive"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseForward = %v, want %v", got, want)
	}
	if len(problems) != 1 || problems[0].Line != 6 {
		t.Errorf("problems %v, want one on line 6", problems)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind Kind
		val  string
	}{
		{"jane", LocalUser, "jane"},
		{"Jane", LocalUser, "jane"},
		{"\\Jane", NoForward, "jane"},
		{`"\\jane"`, NoForward, "jane"},
		{"j@x.org", Address, "j@x.org"},
		{"<j@x.org>", Address, "j@x.org"},
		{`"john doe"@x.org`, Address, `"john doe"@x.org`},
		{"| /bin/cat", Command, "|/bin/cat"},
		{`"|/bin/cat > /tmp/x"`, Command, "|/bin/cat > /tmp/x"},
		{"/var/mail/x", File, "/var/mail/x"},
		{"/var/mail/dir/", File, "/var/mail/dir/"},
		{":INCLUDE: /etc/x", Include, ":include:/etc/x"},
		{"-jane", 0, ""},
		{".jane", 0, ""},
		{"|", 0, ""},
		{"a/b", 0, ""},
	} {
		d, err := Classify(tc.in)
		if tc.kind == 0 {
			if err == nil {
				t.Errorf("Classify(%q) = %v, want an error", tc.in, d)
			}
			continue
		}
		if err != nil || d.Kind != tc.kind || d.Value != tc.val {
			t.Errorf("Classify(%q) = %v, %v; want %v %q", tc.in, d, err, tc.kind, tc.val)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(debianAliases)
	f.Add("a: \"b\\\"c\", <d@e>\n\tf\n")
	f.Fuzz(func(t *testing.T, in string) {
		entries, _, err := Parse(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name == "" || e.Name != strings.ToLower(e.Name) || len(e.Destinations) == 0 {
				t.Fatalf("bad entry %+v", e)
			}
			for _, d := range e.Destinations {
				if d.Kind < Address || d.Kind > Include || d.Value == "" {
					t.Fatalf("bad destination %+v", d)
				}
				if strings.ContainsAny(d.Value, "\n\r\x00") {
					t.Fatalf("destination with a line break or NUL: %q", d.Value)
				}
			}
		}
		ParseForward(in)
	})
}
