package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// BenchmarkMailboxListPage100k times the web UI's mailbox list page (the
// HTML a browser gets, through HTTP, with a session) over a domain of
// 100,000 mailboxes: first page, last page, a substring search that finds
// one mailbox and one that finds many, as the domain admin and as a
// superadmin. Paging, search and the total are SQL (migration 00012 adds
// trigram indexes for the search). Manual, not part of CI:
//
//	go test -run '^$' -bench MailboxListPage100k -benchtime 20x ./admin/
//
// It prints each case's time per page.
func BenchmarkMailboxListPage100k(b *testing.B) {
	db := storetest.New(b)
	ctx := context.Background()
	hasher, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		b.Fatal(err)
	}
	// The admin role's own pool, as `facteur serve` opens it: each listing
	// planned for its parameters.
	st, err := store.Open(ctx, db.URL, store.Options{ApplicationName: "bench-admin", CustomPlans: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	for _, sql := range []string{
		`INSERT INTO domain (name) VALUES ('big.test'), ('small.test')`,
		`INSERT INTO mailbox (address, name, maildir, quota_bytes) SELECT 'user' || g || '@big.test', 'User ' || g, '', 1073741824
		 FROM generate_series(1, 100000) g`,
		`INSERT INTO quota_usage (username, bytes, messages) SELECT 'user' || g || '@big.test', g * 1000, g
		 FROM generate_series(1, 100000, 3) g`,
		`INSERT INTO mailbox (address, name, maildir) SELECT 'someone' || g || '@small.test', 'Someone ' || g, ''
		 FROM generate_series(1, 100) g`,
		`ANALYZE`,
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("100,000 mailboxes loaded in %s", time.Since(start).Round(time.Millisecond))
	pw := "bench-password-1"
	hash, _ := hasher.Hash(pw)
	if _, err := st.CreateAdmin(ctx, store.Admin{Username: "ada", Password: hash, Active: true}, []string{"big.test"}); err != nil {
		b.Fatal(err)
	}
	if _, err := st.CreateAdmin(ctx, store.Admin{Username: "root", Password: hash, Superadmin: true, Active: true}, nil); err != nil {
		b.Fatal(err)
	}
	h, err := New(st, Options{Hasher: hasher}, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	login := func(user string) *http.Client {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := c.PostForm(srv.URL+"/login", url.Values{"username": {user}, "password": {pw}})
		if err != nil || res.StatusCode != http.StatusSeeOther {
			b.Fatalf("login %s: %v %v", user, res, err)
		}
		res.Body.Close()
		return c
	}
	clients := map[string]*http.Client{"ada": login("ada"), "root": login("root")}
	for _, bc := range []struct{ name, who, query, want string }{
		{"domain-admin/first-page", "ada", "", "user1@big.test"},
		{"domain-admin/last-page", "ada", "offset=99950", "user99999@big.test"},
		{"domain-admin/search-one", "ada", "search=user99999", "user99999@big.test"},
		{"domain-admin/search-many", "ada", "search=user5", "user5@big.test"},
		{"superadmin/first-page", "root", "", "user1@big.test"},
		{"superadmin/search-one", "root", "search=someone42", "someone42@small.test"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := clients[bc.who]
			var total time.Duration
			n := 0
			for b.Loop() {
				t0 := time.Now()
				res, err := c.Get(srv.URL + "/mailboxes?" + bc.query)
				if err != nil || res.StatusCode != 200 {
					b.Fatalf("%v %v", res, err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				total += time.Since(t0)
				n++
				if !strings.Contains(string(body), bc.want) {
					b.Fatalf("the page lacks %s", bc.want)
				}
			}
			per := total / time.Duration(n)
			b.ReportMetric(float64(per.Microseconds())/1000, "ms/page")
			b.Logf("%s: %s per page (%d pages)", bc.name, per.Round(10*time.Microsecond), n)
		})
	}
}
