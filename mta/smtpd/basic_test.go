package smtpd_test

import (
	"context"
	"strings"
	"testing"

	"github.com/facteur/facteur/mta/smtpd"
)

const msgBody = "From: someone@foreign.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"

func TestMXQueuesMessageAfterCommit(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	ehlo := c.ehlo()
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 52428800", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING", "STARTTLS"} {
		if !strings.Contains(ehlo, "250-"+ext+"\n") && !strings.HasSuffix(ehlo, "250 "+ext) {
			t.Errorf("EHLO reply lacks %s:\n%s", ext, ehlo)
		}
	}
	if strings.Contains(ehlo, "AUTH") {
		t.Errorf("MX offers AUTH before TLS:\n%s", ehlo)
	}
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write(msgBody + ".\r\n")
	rep := c.expect("250 2.0.0 Ok: queued as ")
	id := strings.TrimPrefix(rep, "250 2.0.0 Ok: queued as ")
	c.cmd("QUIT", "221 ")

	var sender, protocol, clientAddr string
	err := w.db.Pool.QueryRow(context.Background(),
		`SELECT sender, protocol, client_addr FROM queue_message WHERE id = $1`, id).Scan(&sender, &protocol, &clientAddr)
	if err != nil {
		t.Fatalf("queue row of %s: %v", id, err)
	}
	if sender != "someone@foreign.test" || protocol != "ESMTP" || clientAddr != "127.0.0.1" {
		t.Errorf("row = %q %q %q", sender, protocol, clientAddr)
	}
	f, err := w.sp.Open(id)
	if err != nil {
		t.Fatalf("spool file: %v", err)
	}
	f.Close()
}
