package admin

import (
	"encoding/csv"
	"strings"
	"testing"

	"github.com/facteur/facteur/store"
)

func importErrors(t *testing.T, r *resp) map[int]csvRowError {
	t.Helper()
	var b struct {
		Rows []csvRowError `json:"rows"`
	}
	r.json(t, &b)
	out := map[int]csvRowError{}
	for _, e := range b.Rows {
		out[e.Line] = e
	}
	return out
}

func TestMailboxCSVImportIsAllOrNothingWithErrorsPerLine(t *testing.T) {
	w := seed(t, nil)
	want(t, w.root.do("PATCH", "/api/v1/domains/a.test", map[string]any{"max_mailboxes": 6}), 200, "limit")
	bad := "address,name,password,quota_bytes,active\n" +
		"one@a.test,One,Long-enough-pw-1,,true\n" + // line 2: fine
		"u@a.test,Dup,Long-enough-pw-1,,\n" + // 3: exists
		"two@b.test,Two,Long-enough-pw-1,,\n" + // 4: foreign
		"three@a.test,Three,short,,\n" + // 5: weak password
		"four@a.test,Four,Long-enough-pw-1,-5,\n" + // 6: bad quota
		"five@a.test,\"=cmd|' /C calc'!A0\",Long-enough-pw-1,,maybe\n" + // 7: bad active
		"six@a.test,Six,Long-enough-pw-1,,\n" + // 8: fine (5th mailbox)
		"seven@a.test,Seven,Long-enough-pw-1,,\n" + // 9: fine (6th)
		"eight@a.test,Eight,Long-enough-pw-1,,\n" // 10: over the limit of 6
	for _, dry := range []string{"?dry_run=true", ""} {
		w.unchanged("bad import"+dry, func() {
			r := w.ada.do("POST", "/api/v1/csv/mailboxes"+dry, bad)
			want(t, r, 422, "bad import")
			errs := importErrors(t, r)
			wantCodes := map[int]string{3: codeConflict, 4: codeNotFound, 5: codeWeakPassword, 6: codeInvalid, 7: codeInvalid, 10: codeLimitExceeded}
			for line, code := range wantCodes {
				if errs[line].Code != code {
					t.Errorf("line %d: %+v, want %s", line, errs[line], code)
				}
			}
			if len(errs) != len(wantCodes) {
				t.Errorf("errors %+v", errs)
			}
			if r.errCode() != codeInvalidRows {
				t.Errorf("code %s", r.errCode())
			}
		})
	}
	good := "address,name,password,quota_bytes,active\n" +
		"one@A.TEST,One,Long-enough-pw-1,1048576,true\n" +
		"two@a.test.,\"'=SUM(A1)\",Long-enough-pw-2,,false\n"
	w.unchanged("dry run", func() {
		r := w.ada.do("POST", "/api/v1/csv/mailboxes?dry_run=true", good)
		want(t, r, 200, "dry run")
	})
	r := w.ada.do("POST", "/api/v1/csv/mailboxes", good)
	want(t, r, 201, "import")
	one := must[store.Mailbox](t)(w.st.GetMailbox(w.ctx, "one@a.test"))
	two := must[store.Mailbox](t)(w.st.GetMailbox(w.ctx, "two@a.test"))
	if *one.QuotaBytes != 1048576 || !one.Active || two.Active || two.Name != "=SUM(A1)" {
		t.Errorf("imported %+v %+v", one, two)
	}
	if ok, _, err := w.opts.Hasher.Verify(two.Password, "Long-enough-pw-2"); !ok || err != nil {
		t.Errorf("imported password does not verify: %v", err)
	}
	// Hashes are a superadmin's to import.
	hashed := "address,password_hash\nhashed@a.test,\"" + w.hash("Long-enough-pw-3") + "\"\n"
	want(t, w.ada.do("POST", "/api/v1/csv/mailboxes", hashed), 403, "domain admin imports hashes")
	want(t, w.root.do("POST", "/api/v1/csv/mailboxes", hashed), 201, "superadmin imports hashes")
	w.loginMailbox("hashed@a.test", "Long-enough-pw-3")
	want(t, w.root.do("POST", "/api/v1/csv/mailboxes", "address,password_hash\nh2@a.test,{NOPE}x\n"), 422, "unknown scheme")
	// Malformed files.
	want(t, w.ada.do("POST", "/api/v1/csv/mailboxes", "address,colour\nx@a.test,red\n"), 400, "unknown column")
	want(t, w.ada.do("POST", "/api/v1/csv/mailboxes", "name\nx\n"), 400, "no address column")
	want(t, w.ada.do("POST", "/api/v1/csv/mailboxes", ""), 400, "empty")
	want(t, w.ada.doType("POST", "/api/v1/csv/mailboxes", good, "application/json"), 415, "not CSV")

	// Export: the admin's domains only, formula cells defused.
	r = w.ada.do("GET", "/api/v1/csv/mailboxes", nil)
	want(t, r, 200, "export")
	recs, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, rec := range recs[1:] {
		names[rec[0]] = rec[1]
		if !strings.HasSuffix(rec[0], "@a.test") {
			t.Errorf("exported %v", rec)
		}
	}
	if names["two@a.test"] != "'=SUM(A1)" || len(recs) != 7 {
		t.Errorf("export %v", recs)
	}
}

func TestAliasCSVImportAndExport(t *testing.T) {
	w := seed(t, nil)
	bad := "address,destinations,description\n" +
		"ok@a.test,x@example.net y@example.net,fine\n" +
		"@b.test,x@example.net,foreign catch-all\n" +
		"cmd@a.test,|/bin/sh,command\n" +
		"v@a.test,x@example.net,shadows a mailbox\n" +
		"none@a.test,,no destination\n"
	w.unchanged("bad alias import", func() {
		r := w.ada.do("POST", "/api/v1/csv/aliases", bad)
		want(t, r, 422, "bad alias import")
		errs := importErrors(t, r)
		for line, code := range map[int]string{3: codeNotFound, 4: codeForbiddenDest, 5: codeInvalid, 6: codeInvalid} {
			if errs[line].Code != code {
				t.Errorf("line %d: %+v, want %s", line, errs[line], code)
			}
		}
		if len(errs) != 4 {
			t.Errorf("errors %+v", errs)
		}
	})
	r := w.ada.do("POST", "/api/v1/csv/aliases", "address,destinations\nok@a.test,\"x@example.net, Y@Example.net\"\n@A.TEST,u@a.test\n")
	want(t, r, 201, "alias import")
	a := must[store.Alias](t)(w.st.GetAlias(w.ctx, "ok@a.test"))
	if strings.Join(a.Destinations, ",") != "x@example.net,y@example.net" {
		t.Errorf("imported %+v", a)
	}
	r = w.ada.do("GET", "/api/v1/csv/aliases?search=ok", nil)
	if !strings.Contains(string(r.body), "ok@a.test,x@example.net y@example.net,,true") {
		t.Errorf("export %s", r)
	}
}
