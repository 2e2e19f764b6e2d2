package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// addDomainCommands adds `facteur domain …` and `facteur alias-domain …`.
func addDomainCommands(root *cobra.Command, a *app) {
	root.AddCommand(a.domainCommand(), a.aliasDomainCommand())
}

// domainFlags are the columns of a domain that add and update set.
type domainFlags struct {
	description, transport                                               string
	active, backupMX, local                                              bool
	maxMailboxes, maxAliases, maxQuota, totalQuota, defaultQuota, maxMsg string
}

func (f *domainFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.description, "description", "", "free text")
	fl.BoolVar(&f.active, "active", true, "accept mail for the domain (--active=false suspends it)")
	fl.BoolVar(&f.backupMX, "backup-mx", false, "relay domain: accept mail and relay it to the transport or MX")
	fl.BoolVar(&f.local, "local", false, "the host's own domain: allows command and file alias destinations")
	fl.StringVar(&f.transport, "transport", "", `next hop for the domain ("none" clears it), e.g. lmtp:unix:/run/dovecot/lmtp`)
	fl.StringVar(&f.maxMailboxes, "max-mailboxes", "", `most mailboxes ("unlimited" clears)`)
	fl.StringVar(&f.maxAliases, "max-aliases", "", `most aliases ("unlimited" clears)`)
	fl.StringVar(&f.maxQuota, "max-quota", "", `largest quota of one mailbox, e.g. 2G ("unlimited" clears)`)
	fl.StringVar(&f.totalQuota, "total-quota", "", `sum of the mailboxes' quotas, e.g. 50G ("unlimited" clears)`)
	fl.StringVar(&f.defaultQuota, "default-quota", "", `quota of mailboxes created without one ("unlimited" clears)`)
	fl.StringVar(&f.maxMsg, "max-message-size", "", `largest message accepted for the domain ("unlimited" clears)`)
}

// limits parses the limit flags that were given into d (add) and p (update).
func (f *domainFlags) apply(cmd *cobra.Command, d *store.Domain, p *store.DomainPatch) error {
	counts := []struct {
		name, val string
		dst       **int32
		patch     *store.Nullable[int32]
	}{
		{"max-mailboxes", f.maxMailboxes, &d.MaxMailboxes, &p.MaxMailboxes},
		{"max-aliases", f.maxAliases, &d.MaxAliases, &p.MaxAliases},
	}
	for _, c := range counts {
		if !dataChanged(cmd, c.name) {
			continue
		}
		v, err := dataCountLimit(c.name, c.val)
		if err != nil {
			return err
		}
		*c.dst = v
		*c.patch = store.Nullable[int32]{Set: true, Value: v}
	}
	sizes := []struct {
		name, val string
		dst       **int64
		patch     *store.Nullable[int64]
	}{
		{"max-quota", f.maxQuota, &d.MaxQuotaBytes, &p.MaxQuotaBytes},
		{"total-quota", f.totalQuota, &d.TotalQuotaBytes, &p.TotalQuotaBytes},
		{"default-quota", f.defaultQuota, &d.DefaultQuotaBytes, &p.DefaultQuotaBytes},
		{"max-message-size", f.maxMsg, &d.MaxMessageBytes, &p.MaxMessageBytes},
	}
	for _, c := range sizes {
		if !dataChanged(cmd, c.name) {
			continue
		}
		v, err := dataSizeLimit(c.name, c.val)
		if err != nil {
			return err
		}
		*c.dst = v
		*c.patch = store.Nullable[int64]{Set: true, Value: v}
	}
	d.Description, d.Active, d.BackupMX, d.Local = f.description, f.active, f.backupMX, f.local
	if dataChanged(cmd, "description") {
		p.Description = &f.description
	}
	if dataChanged(cmd, "active") {
		p.Active = &f.active
	}
	if dataChanged(cmd, "backup-mx") {
		p.BackupMX = &f.backupMX
	}
	if dataChanged(cmd, "local") {
		p.Local = &f.local
	}
	if dataChanged(cmd, "transport") {
		d.Transport = dataOptText(f.transport)
		p.Transport = store.Nullable[string]{Set: true, Value: d.Transport}
	}
	return nil
}

func (a *app) domainCommand() *cobra.Command {
	c := &cobra.Command{Use: "domain", Short: "manage the domains facteur receives mail for"}

	var af domainFlags
	add := &cobra.Command{
		Use:   "add DOMAIN",
		Short: "add a domain (with postmaster@ and abuse@ when default_alias_target is set)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			d := store.Domain{Name: name}
			if err := af.apply(cmd, &d, &store.DomainPatch{}); err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if _, err := st.CreateDomain(ctx, d); err != nil {
				return dataError(err)
			}
			sum, err := st.GetDomainSummary(ctx, name)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, sum, func(w io.Writer) { dataPrintDomain(w, sum) })
		},
	}
	af.register(add)

	list := &cobra.Command{
		Use:   "list",
		Short: "list domains with their mailbox and alias counts",
		Args:  cobra.NoArgs,
	}
	lo := dataListFlags(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		st, ctx, err := a.dataStore(cmd)
		if err != nil {
			return err
		}
		ds, err := st.ListDomains(ctx, *lo)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, ds, func(w io.Writer) {
			rows := make([][]string, 0, len(ds))
			for _, d := range ds {
				flags := ""
				if d.BackupMX {
					flags += "backup-mx "
				}
				if d.Local {
					flags += "local"
				}
				rows = append(rows, []string{d.Name, dataYesNo(d.Active),
					dataFormatCount(d.Mailboxes, d.MaxMailboxes), dataFormatCount(d.Aliases, d.MaxAliases),
					dataFormatSize(d.QuotaAllocatedBytes) + " / " + dataFormatLimit(d.TotalQuotaBytes),
					flags, d.Description})
			}
			dataTable(w, []string{"DOMAIN", "ACTIVE", "MAILBOXES", "ALIASES", "QUOTA ALLOCATED", "FLAGS", "DESCRIPTION"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show DOMAIN",
		Short: "show a domain, its limits and what it holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			sum, err := st.GetDomainSummary(ctx, name)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, sum, func(w io.Writer) { dataPrintDomain(w, sum) })
		},
	}

	var uf domainFlags
	update := &cobra.Command{
		Use:   "update DOMAIN",
		Short: "change a domain's settings or limits (lowering a limit below use is refused)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			var p store.DomainPatch
			if err := uf.apply(cmd, &store.Domain{}, &p); err != nil {
				return err
			}
			if p == (store.DomainPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if _, err := st.UpdateDomain(ctx, name, p); err != nil {
				return dataError(err)
			}
			sum, err := st.GetDomainSummary(ctx, name)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, sum, func(w io.Writer) { dataPrintDomain(w, sum) })
		},
	}
	uf.register(update)

	var force bool
	rm := &cobra.Command{
		Use:   "rm DOMAIN",
		Short: "delete a domain with its mailboxes, aliases and alias domains",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if !force {
				sum, err := st.GetDomainSummary(ctx, name)
				if err != nil {
					return dataError(err)
				}
				if sum.Mailboxes > 0 || sum.AliasDomains > 0 {
					return dataBadInput("domain %s has %d mailboxes and %d alias domains: add --force to delete them all",
						name, sum.Mailboxes, sum.AliasDomains)
				}
			}
			if err := st.DeleteDomain(ctx, name); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "domain", name)
		},
	}
	rm.Flags().BoolVar(&force, "force", false, "delete even when the domain has mailboxes or alias domains")

	c.AddCommand(add, list, show, update, rm)
	return c
}

func dataPrintDomain(w io.Writer, d store.DomainSummary) {
	kv := []string{"domain", d.Name}
	if u, err := address.DomainUnicode(d.Name); err == nil && u != d.Name {
		kv = append(kv, "unicode", u)
	}
	kv = append(kv,
		"description", d.Description,
		"active", dataYesNo(d.Active),
		"backup mx", dataYesNo(d.BackupMX),
		"local", dataYesNo(d.Local),
		"transport", dataOrDash(d.Transport),
		"mailboxes", dataFormatCount(d.Mailboxes, d.MaxMailboxes),
		"aliases", dataFormatCount(d.Aliases, d.MaxAliases),
		"alias domains", fmt.Sprint(d.AliasDomains),
		"quota allocated", fmt.Sprintf("%s of %s total (%d mailboxes unlimited)",
			dataFormatSize(d.QuotaAllocatedBytes), dataFormatLimit(d.TotalQuotaBytes), d.UnlimitedMailboxes),
		"max quota", dataFormatLimit(d.MaxQuotaBytes),
		"default quota", dataFormatLimit(d.DefaultQuotaBytes),
		"max message size", dataFormatLimit(d.MaxMessageBytes),
		"created", d.CreatedAt.Local().Format(time.DateTime),
		"updated", d.UpdatedAt.Local().Format(time.DateTime),
	)
	dataFields(w, kv...)
}

func (a *app) aliasDomainCommand() *cobra.Command {
	c := &cobra.Command{Use: "alias-domain", Short: "manage alias domains (every u@alias.tld is u@target.tld)"}

	var addActive bool
	add := &cobra.Command{
		Use:   "add ALIAS-DOMAIN TARGET-DOMAIN",
		Short: "make ALIAS-DOMAIN an alias of the domain TARGET-DOMAIN",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			alias, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			target, err := dataNormDomain(args[1])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			ad, err := st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: alias, TargetDomain: target, Active: addActive})
			if err != nil {
				return dataError(dataNotFoundAs(err, "domain %s does not exist", target))
			}
			return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAliasDomain(w, ad) })
		},
	}
	add.Flags().BoolVar(&addActive, "active", true, "in effect (--active=false to prepare it suspended)")

	list := &cobra.Command{Use: "list", Short: "list alias domains", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	var listDomain string
	list.Flags().StringVar(&listDomain, "domain", "", "only alias domains of this target domain")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		o := *lo
		if listDomain != "" {
			d, err := dataNormDomain(listDomain)
			if err != nil {
				return err
			}
			o.Domain = d
		}
		st, ctx, err := a.dataStore(cmd)
		if err != nil {
			return err
		}
		ads, err := st.ListAliasDomains(ctx, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, ads, func(w io.Writer) {
			rows := make([][]string, 0, len(ads))
			for _, ad := range ads {
				rows = append(rows, []string{ad.AliasDomain, ad.TargetDomain, dataYesNo(ad.Active)})
			}
			dataTable(w, []string{"ALIAS DOMAIN", "TARGET", "ACTIVE"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show ALIAS-DOMAIN",
		Short: "show an alias domain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			alias, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			ad, err := st.GetAliasDomain(ctx, alias)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAliasDomain(w, ad) })
		},
	}

	var target string
	var active bool
	update := &cobra.Command{
		Use:   "update ALIAS-DOMAIN",
		Short: "point an alias domain elsewhere, or suspend it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			alias, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			var p store.AliasDomainPatch
			if dataChanged(cmd, "target") {
				t, err := dataNormDomain(target)
				if err != nil {
					return err
				}
				p.TargetDomain = &t
			}
			if dataChanged(cmd, "active") {
				p.Active = &active
			}
			if p == (store.AliasDomainPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			ad, err := st.UpdateAliasDomain(ctx, alias, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAliasDomain(w, ad) })
		},
	}
	update.Flags().StringVar(&target, "target", "", "the new target domain")
	update.Flags().BoolVar(&active, "active", true, "in effect or suspended")

	rm := &cobra.Command{
		Use:   "rm ALIAS-DOMAIN",
		Short: "delete an alias domain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			alias, err := dataNormDomain(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteAliasDomain(ctx, alias); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "alias domain", alias)
		},
	}

	c.AddCommand(add, list, show, update, rm)
	return c
}

func dataPrintAliasDomain(w io.Writer, ad store.AliasDomain) {
	dataFields(w,
		"alias domain", ad.AliasDomain,
		"target", ad.TargetDomain,
		"active", dataYesNo(ad.Active),
		"created", ad.CreatedAt.Local().Format(time.DateTime),
		"updated", ad.UpdatedAt.Local().Format(time.DateTime),
	)
}
