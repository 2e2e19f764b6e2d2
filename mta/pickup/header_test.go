package pickup

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestHeaderAddresses(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"bob@example.com", []string{"bob@example.com"}},
		{`"Bob, B." <bob@example.com>, carol@example.com`, []string{"bob@example.com", "carol@example.com"}},
		{"undisclosed-recipients:;", nil},
		{"Team: a@x.test, b@x.test;, c@y.test", []string{"a@x.test", "b@x.test", "c@y.test"}},
		{"root", []string{"root"}},
		{"root, bob@example.com", []string{"root", "bob@example.com"}},
		{"Root User <root>", []string{"root"}},
		{"root (the admin), postmaster", []string{"root", "postmaster"}},
		{"=?utf-8?q?J=C3=B6?= <jo@example.com>", []string{"jo@example.com"}},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := headerAddresses(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("headerAddresses(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"a b c", "<unterminated", "x@y, (, z"} {
		if got, err := headerAddresses(bad); err == nil {
			t.Errorf("headerAddresses(%q) = %q, want an error", bad, got)
		}
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name, in string
		names    []string
		rest     string
		body     string
	}{
		{"plain", "To: a\r\nSubject: s\r\n\r\nbody\r\n", []string{"to", "subject"}, "", "body\r\n"},
		{"folded", "To: a,\r\n  b\r\nX: y\r\n\r\n", []string{"to", "x"}, "", ""},
		{"mbox From line", "From someone Mon Jan  1 00:00:00 2024\r\nTo: a\r\n\r\nb\r\n", []string{"to"}, "", "b\r\n"},
		{"no separator", "To: a\r\nthis is the body\r\nmore\r\n", []string{"to"}, "this is the body\r\n", "more\r\n"},
		{"no header", "hello\r\n", nil, "hello\r\n", ""},
		{"header only", "To: a\r\n", []string{"to"}, "", ""},
		{"space before colon", "Subject : s\r\n\r\n", []string{"subject"}, "", ""},
		{"empty", "", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(tt.in)), 16)
			h, err := readHeader(br, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range h.fields {
				names = append(names, f.name)
			}
			if !slices.Equal(names, tt.names) || string(h.rest) != tt.rest {
				t.Fatalf("fields %q rest %q; want %q %q", names, h.rest, tt.names, tt.rest)
			}
			body, _ := io.ReadAll(br)
			if string(body) != tt.body {
				t.Fatalf("body %q, want %q", body, tt.body)
			}
		})
	}
	h, _ := readHeader(bufio.NewReader(strings.NewReader("To: a,\r\n b\r\nBcc: c\r\nX: y\r\nbody\r\n")), 1000)
	if got := string(h.bytes([]string{"bcc"}, "From: me\r\n")); got != "To: a,\r\n b\r\nX: y\r\nFrom: me\r\n\r\nbody\r\n" {
		t.Fatalf("bytes = %q", got)
	}
	if v := h.values("to"); len(v) != 1 || v[0].value != "a, b" {
		t.Fatalf("unfolded To: %q", v)
	}
	if _, err := readHeader(bufio.NewReader(strings.NewReader("X: "+strings.Repeat("y", 2000)+"\r\n\r\n")), 1000); !errors.Is(err, errHeaderTooBig) {
		t.Fatalf("big header: %v", err)
	}
}

func TestCRLFReader(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb", "a\r\nb\r\n"},
		{"a\rb\n", "a\rb\r\n"}, // the bare CR is for cleanup to refuse
		{"", ""},
		{"\n\n", "\r\n\r\n"},
	}
	for _, tt := range tests {
		got, err := io.ReadAll(newCRLFReader(iotest.OneByteReader(strings.NewReader(tt.in))))
		if err != nil || string(got) != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.in, got, err, tt.want)
		}
		got, _ = io.ReadAll(iotest.HalfReader(newCRLFReader(strings.NewReader(tt.in))))
		if string(got) != tt.want {
			t.Errorf("%q (half reads): got %q", tt.in, got)
		}
	}
}

func TestChunkReader(t *testing.T) {
	read := func(in string) (string, error) {
		b, err := io.ReadAll(&chunkReader{br: bufio.NewReader(strings.NewReader(in))})
		return string(b), err
	}
	if got, err := read("3\nabc2\nde0\nrest"); err != nil || got != "abcde" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, in := range []string{"3\nabc", "3\nab", "", "5\nabcde2\n"} {
		if _, err := read(in); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: err %v, want unexpected EOF", in, err)
		}
	}
	for _, in := range []string{"x\n", "-1\n", "99999999999\n"} {
		if _, err := read(in); !errors.Is(err, errBadChunk) {
			t.Errorf("%q: err %v, want a bad chunk", in, err)
		}
	}
}
