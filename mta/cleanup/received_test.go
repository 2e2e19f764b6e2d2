package cleanup

import (
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("", 3600))

func TestReceivedHeaderPostfixForm(t *testing.T) {
	cl := &Client{Addr: "192.0.2.7", Name: "mail.example.org", Helo: "mail.example.org", Protocol: "ESMTPSA",
		TLS: "TLSv1.3 TLS_AES_128_GCM_SHA256", AuthUser: "alice@example.org"}
	got := receivedHeader("mx.example.com", "0Q7fK2mZx9Ab", cl, "bob@example.com", false, testNow)
	want := "Received: from mail.example.org (mail.example.org [192.0.2.7])\r\n" +
		"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n" +
		"\t(Authenticated sender: alice@example.org)\r\n" +
		"\tby mx.example.com (facteur) with ESMTPSA id 0Q7fK2mZx9Ab\r\n" +
		"\tfor <bob@example.com>; Wed, 4 Mar 2026 05:06:07 +0100\r\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	plain := receivedHeader("mx.example.com", "ID0000000001", &Client{Addr: "2001:db8::1", Helo: "h", Protocol: "ESMTP"}, "", false, testNow)
	wantPlain := "Received: from h (unknown [IPv6:2001:db8::1])\r\n\tby mx.example.com (facteur) with ESMTP id ID0000000001; Wed, 4 Mar 2026 05:06:07 +0100\r\n"
	if plain != wantPlain {
		t.Errorf("got:\n%q\nwant:\n%q", plain, wantPlain)
	}

	local := receivedHeader("host.example", "ID0000000002", &Client{LocalUser: "www-data", Protocol: "local"}, "", false, testNow)
	wantLocal := "Received: by host.example (facteur, from user www-data)\r\n\tid ID0000000002; Wed, 4 Mar 2026 05:06:07 +0100\r\n"
	if local != wantLocal {
		t.Errorf("got:\n%q\nwant:\n%q", local, wantLocal)
	}
}

// TestReceivedHeaderSanitised feeds hostile client values: whatever they
// hold, the field stays one field whose only line breaks are its own folds,
// and no delimiter the client sent can close a comment or an address.
func TestReceivedHeaderSanitised(t *testing.T) {
	hostile := []string{
		"evil\r\nX-Injected: yes",
		"evil\nBcc: victim@example.com",
		"evil\rX: y",
		"a)(b) by forged.example (Postfix) with ESMTP id X; ",
		"<script>;\\",
		"\x00\x01\x7f\xff\xfe",
		"é\u202eñ",
		strings.Repeat("A", 5000),
	}
	fold := regexp.MustCompile(`\r\n\t`)
	for _, h := range hostile {
		for _, utf8ok := range []bool{false, true} {
			cl := &Client{Addr: "192.0.2.1", Name: h, Helo: h, Protocol: h, TLS: h + " " + h, AuthUser: h}
			got := receivedHeader("mx.example.com", "ID0000000003", cl, h, utf8ok, testNow)
			if !strings.HasPrefix(got, "Received: from ") || !strings.HasSuffix(got, "\r\n") {
				t.Errorf("%q: malformed: %q", h, got)
				continue
			}
			body := fold.ReplaceAllString(strings.TrimSuffix(got, "\r\n"), " ")
			if strings.ContainsAny(body, "\r\n\x00\x7f") {
				t.Errorf("%q: line break or control character left: %q", h, got)
			}
			// Exactly the parentheses and angle brackets of the template.
			if strings.Count(body, "(") != 4 || strings.Count(body, ")") != 4 ||
				strings.Count(body, "<") != 1 || strings.Count(body, ">") != 1 || strings.Count(body, ";") != 1 {
				t.Errorf("%q: delimiters from the client survived: %q", h, got)
			}
			if !utf8ok && strings.ContainsFunc(body, func(r rune) bool { return r >= 0x80 }) {
				t.Errorf("%q: non-ASCII in a non-SMTPUTF8 message: %q", h, got)
			}
			if strings.Contains(body, "\u202e") {
				t.Errorf("%q: bidi control kept: %q", h, got)
			}
			for _, line := range strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n") {
				if len(line) > 998 {
					t.Errorf("%q: line of %d bytes (RFC 5322 2.1.1: at most 998)", h, len(line))
				}
			}
		}
	}
}

func TestQueueIDs(t *testing.T) {
	var g idGen
	valid := regexp.MustCompile(`^[0-9A-Za-z]{12}$`)
	now := time.Now()
	seen := map[string]bool{}
	var ids []string
	for i := 0; i < 20000; i++ {
		// Many ids in the same millisecond, and a clock that steps back.
		at := now
		if i == 10000 {
			at = now.Add(-time.Hour)
		}
		id := g.next(at)
		if !valid.MatchString(id) {
			t.Fatalf("id %q is not 12 characters of [0-9A-Za-z]", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !sort.StringsAreSorted(ids) {
		t.Errorf("ids of one process do not sort in the order they were made")
	}
	ts, ok := QueueIDTime(ids[0])
	if !ok || ts.Sub(now).Abs() > time.Millisecond {
		t.Errorf("QueueIDTime(%s) = %v, %v; want about %v", ids[0], ts, ok, now)
	}
	later := g.next(now.Add(time.Second))
	if later <= ids[len(ids)-1] {
		t.Errorf("id a second later %s does not sort after %s", later, ids[len(ids)-1])
	}
	// Two generators (two nodes) in the same millisecond draw different suffixes.
	var a, b idGen
	if a.next(now) == b.next(now) {
		t.Errorf("two generators made the same id in the same millisecond")
	}
	if _, ok := QueueIDTime("short"); ok {
		t.Errorf("QueueIDTime accepted a malformed id")
	}
}
