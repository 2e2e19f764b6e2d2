package mailfile

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

func TestLFWriter(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{[]string{"a\r\nb\r\n"}, "a\nb\n"},
		{[]string{"a\r", "\nb\r", "\n"}, "a\nb\n"},
		{[]string{"a\r", "b\r"}, "a\rb\r"},
		{[]string{"a\r", "\r\n"}, "a\r\n"},
		{[]string{"\r\n\r\n", "x"}, "\n\nx"},
	} {
		var buf bytes.Buffer
		w := NewLFWriter(bufio.NewWriter(&buf))
		for _, s := range tt.in {
			w.Write([]byte(s))
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tt.want || w.Written() != int64(len(tt.want)) || w.Lines() != int64(strings.Count(tt.want, "\n")) {
			t.Errorf("%q → %q (n=%d lines=%d); want %q", tt.in, buf.String(), w.Written(), w.Lines(), tt.want)
		}
	}
}
