package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"testing"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// BenchmarkListMailboxes100k times one page of the mailbox list of a
// domain with 100,000 mailboxes, through HTTP with a domain admin's
// session: paging, search and the total are all SQL. Manual:
//
//	go test -run '^$' -bench ListMailboxes100k ./admin/
//
// Here (2 shared cores, the test cluster with fsync off), per request,
// before migration 00012's trigram indexes: first page 59 ms (mostly the
// total's count), a page at offset 99,950 570 ms (OFFSET walks the rows
// before it), a substring search 346 ms (a scan of every address and name,
// twice: page and total). BenchmarkMailboxListPage100k times the web UI's
// page on the admin role's own pool; keyset paging is the step left.
func BenchmarkListMailboxes100k(b *testing.B) {
	db := storetest.New(b)
	ctx := context.Background()
	hasher, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		b.Fatal(err)
	}
	st := store.New(db.Pool)
	for _, sql := range []string{
		`INSERT INTO domain (name) VALUES ('big.test')`,
		`INSERT INTO mailbox (address, name, maildir) SELECT 'user' || g || '@big.test', 'User ' || g, ''
		 FROM generate_series(1, 100000) g`,
		`ANALYZE mailbox`,
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	pw := "bench-password-1"
	hash, _ := hasher.Hash(pw)
	if _, err := st.CreateAdmin(ctx, store.Admin{Username: "ada", Password: hash, Active: true}, []string{"big.test"}); err != nil {
		b.Fatal(err)
	}
	h, err := New(st, Options{Hasher: hasher}, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	body, _ := json.Marshal(map[string]string{"username": "ada", "password": pw})
	res, err := c.Post(srv.URL+"/api/v1/login", "application/json", bytes.NewReader(body))
	if err != nil || res.StatusCode != 200 {
		b.Fatalf("login: %v %v", res, err)
	}
	res.Body.Close()
	for _, bc := range []struct{ name, query string }{
		{"first-page", "limit=50"},
		{"last-page", "limit=50&offset=99950"},
		{"search", "search=user9999&limit=50"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				res, err := c.Get(srv.URL + "/api/v1/mailboxes?" + bc.query)
				if err != nil || res.StatusCode != 200 {
					b.Fatalf("%v %v", res, err)
				}
				var p page[store.Mailbox]
				if err := json.NewDecoder(res.Body).Decode(&p); err != nil || p.Total == 0 {
					b.Fatalf("page %+v %v", p.Total, err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
}
