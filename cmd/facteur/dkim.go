package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/mta/dkimsign"
	"github.com/facteur/facteur/store"
)

// dkimSelector is a selector: one or more DNS labels (RFC 6376 3.1), as
// dkim_key's CHECK accepts them.
var dkimSelector = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// addDKIMCommands adds `facteur dkim generate|list|show|activate|deactivate|rm`.
func addDKIMCommands(root *cobra.Command, a *app) {
	c := &cobra.Command{
		Use:   "dkim",
		Short: "manage DKIM signing keys and print their DNS records",
		Long: `Each domain signs its outbound mail with its newest active key (dkim_key).
Rotation: generate a key under a new selector with --active=false, publish its
DNS record, wait for the DNS to serve it, then "facteur dkim activate" it and
"facteur dkim deactivate" the old one; remove the old key (and its record) a
few days later, once no mail signed with it is still on its way.`,
	}
	c.AddCommand(a.dkimGenerateCommand(), a.dkimListCommand(), a.dkimShowCommand(),
		a.dkimActiveCommand(true), a.dkimActiveCommand(false), a.dkimRemoveCommand())
	root.AddCommand(c)
}

func (a *app) dkimGenerateCommand() *cobra.Command {
	var selector, algorithm string
	var active bool
	cmd := &cobra.Command{
		Use:   "generate DOMAIN",
		Short: "create a key for a domain and print the DNS TXT record to publish",
		Long: `Create a DKIM key (2048-bit RSA by default, or Ed25519) for DOMAIN, store it,
and print the TXT record to publish at <selector>._domainkey.<domain>. The
default selector is "f" and today's date (f20261121).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			sel := strings.ToLower(strings.TrimSpace(selector))
			if sel == "" {
				sel = "f" + time.Now().UTC().Format("20060102")
			}
			if !dkimSelector.MatchString(sel) || len(sel) > 63 {
				return dataBadInput("selector %q: DNS labels of letters, digits and hyphens", selector)
			}
			if _, err := dkimsign.NormalizeAlgorithm(algorithm); err != nil {
				return dataBadInput("%v", err)
			}
			k, err := dkimsign.Generate(algorithm)
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			row, err := st.CreateDKIMKey(ctx, store.DKIMKey{Domain: domain, Selector: sel, Algorithm: k.Algorithm,
				PrivateKey: k.PrivatePEM, PublicKey: k.PublicKey, Active: active})
			if err != nil {
				return dataError(dataNotFoundAs(err, "domain %s does not exist", domain))
			}
			return a.dataEmit(cmd, row, func(w io.Writer) { dkimPrintRecord(w, row) })
		},
	}
	cmd.Flags().StringVar(&selector, "selector", "", "selector (default f<YYYYMMDD>)")
	cmd.Flags().StringVar(&algorithm, "algorithm", "rsa", "rsa (rsa-sha256, 2048 bits) or ed25519 (ed25519-sha256)")
	cmd.Flags().BoolVar(&active, "active", true, "sign with it at once (--active=false to publish the record first)")
	return cmd
}

func (a *app) dkimListCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "list DKIM keys", Args: cobra.NoArgs}
	lo := dataListFlags(cmd)
	var domain string
	cmd.Flags().StringVar(&domain, "domain", "", "only the keys of this domain")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		o := *lo
		if domain != "" {
			d, err := dataNormDomain(domain)
			if err != nil {
				return err
			}
			o.Domain = d
		}
		st, ctx, err := a.dataStore(cmd)
		if err != nil {
			return err
		}
		keys, err := st.ListDKIMKeys(ctx, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, keys, func(w io.Writer) {
			// The signing key of each domain is its newest active one;
			// the list is ordered newest first within a domain.
			signing := map[string]bool{}
			rows := make([][]string, 0, len(keys))
			for _, k := range keys {
				mark := ""
				if k.Active && !signing[k.Domain] {
					signing[k.Domain] = true
					mark = "yes"
				}
				rows = append(rows, []string{k.Domain, k.Selector, k.Algorithm, dataYesNo(k.Active), dataOrDash(&mark),
					k.CreatedAt.UTC().Format(time.DateOnly)})
			}
			dataTable(w, []string{"DOMAIN", "SELECTOR", "ALGORITHM", "ACTIVE", "SIGNING", "CREATED"}, rows)
		})
	}
	return cmd
}

func (a *app) dkimShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show DOMAIN [SELECTOR]",
		Short: "print a key's DNS TXT record (by default the domain's signing key)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			var k store.DKIMKey
			if len(args) == 2 {
				k, err = st.GetDKIMKey(ctx, domain, args[1])
			} else {
				var found bool
				k, found, err = st.ActiveDKIMKey(ctx, domain)
				if err == nil && !found {
					// No signing key: show the newest key, if any.
					var keys []store.DKIMKey
					keys, err = st.ListDKIMKeys(ctx, store.ListOptions{Domain: domain, Limit: 1})
					if err == nil && len(keys) == 0 {
						return dataBadInput("domain %s has no DKIM key (facteur dkim generate %s)", domain, domain)
					}
					if err == nil {
						k = keys[0]
					}
				}
			}
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, k, func(w io.Writer) { dkimPrintRecord(w, k) })
		},
	}
}

func (a *app) dkimActiveCommand(active bool) *cobra.Command {
	use, short := "activate", "sign with a key (the newest active key of a domain signs)"
	if !active {
		use, short = "deactivate", "stop signing with a key (keep its record published a while)"
	}
	return &cobra.Command{
		Use:   use + " DOMAIN SELECTOR",
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			k, err := st.SetDKIMKeyActive(ctx, domain, args[1], active)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, k, func(w io.Writer) {
				fmt.Fprintf(w, "%s: active %s\n", k.DNSName, dataYesNo(k.Active))
			})
		},
	}
}

func (a *app) dkimRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rm DOMAIN SELECTOR",
		Short: "remove a key (then remove its DNS record)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			sel := strings.ToLower(strings.TrimSpace(args[1]))
			if err := st.DeleteDKIMKey(ctx, domain, sel); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "dkim key", sel+"._domainkey."+domain)
		},
	}
}

// dkimPrintRecord prints what to publish: the name and the record, then
// the same as a zone file line (a 2048-bit RSA record is longer than one
// DNS string, so it is split into strings of 255 octets).
func dkimPrintRecord(w io.Writer, k store.DKIMKey) {
	state := "active"
	if !k.Active {
		state = "inactive"
	}
	fmt.Fprintf(w, "# %s key of %s, selector %s (%s)\n", k.Algorithm, k.Domain, k.Selector, state)
	fmt.Fprintf(w, "# publish this TXT record:\n")
	fmt.Fprintf(w, "name:   %s\n", k.DNSName)
	fmt.Fprintf(w, "record: %s\n", k.DNSRecord)
	fmt.Fprintf(w, "# in a zone file:\n")
	fmt.Fprintln(w, dkimsign.ZoneRecord(k.DNSName, k.DNSRecord))
}
