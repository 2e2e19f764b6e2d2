package cleanup

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func runCopy(t *testing.T, in string, p copyParams, bufSize int) (string, copyResult, error) {
	t.Helper()
	if p.limit == 0 {
		p.limit = 1 << 30
	}
	var out bytes.Buffer
	br := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(in)), bufSize)
	if bufSize == 0 {
		br = bufio.NewReaderSize(strings.NewReader(in), 64<<10)
	}
	res, err := copyMessage(br, &out, p)
	return out.String(), res, err
}

func TestCopyHeaderEdits(t *testing.T) {
	add := copyParams{
		messageID: func() string { return "Message-ID: <new@host>\r\n" },
		date:      func() string { return "Date: D\r\n" },
	}
	tests := []struct {
		name    string
		in      string
		p       copyParams
		want    string
		hops    int
		wantMID string
	}{
		{"return-path removed with its folds",
			"Return-Path: <a@b>\r\n\t<more>\r\nSubject: hi\r\n\r\nbody\r\n", copyParams{},
			"Subject: hi\r\n\r\nbody\r\n", 0, ""},
		{"return-path any case, obsolete space before colon",
			"RETURN-PATH : <x>\r\nreturn-path:<y>\r\nX: 1\r\n\r\nb\r\n", copyParams{},
			"X: 1\r\n\r\nb\r\n", 0, ""},
		{"body line looking like a header is untouched",
			"Subject: s\r\n\r\nReturn-Path: <kept>\r\nReceived: kept\r\n", copyParams{},
			"Subject: s\r\n\r\nReturn-Path: <kept>\r\nReceived: kept\r\n", 0, ""},
		{"received counted, folded ones once",
			"Received: a\r\n by b\r\nReceived: c\r\nreceived: d\r\nX-Received: no\r\n\r\nReceived: body\r\n", copyParams{},
			"Received: a\r\n by b\r\nReceived: c\r\nreceived: d\r\nX-Received: no\r\n\r\nReceived: body\r\n", 3, ""},
		{"message-id and date added before the blank line",
			"From: a@b\r\nSubject: s\r\n\r\nbody\r\n", add,
			"From: a@b\r\nSubject: s\r\nMessage-ID: <new@host>\r\nDate: D\r\n\r\nbody\r\n", 0, "<new@host>"},
		{"existing message-id and date kept, folded id read",
			"Message-Id:\r\n <old@x>\r\nDATE: Mon\r\n\r\nb\r\n", add,
			"Message-Id:\r\n <old@x>\r\nDATE: Mon\r\n\r\nb\r\n", 0, "<old@x>"},
		{"only date missing",
			"Message-ID: <m@x>\r\n\r\n", add,
			"Message-ID: <m@x>\r\nDate: D\r\n\r\n", 0, "<m@x>"},
		{"no body at all",
			"Subject: s\r\n", add,
			"Subject: s\r\nMessage-ID: <new@host>\r\nDate: D\r\n", 0, "<new@host>"},
		{"empty message",
			"", add,
			"Message-ID: <new@host>\r\nDate: D\r\n", 0, "<new@host>"},
		{"non-header line ends the header; a blank line is inserted",
			"Subject: s\r\nthis is body\r\nmore\r\n", add,
			"Subject: s\r\nMessage-ID: <new@host>\r\nDate: D\r\n\r\nthis is body\r\nmore\r\n", 0, "<new@host>"},
		{"mbox From line is body",
			"From a@b Mon Jan 1\r\nSubject: s\r\n\r\nx\r\n", copyParams{},
			"\r\nFrom a@b Mon Jan 1\r\nSubject: s\r\n\r\nx\r\n", 0, ""},
		{"continuation before any field is body",
			" indented\r\n", copyParams{},
			"\r\n indented\r\n", 0, ""},
		{"last line without CRLF gets one",
			"Subject: s\r\n\r\nno end", copyParams{},
			"Subject: s\r\n\r\nno end\r\n", 0, ""},
		{"last header line without CRLF gets one before added fields",
			"Subject: s", add,
			"Subject: s\r\nMessage-ID: <new@host>\r\nDate: D\r\n", 0, "<new@host>"},
		{"dot lines and 8-bit bytes pass unchanged",
			"Subject: s\r\n\r\n.\r\n..x\r\n\xff\xfe\x00\r\n", copyParams{},
			"Subject: s\r\n\r\n.\r\n..x\r\n\xff\xfe\x00\r\n", 0, ""},
	}
	for _, tc := range tests {
		for _, bs := range []int{0, 16} { // whole buffers, and tiny ones that split lines
			out, res, err := runCopy(t, tc.in, tc.p, bs)
			if err != nil {
				t.Errorf("%s (buf %d): %v", tc.name, bs, err)
				continue
			}
			if out != tc.want {
				t.Errorf("%s (buf %d):\n got %q\nwant %q", tc.name, bs, out, tc.want)
			}
			if res.received != tc.hops {
				t.Errorf("%s (buf %d): received = %d, want %d", tc.name, bs, res.received, tc.hops)
			}
			if res.messageID != tc.wantMID {
				t.Errorf("%s (buf %d): message id = %q, want %q", tc.name, bs, res.messageID, tc.wantMID)
			}
			if res.size != int64(len(tc.in)) {
				t.Errorf("%s (buf %d): size = %d, want %d", tc.name, bs, res.size, len(tc.in))
			}
		}
	}
}

func TestCopyRejectsBareLineEnds(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"bare LF in header", "Subject: s\nX: y\r\n\r\n", errBareLF},
		{"bare LF in body", "S: s\r\n\r\nline\nline\r\n", errBareLF},
		{"LF first", "\n", errBareLF},
		{"bare CR in header", "Subject: s\rX: y\r\n\r\n", errBareCR},
		{"bare CR in body", "S: s\r\n\r\na\rb\r\n", errBareCR},
		{"CR CR LF", "S: s\r\n\r\na\r\r\n", errBareCR},
		{"CR at the very end", "S: s\r\n\r\na\r", errBareCR},
		{"smuggled end of data", "S: s\r\n\r\na\n.\r\nMAIL FROM:<x>\r\n", errBareLF},
		{"smuggled end of data with CR", "S: s\r\n\r\na\r\n.\nMAIL FROM:<x>\r\n", errBareLF},
	}
	for _, tc := range tests {
		for _, bs := range []int{0, 16} {
			_, _, err := runCopy(t, tc.in, copyParams{}, bs)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s (buf %d): err = %v, want %v", tc.name, bs, err, tc.want)
			}
		}
	}
}

func TestCopyLimits(t *testing.T) {
	msg := "Subject: s\r\n\r\n" + strings.Repeat("x", 100) + "\r\n"
	if _, _, err := runCopy(t, msg, copyParams{limit: int64(len(msg))}, 0); err != nil {
		t.Errorf("message of exactly the limit: %v", err)
	}
	if _, _, err := runCopy(t, msg, copyParams{limit: int64(len(msg) - 1)}, 0); !errors.Is(err, errTooBig) {
		t.Errorf("message one byte over: err = %v, want errTooBig", err)
	}
	hops := strings.Repeat("Received: x\r\n", 5) + "\r\nb\r\n"
	if _, _, err := runCopy(t, hops, copyParams{maxHops: 5}, 0); err != nil {
		t.Errorf("5 hops of 5: %v", err)
	}
	if _, _, err := runCopy(t, hops, copyParams{maxHops: 4}, 0); !errors.Is(err, errTooManyHops) {
		t.Errorf("5 hops of 4: err = %v, want errTooManyHops", err)
	}
}

func TestCopyLongHeaderLine(t *testing.T) {
	// A header line longer than the read buffer: the name is in the first
	// fragment, the rest follows it.
	long := "X-Long: " + strings.Repeat("a", 100) + "\r\n"
	rp := "Return-Path: <" + strings.Repeat("b", 100) + ">\r\n"
	in := long + rp + "\r\nbody\r\n"
	out, _, err := runCopy(t, in, copyParams{}, 16)
	if err != nil {
		t.Fatal(err)
	}
	if out != long+"\r\nbody\r\n" {
		t.Errorf("got %q", out)
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("disk on fire")
	}
	w.after--
	return len(p), nil
}

func TestCopyReportsReadAndWriteErrors(t *testing.T) {
	br := bufio.NewReader(io.MultiReader(strings.NewReader("Subject: s\r\n"), iotest.ErrReader(errors.New("connection reset"))))
	_, err := copyMessage(br, io.Discard, copyParams{limit: 1 << 20})
	var re *readError
	if !errors.As(err, &re) {
		t.Errorf("read failure: err = %v, want a readError", err)
	}
	br = bufio.NewReader(strings.NewReader("Subject: s\r\n\r\nbody\r\n"))
	_, err = copyMessage(br, &failingWriter{after: 1}, copyParams{limit: 1 << 20})
	var we *writeError
	if !errors.As(err, &we) {
		t.Errorf("write failure: err = %v, want a writeError", err)
	}
}

func FuzzCopyMessage(f *testing.F) {
	f.Add("Return-Path: <a>\r\nSubject: s\r\n\r\nbody\r\n")
	f.Add("a\r\nb\n")
	f.Add("Received: x\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		var out bytes.Buffer
		br := bufio.NewReaderSize(strings.NewReader(in), 16)
		_, err := copyMessage(br, &out, copyParams{limit: 1 << 20, messageID: func() string { return "Message-ID: <x@y>\r\n" }})
		if err != nil {
			return
		}
		// Whatever was accepted, the output has only CRLF line ends and ends with one.
		o := out.String()
		if strings.Contains(strings.ReplaceAll(o, "\r\n", ""), "\r") || strings.Contains(strings.ReplaceAll(o, "\r\n", ""), "\n") {
			t.Fatalf("bare line end in output %q", o)
		}
		if !strings.HasSuffix(o, "\r\n") {
			t.Fatalf("output %q does not end with CRLF", o)
		}
		for _, line := range strings.SplitAfter(headerOf(o), "\r\n") {
			if name, ok := fieldName([]byte(line)); ok && strings.EqualFold(name, "Return-Path") {
				t.Fatalf("Return-Path left in header of %q", o)
			}
		}
	})
}

// headerOf returns the header block of a message (up to the first empty line).
func headerOf(msg string) string {
	if i := strings.Index(msg, "\r\n\r\n"); i >= 0 {
		return msg[:i+2]
	}
	if strings.HasPrefix(msg, "\r\n") {
		return ""
	}
	return msg
}
