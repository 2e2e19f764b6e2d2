package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// lookupData is written by raw SQL, as an operator would.
const lookupData = `
INSERT INTO domain (name) VALUES ('example.test'), ('loop.test');
INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.test', 'example.test');
INSERT INTO mailbox (address, quota_bytes) VALUES ('john@example.test', 5000000);
INSERT INTO mailbox (address, transport) VALUES ('jane@example.test', 'lmtp:unix:/run/dovecot/lmtp');
INSERT INTO alias (address, destinations) VALUES
    ('sales@example.test', '{john@example.test,jane@example.test,partner@remote.test}'),
    ('info@example.test', '{john@example.test}'),
    ('a@loop.test', '{b@loop.test}'), ('b@loop.test', '{a@loop.test}');
INSERT INTO transport (key, nexthop) VALUES ('remote.test', 'smtp:[smarthost.test]:587');
`

// lookupRun runs `facteur ARGS` in process against db and returns its
// standard output and the exit status run() would give.
func lookupRun(t *testing.T, db *storetest.DB, args ...string) (string, int, error) {
	t.Helper()
	cfg := &Config{DatabaseURL: db.URL, Hostname: "mx.example.test"}
	cfg.applyDefaults()
	a := &app{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer a.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := newRoot(a)
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(ctx)
	code := exitOK
	if err != nil {
		code = exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return out.String(), code, err
}

func lookupDB(t *testing.T) *storetest.DB {
	t.Helper()
	db := storetest.New(t)
	if _, err := db.Pool.Exec(context.Background(), lookupData); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestLookupExplainsAliasChainWithJSON(t *testing.T) {
	db := lookupDB(t)
	out, code, err := lookupRun(t, db, "lookup", "Sales+Q3@Alias.Test", "--json")
	if err != nil || code != 0 {
		t.Fatalf("status %d, err %v\n%s", code, err, out)
	}
	var rep struct {
		Query      string `json:"query"`
		Found      bool   `json:"found"`
		Address    string `json:"address"`
		Domain     string `json:"domain"`
		Class      string `json:"domain_class"`
		Rule       string `json:"rule"`
		Recipients []struct {
			Class, Address, Transport, Mailbox, Extension, Maildir string
			QuotaBytes                                             int64 `json:"quota_bytes"`
			Via                                                    []string
		} `json:"recipients"`
		Explain []string `json:"explain"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if !rep.Found || rep.Query != "Sales+Q3@Alias.Test" || rep.Address != "sales+q3@alias.test" ||
		rep.Domain != "example.test" || rep.Class != "virtual" || rep.Rule != "alias" {
		t.Fatalf("report = %+v", rep)
	}
	var got []string
	for _, rc := range rep.Recipients {
		got = append(got, rc.Class+" "+rc.Address+" "+rc.Transport)
	}
	want := []string{
		"mailbox john+q3@example.test maildir",
		"mailbox jane+q3@example.test lmtp:unix:/run/dovecot/lmtp",
		"remote partner+q3@remote.test smtp:[smarthost.test]:587",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("recipients:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	john := rep.Recipients[0]
	if john.Mailbox != "john@example.test" || john.Extension != "q3" || john.Maildir != "example.test/john/" ||
		john.QuotaBytes != 5000000 || strings.Join(john.Via, ",") != "sales@example.test" {
		t.Fatalf("john = %+v", john)
	}
	if !strings.Contains(strings.Join(rep.Explain, "\n"), "alias domain alias.test → example.test") {
		t.Fatalf("explain does not show the alias domain:\n%s", strings.Join(rep.Explain, "\n"))
	}
}

func TestLookupHumanOutputAndSender(t *testing.T) {
	db := lookupDB(t)
	out, code, err := lookupRun(t, db, "lookup", "info@example.test", "--user", "john@example.test", "--sender", "info@alias.test")
	if err != nil || code != 0 {
		t.Fatalf("status %d, err %v\n%s", code, err, out)
	}
	for _, want := range []string{
		"result:      found (alias)",
		"mailbox  john@example.test  →  maildir",
		"alias info@example.test → john@example.test",
		"sender:      <info@alias.test> for john@example.test: allowed (alias info@example.test delivers only to john@example.test)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A sender the user does not own: exit status 1, said in the output.
	out, code, err = lookupRun(t, db, "lookup", "john@example.test", "--user", "jane@example.test", "--sender", "sales@example.test", "--json")
	if code != exitFailure || err == nil {
		t.Fatalf("status %d, err %v", code, err)
	}
	var rep struct {
		Found  bool `json:"found"`
		Sender struct {
			Allowed bool   `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"sender"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if !rep.Found || rep.Sender.Allowed || !strings.Contains(rep.Sender.Reason, "has 3 destinations") {
		t.Fatalf("report = %+v", rep)
	}
}

func TestLookupStatusAndErrors(t *testing.T) {
	db := lookupDB(t)
	cases := []struct {
		args []string
		code int
		out  string // in the output
		err  string // in the error
	}{
		{[]string{"lookup", "nobody@example.test"}, exitFailure, "not found: unknown user (550 5.1.1)", "unknown user"},
		{[]string{"lookup", "someone@elsewhere.test"}, exitFailure, "remote   someone@elsewhere.test  →  smtp", "not a local domain"},
		{[]string{"lookup", "a@loop.test"}, exitFailure, "result:      error: ", "alias loop"},
		{[]string{"lookup", "postmaster"}, exitOK, "remote   postmaster@mx.example.test  →  smtp", ""},
		{[]string{"lookup", "not an address"}, exitFailure, "", "malformed address"},
		{[]string{"lookup", "john@example.test", "--user", "john@example.test"}, exitFailure, "", "--user needs --sender"},
		{[]string{"lookup"}, exitFailure, "", "accepts 1 arg"},
	}
	for _, c := range cases {
		out, code, err := lookupRun(t, db, c.args...)
		errText := ""
		if err != nil {
			errText = err.Error()
		}
		if code != c.code || (err == nil) != (c.err == "") || !strings.Contains(errText, c.err) || !strings.Contains(out, c.out) {
			t.Errorf("facteur %s: status %d, err %v, output:\n%s\nwant status %d, error containing %q, output containing %q",
				strings.Join(c.args, " "), code, err, out, c.code, c.err, c.out)
		}
	}
}

func TestLookupShowsCacheAndSQL(t *testing.T) {
	db := lookupDB(t)
	out, code, err := lookupRun(t, db, "lookup", "Sales+Q3@Alias.Test", "--user", "john@example.test", "--sender", "info@alias.test", "--json")
	if err != nil || code != 0 {
		t.Fatalf("status %d, err %v\n%s", code, err, out)
	}
	var rep struct {
		Cache struct {
			TTLSeconds float64 `json:"ttl_seconds"`
			MaxEntries int     `json:"max_entries"`
			ThisAnswer string  `json:"this_answer"`
		} `json:"cache"`
		SQL []struct {
			Name       string     `json:"name"`
			Params     []string   `json:"params"`
			Statement  string     `json:"statement"`
			Executions [][]string `json:"executions"`
		} `json:"sql"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if rep.Cache.TTLSeconds != lookups.DefaultCacheTTL.Seconds() || rep.Cache.MaxEntries != lookups.DefaultCacheSize ||
		!strings.Contains(rep.Cache.ThisAnswer, "read from the database") {
		t.Errorf("cache = %+v", rep.Cache)
	}
	got := map[string][]string{}
	for _, q := range rep.SQL {
		for _, args := range q.Executions {
			got[q.Name] = append(got[q.Name], strings.Join(args, " "))
		}
		switch q.Name {
		case "route":
			if q.Statement != store.RouteSQL || len(q.Params) != 3 {
				t.Errorf("route statement or parameters differ from store.RouteSQL: %q %v", q.Statement, q.Params)
			}
		case "sender":
			if q.Statement != store.SenderSQL || len(q.Params) != 4 {
				t.Errorf("sender statement or parameters differ from store.SenderSQL: %v", q.Params)
			}
		}
	}
	// The address as asked, then each destination of the alias (the
	// walker reads each route once).
	for _, want := range []string{"sales+q3 sales alias.test", "john+q3 john example.test", "jane+q3 jane example.test",
		"partner+q3 partner remote.test"} {
		if !slices.Contains(got["route"], want) {
			t.Errorf("no route execution with %q: %v", want, got["route"])
		}
	}
	if len(got["sender"]) != 1 || got["sender"][0] != "john@example.test info info alias.test" {
		t.Errorf("sender executions = %v", got["sender"])
	}

	out, code, err = lookupRun(t, db, "lookup", "info@example.test")
	if err != nil || code != 0 {
		t.Fatalf("status %d, err %v\n%s", code, err, out)
	}
	for _, want := range []string{
		"cache:       ttl 1m0s, at most 100000 results per process\n             the whole cache is dropped on every NOTIFY facteur_config",
		"sql settings: 1 execution",
		"this answer: read from the database now",
		"sql route:",
		"  parameters: $1 local part, $2 user (local part without extension), $3 domain as asked",
		"  $1='info' $2='info' $3='example.test'",
		"  $1='john' $2='john' $3='example.test'",
		"    WITH q AS MATERIALIZED (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
