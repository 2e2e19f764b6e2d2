package mailqfmt

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMailqReasonLinesFollowPostqueue(t *testing.T) {
	var b bytes.Buffer
	q := NewMailq(&b, time.UTC)
	m := &Message{ID: "ABCDEFGH12", Size: 2048, ArrivedAt: time.Date(2026, 1, 5, 7, 8, 9, 0, time.UTC), Sender: "a@b.example",
		Recipients: []Recipient{{Address: "r1@x"}, {Address: "r2@x", Reason: "451 try\x1b[2J"}, {Address: "r3@x", Reason: "451 try\x1b[2J"},
			{Address: "r4@x"}}}
	if err := q.Add(m); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	want := "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n" +
		"ABCDEFGH12            2048 Mon Jan  5 07:08:09 a@b.example\n" +
		"                                               r1@x\n" +
		strings.Repeat(" ", 76-len("451 try?[2J")) + "(451 try?[2J)\n" +
		"                                               r2@x\n" +
		"                                               r3@x\n" +
		strings.Repeat(" ", 76-len("reason unavailable")) + "(reason unavailable)\n" +
		"                                               r4@x\n" +
		"\n-- 2 Kbytes in 1 Request.\n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
	if n, size := q.Count(); n != 1 || size != 2048 {
		t.Fatalf("count = %d, %d", n, size)
	}
}

func TestShapeCutsLongDomainsOnTheLeft(t *testing.T) {
	var b bytes.Buffer
	heads := ShapeHeads([]float64{5, 10})
	rows := []ShapeRow{{Domain: "TOTAL", Total: 1234, Counts: []int64{1000, 200, 34}},
		{Domain: strings.Repeat("a", 80) + ".example", Total: 1, Counts: []int64{1, 0, 0}}}
	if err := WriteShape(&b, heads, rows, 0); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 || lines[0] != strings.Repeat(" ", 62)+"    T    5  10 10+" {
		t.Fatalf("heads %q", lines)
	}
	if !strings.HasPrefix(lines[2], "+aaaa") || !strings.Contains(lines[2], "a.example    1    1   0   0") || len(lines[2]) != len(lines[1]) {
		t.Fatalf("long domain line %q (TOTAL line %q)", lines[2], lines[1])
	}
}
