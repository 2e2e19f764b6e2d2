package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/internal/health"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/migrations"
	"github.com/facteur/facteur/store"
)

// `facteur check` validates what a host needs before it takes mail: the
// configuration, the database and its schema, the spool and the mail root,
// the TLS certificate, and for every active domain the DNS records that make
// mail flow and pass authentication (MX at this host, SPF, DKIM for each
// active key, DMARC), printing the record to publish when one is missing.
// DNS goes through one resolver (the system's by default, each lookup with
// a timeout); tests inject a fake one.

// checkResolver is what check asks of DNS; *net.Resolver has it, and so has
// the in-process fake of the tests. It is also what the SPF evaluation
// needs (blitiri.com.ar/go/spf's DNSResolver).
type checkResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// checkDeps are the parts check takes from outside (tests replace them).
type checkDeps struct {
	resolver checkResolver
	now      func() time.Time
}

// Check statuses.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "FAIL"
	checkSkip = "skip"
)

// checkResult is one line of the report.
type checkResult struct {
	Check   string   `json:"check"`
	Status  string   `json:"status"`
	Detail  string   `json:"detail"`
	Publish []string `json:"publish,omitempty"`
}

type checkOptions struct {
	dnsTimeout time.Duration
	noDNS      bool
	domains    []string
	minFree    string
	certDays   int
}

func addCheckCommands(root *cobra.Command, a *app) {
	addCheckCommand(root, a, checkDeps{})
}

func addCheckCommand(root *cobra.Command, a *app, deps checkDeps) {
	var o checkOptions
	cmd := &cobra.Command{
		Use:   "check",
		Short: "validate the configuration, database, spool, mail root, TLS and each domain's DNS records",
		Long: `check validates what this host needs to take and send mail: the configuration
file, the database connection and migration state, the spool and mail root
(permissions, writability, free space), the TLS certificate and key (their
match, the host name, the days until expiry), and for each active domain the
DNS records: an MX pointing at this host (its host name or addresses), one
SPF record that passes for this host's addresses, the DKIM record of each
active signing key, and a DMARC record. For anything missing it prints the
record to publish. DNS is asked through the system resolver, each lookup
bounded by --dns-timeout.

The exit status is 0 when every check passes (warnings included), 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := deps
			if d.resolver == nil {
				d.resolver = &net.Resolver{}
			}
			if d.now == nil {
				d.now = time.Now
			}
			res := a.check(cmd.Context(), o, d)
			out := cmd.OutOrStdout()
			if a.jsonOut {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				checkPrint(out, res)
			}
			failed := 0
			for _, r := range res {
				if r.Status == checkFail {
					failed++
				}
			}
			if failed > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("%d check%s failed", failed, queuePlural(failed))}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&o.dnsTimeout, "dns-timeout", 5*time.Second, "timeout of each DNS lookup")
	fl.BoolVar(&o.noDNS, "no-dns", false, "skip the DNS checks")
	fl.StringSliceVar(&o.domains, "domain", nil, "check only these domains' DNS records")
	fl.StringVar(&o.minFree, "min-free", "512M", "least free space on the spool and mail root file systems")
	fl.IntVar(&o.certDays, "cert-warn-days", 14, "warn when the certificate expires within this many days")
	root.AddCommand(cmd)
}

func checkPrint(w io.Writer, res []checkResult) {
	width := 0
	for _, r := range res {
		width = max(width, len(r.Check))
	}
	for _, r := range res {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", r.Status, width, r.Check, r.Detail)
		for _, p := range r.Publish {
			fmt.Fprintf(w, "      %-*s  publish: %s\n", width, "", p)
		}
	}
}

// check runs every check and returns the results in order.
func (a *app) check(ctx context.Context, o checkOptions, d checkDeps) []checkResult {
	var res []checkResult
	add := func(name, status, detail string, publish ...string) {
		res = append(res, checkResult{Check: name, Status: status, Detail: detail, Publish: publish})
	}

	cfg, err := a.config()
	if err != nil {
		add("config", checkFail, err.Error())
		return res
	}
	checkConfig(cfg, add)

	minFree, err := dataParseSize(o.minFree)
	if err != nil {
		add("free space", checkFail, "--min-free: "+err.Error())
		minFree = 0
	}

	// Database and schema.
	var st *store.Store
	if cfg.DatabaseURL == "" {
		add("database", checkFail, "database_url is not set")
	} else if s, err := a.store(ctx); err != nil {
		add("database", checkFail, err.Error())
	} else {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var version string
		err := s.Pool().QueryRow(pctx, "SHOW server_version").Scan(&version)
		cancel()
		if err != nil {
			add("database", checkFail, "cannot connect: "+err.Error())
		} else {
			st = s
			add("database", checkOK, "connected, PostgreSQL "+version)
			db := stdlib.OpenDBFromPool(s.Pool())
			cur, target, err := migrations.Current(ctx, db)
			db.Close()
			switch {
			case err != nil:
				add("migrations", checkFail, err.Error())
			case cur < target:
				add("migrations", checkFail, fmt.Sprintf("the database is at version %d, this build needs %d: run facteur migrate up", cur, target))
			case cur > target:
				add("migrations", checkWarn, fmt.Sprintf("the database is at version %d, newer than this build (%d)", cur, target))
			default:
				add("migrations", checkOK, fmt.Sprintf("version %d (current)", cur))
			}
		}
	}

	checkDir("spool", cfg.SpoolDir, true, uint64(minFree), add)
	checkDir("mail root", cfg.MailRoot, false, uint64(minFree), add)
	checkTLS(cfg, d.now(), o.certDays, add)

	if o.noDNS {
		add("dns", checkSkip, "--no-dns")
		return res
	}
	if st == nil {
		add("dns", checkSkip, "no database: the domains are not known")
		return res
	}
	checkDNS(ctx, st, cfg, o, d, add)
	return res
}

func checkConfig(cfg *Config, add func(name, status, detail string, publish ...string)) {
	src := cfg.path
	if src == "" {
		src = "no file (defaults and environment)"
	}
	var problems []string
	if _, err := address.Domain(cfg.Hostname); err != nil || !strings.Contains(cfg.Hostname, ".") {
		problems = append(problems, fmt.Sprintf("hostname %q is not a fully qualified domain name", cfg.Hostname))
	}
	if _, err := address.Parse(cfg.Postmaster); err != nil {
		problems = append(problems, fmt.Sprintf("postmaster %q: %v", cfg.Postmaster, err))
	}
	l := cfg.Listen
	for _, x := range []struct{ name, addr string }{{"smtp", l.SMTP}, {"submission", l.Submission},
		{"submissions", l.Submissions}, {"qmqp", l.QMQP}, {"admin", l.Admin}, {"metrics", l.Metrics}} {
		if x.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(x.addr); err != nil {
			problems = append(problems, fmt.Sprintf("listen.%s %q: %v", x.name, x.addr, err))
		}
	}
	if (l.Submission != "" || l.Submissions != "") && cfg.TLS.CertFile == "" {
		problems = append(problems, "submission needs TLS (RFC 8314): set tls.cert_file and tls.key_file")
	}
	if (cfg.TLS.CertFile == "") != (cfg.TLS.KeyFile == "") {
		problems = append(problems, "tls.cert_file and tls.key_file go together")
	}
	if _, err := buildMilters(cfg, nil); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		add("config", checkFail, src+": "+strings.Join(problems, "; "))
		return
	}
	add("config", checkOK, fmt.Sprintf("%s: hostname %s, node %s", src, cfg.Hostname, cfg.Node))
	if l.SMTP != "" && cfg.TLS.CertFile == "" {
		add("config", checkWarn, "listen.smtp without a certificate: STARTTLS is not offered")
	}
}

// checkDir checks a directory that facteur writes: it exists, is private
// enough, is writable by this user, and has free space.
func checkDir(name, dir string, private bool, minFree uint64, add func(name, status, detail string, publish ...string)) {
	fi, err := os.Stat(dir)
	if err != nil {
		add(name, checkFail, err.Error())
		return
	}
	if !fi.IsDir() {
		add(name, checkFail, dir+" is not a directory")
		return
	}
	perm := fi.Mode().Perm()
	if err := health.WritableDir(dir); err != nil {
		add(name, checkFail, fmt.Sprintf("%v (checked as uid %d)", err, os.Getuid()))
	} else {
		detail := fmt.Sprintf("%s writable, mode %04o", dir, perm)
		switch {
		case perm&0o002 != 0:
			add(name, checkFail, detail+": writable by every user (chmod o-w)")
		case private && perm&0o077 != 0:
			add(name, checkWarn, detail+": readable by others than its owner (chmod 700: it holds every message)")
		default:
			add(name, checkOK, detail)
		}
	}
	free, err := health.FreeBytes(dir)
	if err != nil {
		add(name+" free", checkWarn, err.Error())
		return
	}
	total, _ := health.TotalBytes(dir)
	detail := fmt.Sprintf("%s free", dataFormatSize(int64(free)))
	if total > 0 {
		detail += fmt.Sprintf(" of %s (%.0f %%)", dataFormatSize(int64(total)), 100*float64(free)/float64(total))
	}
	if free < minFree {
		add(name+" free", checkFail, detail+fmt.Sprintf(", below the minimum %s", dataFormatSize(int64(minFree))))
		return
	}
	add(name+" free", checkOK, detail)
}

func checkTLS(cfg *Config, now time.Time, warnDays int, add func(name, status, detail string, publish ...string)) {
	if cfg.TLS.CertFile == "" {
		add("tls", checkSkip, "no certificate configured")
		return
	}
	pair, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		add("tls", checkFail, fmt.Sprintf("%s and %s: %v", cfg.TLS.CertFile, cfg.TLS.KeyFile, err))
		return
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			add("tls", checkFail, fmt.Sprintf("%s: %v", cfg.TLS.CertFile, err))
			return
		}
	}
	days := int(leaf.NotAfter.Sub(now).Hours() / 24)
	detail := fmt.Sprintf("%s: %s, expires %s (in %d day%s)", cfg.TLS.CertFile, leaf.Subject.CommonName,
		leaf.NotAfter.UTC().Format("2006-01-02"), days, queuePlural(days))
	switch {
	case now.After(leaf.NotAfter):
		add("tls", checkFail, fmt.Sprintf("%s: expired on %s", cfg.TLS.CertFile, leaf.NotAfter.UTC().Format("2006-01-02")))
		return
	case now.Before(leaf.NotBefore):
		add("tls", checkFail, fmt.Sprintf("%s: not valid before %s", cfg.TLS.CertFile, leaf.NotBefore.UTC().Format("2006-01-02")))
		return
	}
	if err := leaf.VerifyHostname(cfg.Hostname); err != nil {
		add("tls", checkFail, detail+": "+err.Error())
		return
	}
	if days < warnDays {
		add("tls", checkWarn, detail+": renew it")
		return
	}
	add("tls", checkOK, detail)
}

// checkDomain is a domain whose DNS records are checked.
type checkDomain struct {
	name  string
	relay bool   // backup MX: only the MX is ours
	alias string // the target, for an alias domain
}

// checkDKIMKey is an active signing key.
type checkDKIMKey struct {
	domain, selector, dnsName, record, publicKey string
}

func checkDNS(ctx context.Context, st *store.Store, cfg *Config, o checkOptions, d checkDeps, add func(name, status, detail string, publish ...string)) {
	domains, keys, dkimTable, err := checkDomains(ctx, st)
	if err != nil {
		add("dns", checkFail, "list domains: "+err.Error())
		return
	}
	if len(o.domains) > 0 {
		var want []string
		for _, n := range o.domains {
			dn, err := dataNormDomain(n)
			if err != nil {
				add("dns", checkFail, fmt.Sprintf("--domain %q: %v", n, err))
				return
			}
			want = append(want, dn)
		}
		domains = slices.DeleteFunc(domains, func(c checkDomain) bool { return !slices.Contains(want, c.name) })
		for _, w := range want {
			if !slices.ContainsFunc(domains, func(c checkDomain) bool { return c.name == w }) {
				add("dns "+w, checkFail, "not an active domain or alias domain of this installation")
			}
		}
	}
	if len(domains) == 0 {
		add("dns", checkSkip, "no active domain")
		return
	}
	host := strings.ToLower(strings.TrimSuffix(cfg.Hostname, "."))
	lookup := func(f func(ctx context.Context) error) error {
		lctx, cancel := context.WithTimeout(ctx, o.dnsTimeout)
		defer cancel()
		return f(lctx)
	}
	var ours []string
	hostErr := lookup(func(ctx context.Context) (err error) {
		ours, err = d.resolver.LookupHost(ctx, host)
		return err
	})
	if hostErr != nil {
		add("dns "+host, checkWarn, "addresses of this host unknown ("+checkDNSErr(hostErr)+"): MX matched by name only, SPF not evaluated")
	} else {
		add("dns "+host, checkOK, "this host is "+strings.Join(ours, ", "))
	}

	for _, dom := range domains {
		n := dom.name
		checkMX(n, host, ours, d.resolver, lookup, add)
		if dom.relay {
			add("dns "+n+" SPF", checkSkip, "backup MX (relay) domain: its own servers send its mail")
			continue
		}
		checkSPF(ctx, n, host, ours, d.resolver, lookup, o.dnsTimeout, add)
		if dom.alias == "" {
			checkDKIM(n, keys, dkimTable, d.resolver, lookup, add)
		}
		checkDMARC(n, d.resolver, lookup, add)
	}
}

func checkDomains(ctx context.Context, st *store.Store) ([]checkDomain, []checkDKIMKey, bool, error) {
	rows, err := st.Pool().Query(ctx, `SELECT name, backup_mx, '' FROM domain WHERE active
UNION ALL
SELECT a.alias_domain, d.backup_mx, a.target_domain FROM alias_domain a JOIN domain d ON d.name = a.target_domain
WHERE a.active AND d.active
ORDER BY 1`)
	if err != nil {
		return nil, nil, false, err
	}
	domains, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (checkDomain, error) {
		var c checkDomain
		err := r.Scan(&c.name, &c.relay, &c.alias)
		return c, err
	})
	if err != nil {
		return nil, nil, false, err
	}
	// dkim_key comes with the mail authentication migration; an older
	// schema has none.
	var table bool
	if err := st.Pool().QueryRow(ctx, "SELECT to_regclass('dkim_key') IS NOT NULL").Scan(&table); err != nil {
		return nil, nil, false, err
	}
	if !table {
		return domains, nil, false, nil
	}
	rows, err = st.Pool().Query(ctx, `SELECT domain, selector, dns_name, dns_record, public_key FROM dkim_key
WHERE active ORDER BY domain, created_at DESC, selector`)
	if err != nil {
		return nil, nil, false, err
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (checkDKIMKey, error) {
		var k checkDKIMKey
		err := r.Scan(&k.domain, &k.selector, &k.dnsName, &k.record, &k.publicKey)
		return k, err
	})
	return domains, keys, true, err
}

// dnsErr says what a failed lookup means for people.
func checkDNSErr(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		switch {
		case de.IsNotFound:
			return "no such record"
		case de.IsTimeout:
			return "timed out"
		}
		return de.Err
	}
	return err.Error()
}

func checkNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func checkTrimDot(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

func checkMX(dom, host string, ours []string, r checkResolver, lookup func(func(context.Context) error) error,
	add func(name, status, detail string, publish ...string)) {
	name := "dns " + dom + " MX"
	publish := fmt.Sprintf("%s. IN MX 10 %s.", dom, host)
	var mxs []*net.MX
	err := lookup(func(ctx context.Context) (err error) {
		mxs, err = r.LookupMX(ctx, dom)
		return err
	})
	if err != nil && !checkNotFound(err) {
		add(name, checkFail, "lookup failed: "+checkDNSErr(err))
		return
	}
	if len(mxs) == 0 {
		add(name, checkFail, "no MX record", publish)
		return
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		// RFC 7505: the domain accepts no mail.
		add(name, checkFail, "null MX (RFC 7505): the domain says it accepts no mail", publish)
		return
	}
	var names []string
	for _, mx := range mxs {
		h := checkTrimDot(mx.Host)
		names = append(names, fmt.Sprintf("%s (%d)", h, mx.Pref))
		if h == host {
			add(name, checkOK, fmt.Sprintf("%s (%d) is this host", h, mx.Pref))
			return
		}
	}
	if len(ours) > 0 {
		for _, mx := range mxs {
			var addrs []string
			if lookup(func(ctx context.Context) (err error) {
				addrs, err = r.LookupHost(ctx, checkTrimDot(mx.Host))
				return err
			}) != nil {
				continue
			}
			for _, a := range addrs {
				if slices.Contains(ours, a) {
					add(name, checkOK, fmt.Sprintf("%s (%d) has this host's address %s", checkTrimDot(mx.Host), mx.Pref, a))
					return
				}
			}
		}
	}
	add(name, checkFail, "no MX points at this host: "+strings.Join(names, ", "), publish)
}

// spfRecords returns the SPF records among TXT records (RFC 7208 4.5: the
// version section "v=spf1" alone or followed by a space).
func checkSPFRecords(txts []string) []string {
	var out []string
	for _, t := range txts {
		if l := strings.ToLower(t); l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
			out = append(out, t)
		}
	}
	return out
}

func checkSPF(ctx context.Context, dom, host string, ours []string, r checkResolver, lookup func(func(context.Context) error) error,
	timeout time.Duration, add func(name, status, detail string, publish ...string)) {
	name := "dns " + dom + " SPF"
	publish := fmt.Sprintf("%s. IN TXT \"v=spf1 mx a:%s -all\"", dom, host)
	var txts []string
	err := lookup(func(ctx context.Context) (err error) {
		txts, err = r.LookupTXT(ctx, dom)
		return err
	})
	if err != nil && !checkNotFound(err) {
		add(name, checkFail, "lookup failed: "+checkDNSErr(err))
		return
	}
	recs := checkSPFRecords(txts)
	switch {
	case len(recs) == 0:
		add(name, checkFail, "no SPF record", publish)
		return
	case len(recs) > 1:
		// RFC 7208 4.5: more than one record is a permanent error.
		add(name, checkFail, fmt.Sprintf("%d SPF records (RFC 7208 4.5: keep one): %s", len(recs), strings.Join(recs, " | ")))
		return
	}
	if len(ours) == 0 {
		add(name, checkOK, recs[0]+" (not evaluated: this host's addresses are unknown)")
		return
	}
	// RFC 7208 4: evaluate the record for each address this host sends from.
	for _, a := range ours {
		ip := net.ParseIP(a)
		if ip == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 4*timeout)
		res, err := spf.CheckHostWithSender(ip, host, "postmaster@"+dom, spf.WithResolver(r), spf.WithContext(sctx))
		cancel()
		if res != spf.Pass {
			detail := fmt.Sprintf("%s gives %s for this host's address %s", recs[0], res, a)
			if err != nil {
				detail += " (" + err.Error() + ")"
			}
			add(name, checkFail, detail, fmt.Sprintf("%s. IN TXT \"%s\" (add a:%s or ip%c:%s before the all)", dom, recs[0], host, checkIPVersion(ip), a))
			return
		}
	}
	add(name, checkOK, recs[0]+" passes for "+strings.Join(ours, ", "))
}

func checkIPVersion(ip net.IP) rune {
	if ip.To4() != nil {
		return '4'
	}
	return '6'
}

// dkimTags parses a DKIM key record's tag list (RFC 6376 3.6.1).
func checkDKIMTags(rec string) map[string]string {
	tags := map[string]string{}
	for part := range strings.SplitSeq(rec, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		// Whitespace inside a tag value (a long p= split in the zone
		// file) is not part of it.
		tags[strings.ToLower(strings.TrimSpace(k))] = strings.Join(strings.Fields(v), "")
	}
	return tags
}

func checkDKIM(dom string, keys []checkDKIMKey, table bool, r checkResolver, lookup func(func(context.Context) error) error,
	add func(name, status, detail string, publish ...string)) {
	name := "dns " + dom + " DKIM"
	if !table {
		add(name, checkSkip, "no dkim_key table in this schema")
		return
	}
	found := false
	for _, k := range keys {
		if k.domain != dom {
			continue
		}
		found = true
		kname := fmt.Sprintf("%s %s", name, k.selector)
		publish := fmt.Sprintf("%s. IN TXT \"%s\"", k.dnsName, k.record)
		var txts []string
		err := lookup(func(ctx context.Context) (err error) {
			txts, err = r.LookupTXT(ctx, k.dnsName)
			return err
		})
		if err != nil && !checkNotFound(err) {
			add(kname, checkFail, "lookup failed: "+checkDNSErr(err))
			continue
		}
		var keysSeen []string
		match := false
		for _, t := range txts {
			tags := checkDKIMTags(t)
			p, ok := tags["p"]
			if !ok {
				continue
			}
			keysSeen = append(keysSeen, p)
			if p == k.publicKey {
				match = true
			}
		}
		switch {
		case match:
			add(kname, checkOK, k.dnsName+" publishes the key")
		case len(keysSeen) == 0:
			add(kname, checkFail, "no DKIM record at "+k.dnsName, publish)
		default:
			add(kname, checkFail, k.dnsName+" publishes another key (rotate: publish this one)", publish)
		}
	}
	if !found {
		add(name, checkSkip, "no active signing key for the domain")
	}
}

func checkDMARC(dom string, r checkResolver, lookup func(func(context.Context) error) error,
	add func(name, status, detail string, publish ...string)) {
	name := "dns " + dom + " DMARC"
	qname := "_dmarc." + dom
	publish := fmt.Sprintf("%s. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@%s\"", qname, dom)
	var txts []string
	err := lookup(func(ctx context.Context) (err error) {
		txts, err = r.LookupTXT(ctx, qname)
		return err
	})
	if err != nil && !checkNotFound(err) {
		add(name, checkFail, "lookup failed: "+checkDNSErr(err))
		return
	}
	var recs []string
	for _, t := range txts {
		// RFC 7489 6.6.3: records that do not start with v=DMARC1 are
		// ignored.
		if strings.HasPrefix(strings.TrimSpace(t), "v=DMARC1") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		add(name, checkFail, "no DMARC record at "+qname, publish)
	case 1:
		add(name, checkOK, recs[0])
	default:
		// RFC 7489 6.6.3: several records mean no policy.
		add(name, checkFail, fmt.Sprintf("%d DMARC records at %s (RFC 7489 6.6.3: keep one)", len(recs), qname))
	}
}
