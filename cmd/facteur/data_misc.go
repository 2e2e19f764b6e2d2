package main

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/store"
)

// addMiscDataCommands adds `facteur transport|sender-grant|client-access|admin …`.
func addMiscDataCommands(root *cobra.Command, a *app) {
	root.AddCommand(a.transportCommand(), a.senderGrantCommand(), a.clientAccessCommand(), a.adminCommand())
}

// dataNormTransportKey accepts a domain or an address.
func dataNormTransportKey(s string) (string, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "@") {
		return "", dataBadInput("transport key %q: give a domain or an address", s)
	}
	return dataNormDomainOrAddress(s)
}

func (a *app) transportCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "transport",
		Short: "manage transports (a domain or address to a next hop, as Postfix's transport(5))",
		Long: `A transport sends the mail of a domain or an address to a next hop:
smtp:[host]:port, lmtp:unix:/path, lmtp:host:port, relay:[host], maildir,
pipe:..., discard, or error:5.x.x text.`,
	}
	var addDesc string
	var addActive bool
	add := &cobra.Command{
		Use:   "add KEY NEXTHOP",
		Short: "add a transport for a domain or an address",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := dataNormTransportKey(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			t, err := st.CreateTransport(ctx, store.Transport{Key: key, Nexthop: strings.TrimSpace(args[1]), Description: addDesc, Active: addActive})
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, t, func(w io.Writer) { dataPrintTransport(w, t) })
		},
	}
	add.Flags().StringVar(&addDesc, "description", "", "free text")
	add.Flags().BoolVar(&addActive, "active", true, "in effect (--active=false to prepare it suspended)")

	list := &cobra.Command{Use: "list", Short: "list transports", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	var listDomain string
	list.Flags().StringVar(&listDomain, "domain", "", "only the transports of this domain and its addresses")
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
		ts, err := st.ListTransports(ctx, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, ts, func(w io.Writer) {
			rows := make([][]string, 0, len(ts))
			for _, t := range ts {
				rows = append(rows, []string{t.Key, t.Nexthop, dataYesNo(t.Active), t.Description})
			}
			dataTable(w, []string{"KEY", "NEXTHOP", "ACTIVE", "DESCRIPTION"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show KEY",
		Short: "show a transport",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := dataNormTransportKey(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			t, err := st.GetTransport(ctx, key)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, t, func(w io.Writer) { dataPrintTransport(w, t) })
		},
	}

	var nexthop, desc string
	var active bool
	update := &cobra.Command{
		Use:   "update KEY",
		Short: "change a transport",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := dataNormTransportKey(args[0])
			if err != nil {
				return err
			}
			var p store.TransportPatch
			if dataChanged(cmd, "nexthop") {
				nh := strings.TrimSpace(nexthop)
				p.Nexthop = &nh
			}
			if dataChanged(cmd, "description") {
				p.Description = &desc
			}
			if dataChanged(cmd, "active") {
				p.Active = &active
			}
			if p == (store.TransportPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			t, err := st.UpdateTransport(ctx, key, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, t, func(w io.Writer) { dataPrintTransport(w, t) })
		},
	}
	update.Flags().StringVar(&nexthop, "nexthop", "", "the new next hop")
	update.Flags().StringVar(&desc, "description", "", "free text")
	update.Flags().BoolVar(&active, "active", true, "in effect or suspended")

	rm := &cobra.Command{
		Use:   "rm KEY",
		Short: "delete a transport",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := dataNormTransportKey(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteTransport(ctx, key); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "transport", key)
		},
	}
	c.AddCommand(add, list, show, update, rm)
	return c
}

func dataPrintTransport(w io.Writer, t store.Transport) {
	dataFields(w,
		"key", t.Key,
		"nexthop", t.Nexthop,
		"description", t.Description,
		"active", dataYesNo(t.Active),
		"created", t.CreatedAt.Local().Format(time.DateTime),
		"updated", t.UpdatedAt.Local().Format(time.DateTime),
	)
}

// dataNormSender accepts an address or "@domain".
func dataNormSender(s string) (string, error) {
	if !strings.Contains(s, "@") {
		return "", dataBadInput("sender %q: give an address, or @domain for every address of a domain", s)
	}
	return dataNormDomainOrAddress(s)
}

func (a *app) senderGrantCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "sender-grant",
		Short: "let a mailbox send as another address or as any address of a domain",
	}
	var addActive bool
	add := &cobra.Command{
		Use:   "add MAILBOX SENDER",
		Short: "let MAILBOX send as SENDER (an address, or @domain)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			mb, err := dataNormAddress(args[0])
			if err != nil {
				return err
			}
			sender, err := dataNormSender(args[1])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			g, err := st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: mb, Sender: sender, Active: addActive})
			if err != nil {
				return dataError(dataNotFoundAs(err, "mailbox %s does not exist", mb))
			}
			return a.dataEmit(cmd, g, func(w io.Writer) { dataPrintSenderGrant(w, g) })
		},
	}
	add.Flags().BoolVar(&addActive, "active", true, "in effect (--active=false to prepare it suspended)")

	list := &cobra.Command{Use: "list", Short: "list sender grants", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	var listDomain, listMailbox string
	list.Flags().StringVar(&listDomain, "domain", "", "only the grants of mailboxes of this domain")
	list.Flags().StringVar(&listMailbox, "mailbox", "", "only the grants of this mailbox")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		o := *lo
		if listDomain != "" {
			d, err := dataNormDomain(listDomain)
			if err != nil {
				return err
			}
			o.Domain = d
		}
		mb := ""
		if listMailbox != "" {
			var err error
			if mb, err = dataNormAddress(listMailbox); err != nil {
				return err
			}
		}
		st, ctx, err := a.dataStore(cmd)
		if err != nil {
			return err
		}
		gs, err := st.ListSenderGrants(ctx, mb, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, gs, func(w io.Writer) {
			rows := make([][]string, 0, len(gs))
			for _, g := range gs {
				rows = append(rows, []string{strconv.FormatInt(g.ID, 10), g.Mailbox, g.Sender, dataYesNo(g.Active)})
			}
			dataTable(w, []string{"ID", "MAILBOX", "MAY SEND AS", "ACTIVE"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show ID",
		Short: "show a sender grant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := dataParseID(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			g, err := st.GetSenderGrant(ctx, id)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, g, func(w io.Writer) { dataPrintSenderGrant(w, g) })
		},
	}

	var sender string
	var active bool
	update := &cobra.Command{
		Use:   "update ID",
		Short: "change a sender grant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := dataParseID(args[0])
			if err != nil {
				return err
			}
			var p store.SenderGrantPatch
			if dataChanged(cmd, "sender") {
				s, err := dataNormSender(sender)
				if err != nil {
					return err
				}
				p.Sender = &s
			}
			if dataChanged(cmd, "active") {
				p.Active = &active
			}
			if p == (store.SenderGrantPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			g, err := st.UpdateSenderGrant(ctx, id, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, g, func(w io.Writer) { dataPrintSenderGrant(w, g) })
		},
	}
	update.Flags().StringVar(&sender, "sender", "", "the new sender (an address, or @domain)")
	update.Flags().BoolVar(&active, "active", true, "in effect or suspended")

	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "delete a sender grant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := dataParseID(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteSenderGrant(ctx, id); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "sender grant", args[0])
		},
	}
	c.AddCommand(add, list, show, update, rm)
	return c
}

func dataPrintSenderGrant(w io.Writer, g store.SenderGrant) {
	dataFields(w,
		"id", strconv.FormatInt(g.ID, 10),
		"mailbox", g.Mailbox,
		"may send as", g.Sender,
		"active", dataYesNo(g.Active),
		"created", g.CreatedAt.Local().Format(time.DateTime),
		"updated", g.UpdatedAt.Local().Format(time.DateTime),
	)
}

// dataParseNetwork reads a CIDR network or a single IP address.
func dataParseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, dataBadInput("network %q: give an address or a CIDR network such as 192.0.2.0/24", s)
		}
		return netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, dataBadInput("network %q: give an address or a CIDR network such as 192.0.2.0/24", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, dataBadInput("network %q has host bits set: did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// dataCheckAction checks a client access action.
func dataCheckAction(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case store.ActionPermitRelay, store.ActionPermitQMQP, store.ActionReject:
		return s, nil
	}
	return "", dataBadInput("action %q: give %s, %s or %s", s, store.ActionPermitRelay, store.ActionPermitQMQP, store.ActionReject)
}

func (a *app) clientAccessCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "client-access",
		Short: "manage client networks: permit relaying, permit QMQP, or reject",
	}
	var addDesc string
	var addActive bool
	add := &cobra.Command{
		Use:   "add NETWORK ACTION",
		Short: "add a rule: NETWORK (192.0.2.0/24, 2001:db8::/32, an address) gets ACTION (permit_relay, permit_qmqp, reject)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			nw, err := dataParseNetwork(args[0])
			if err != nil {
				return err
			}
			action, err := dataCheckAction(args[1])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			r, err := st.CreateClientAccess(ctx, store.ClientAccess{Network: nw, Action: action, Description: addDesc, Active: addActive})
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, r, func(w io.Writer) { dataPrintClientAccess(w, r) })
		},
	}
	add.Flags().StringVar(&addDesc, "description", "", "free text")
	add.Flags().BoolVar(&addActive, "active", true, "in effect (--active=false to prepare it suspended)")

	list := &cobra.Command{Use: "list", Short: "list client access rules", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		st, ctx, err := a.dataStore(cmd)
		if err != nil {
			return err
		}
		rs, err := st.ListClientAccess(ctx, *lo)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, rs, func(w io.Writer) {
			rows := make([][]string, 0, len(rs))
			for _, r := range rs {
				rows = append(rows, []string{strconv.FormatInt(r.ID, 10), r.Network.String(), r.Action, dataYesNo(r.Active), r.Description})
			}
			dataTable(w, []string{"ID", "NETWORK", "ACTION", "ACTIVE", "DESCRIPTION"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show ID",
		Short: "show a client access rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := dataParseID(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			r, err := st.GetClientAccess(ctx, id)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, r, func(w io.Writer) { dataPrintClientAccess(w, r) })
		},
	}

	var action, desc string
	var active bool
	update := &cobra.Command{
		Use:   "update ID",
		Short: "change a client access rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := dataParseID(args[0])
			if err != nil {
				return err
			}
			var p store.ClientAccessPatch
			if dataChanged(cmd, "action") {
				act, err := dataCheckAction(action)
				if err != nil {
					return err
				}
				p.Action = &act
			}
			if dataChanged(cmd, "description") {
				p.Description = &desc
			}
			if dataChanged(cmd, "active") {
				p.Active = &active
			}
			if p == (store.ClientAccessPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			r, err := st.UpdateClientAccess(ctx, id, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, r, func(w io.Writer) { dataPrintClientAccess(w, r) })
		},
	}
	update.Flags().StringVar(&action, "action", "", "permit_relay, permit_qmqp or reject")
	update.Flags().StringVar(&desc, "description", "", "free text")
	update.Flags().BoolVar(&active, "active", true, "in effect or suspended")

	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "delete a client access rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := dataParseID(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteClientAccess(ctx, id); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "client access rule", args[0])
		},
	}
	c.AddCommand(add, list, show, update, rm)
	return c
}

func dataPrintClientAccess(w io.Writer, r store.ClientAccess) {
	dataFields(w,
		"id", strconv.FormatInt(r.ID, 10),
		"network", r.Network.String(),
		"action", r.Action,
		"description", r.Description,
		"active", dataYesNo(r.Active),
		"created", r.CreatedAt.Local().Format(time.DateTime),
		"updated", r.UpdatedAt.Local().Format(time.DateTime),
	)
}

// dataNormDomains normalises domain arguments.
func dataNormDomains(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, s := range in {
		d, err := dataNormDomain(s)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (a *app) adminCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "admin",
		Short: "manage the admins of the admin service (superadmins, or admins of some domains)",
	}
	var addSuper, addActive, addStdin bool
	var addDomains []string
	add := &cobra.Command{
		Use:   "add USERNAME",
		Short: "add an admin; the password is asked for (or read with --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := dataNormUsername(args[0])
			if err != nil {
				return err
			}
			domains, err := dataNormDomains(addDomains)
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			for _, d := range domains {
				if _, err := st.GetDomain(ctx, d); err != nil {
					return dataError(dataNotFoundAs(err, "domain %s does not exist", d))
				}
			}
			hash, err := a.dataHashNewPassword(cmd, addStdin)
			if err != nil {
				return err
			}
			ad, err := st.CreateAdmin(ctx, store.Admin{Username: user, Password: hash, Superadmin: addSuper, Active: addActive}, domains)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAdmin(w, ad) })
		},
	}
	add.Flags().BoolVar(&addSuper, "superadmin", false, "may manage everything")
	add.Flags().StringArrayVar(&addDomains, "domain", nil, "a domain the admin manages (repeat for several)")
	add.Flags().BoolVar(&addActive, "active", true, "may log in (--active=false to prepare it suspended)")
	add.Flags().BoolVar(&addStdin, "password-stdin", false, "read the password from the first line of standard input")

	list := &cobra.Command{Use: "list", Short: "list admins", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	var listDomain string
	list.Flags().StringVar(&listDomain, "domain", "", "only the admins of this domain")
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
		as, err := st.ListAdmins(ctx, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, as, func(w io.Writer) {
			rows := make([][]string, 0, len(as))
			for _, ad := range as {
				domains := strings.Join(ad.Domains, ", ")
				if ad.Superadmin {
					domains = "(all: superadmin)"
				}
				rows = append(rows, []string{ad.Username, dataYesNo(ad.Active), dataYesNo(ad.TOTPEnabled), domains})
			}
			dataTable(w, []string{"USERNAME", "ACTIVE", "TOTP", "DOMAINS"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show USERNAME",
		Short: "show an admin and the domains it manages",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := dataNormUsername(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			ad, err := st.GetAdmin(ctx, user)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAdmin(w, ad) })
		},
	}

	var super, active, resetTOTP bool
	update := &cobra.Command{
		Use:   "update USERNAME",
		Short: "change an admin's role or state (domains: see admin domains)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := dataNormUsername(args[0])
			if err != nil {
				return err
			}
			var p store.AdminPatch
			if dataChanged(cmd, "superadmin") {
				p.Superadmin = &super
			}
			if dataChanged(cmd, "active") {
				p.Active = &active
			}
			if resetTOTP {
				p.TOTPSecret = store.SetNull[string]()
				p.TOTPLastStep = store.SetNull[int64]()
			}
			if p == (store.AdminPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			ad, err := st.UpdateAdmin(ctx, user, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAdmin(w, ad) })
		},
	}
	update.Flags().BoolVar(&super, "superadmin", false, "may manage everything (--superadmin=false withdraws it)")
	update.Flags().BoolVar(&active, "active", true, "may log in")
	update.Flags().BoolVar(&resetTOTP, "reset-totp", false, "remove the admin's second factor (it enrols again at next login)")

	rm := &cobra.Command{
		Use:   "rm USERNAME",
		Short: "delete an admin with its API tokens",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := dataNormUsername(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteAdmin(ctx, user); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "admin", user)
		},
	}

	var pwStdin bool
	pw := &cobra.Command{
		Use:   "passwd USERNAME",
		Short: "set an admin's password (asked for, or read with --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := dataNormUsername(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if _, err := st.GetAdmin(ctx, user); err != nil {
				return dataError(err)
			}
			hash, err := a.dataHashNewPassword(cmd, pwStdin)
			if err != nil {
				return err
			}
			if err := st.SetAdminPassword(ctx, user, hash); err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, map[string]string{"password_changed": user}, func(w io.Writer) {
				fmt.Fprintf(w, "password of admin %s changed\n", user)
			})
		},
	}
	pw.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input")

	c.AddCommand(add, list, show, update, rm, pw, a.adminDomainsCommand())
	return c
}

func (a *app) adminDomainsCommand() *cobra.Command {
	c := &cobra.Command{Use: "domains", Short: "choose the domains an admin manages"}
	add := &cobra.Command{
		Use:   "add USERNAME DOMAIN...",
		Short: "let an admin manage domains (all or none)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.adminDomainsChange(cmd, args, true)
		},
	}
	rm := &cobra.Command{
		Use:   "rm USERNAME DOMAIN...",
		Short: "withdraw domains from an admin (all or none)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.adminDomainsChange(cmd, args, false)
		},
	}
	c.AddCommand(add, rm)
	return c
}

func (a *app) adminDomainsChange(cmd *cobra.Command, args []string, grant bool) error {
	user, err := dataNormUsername(args[0])
	if err != nil {
		return err
	}
	domains, err := dataNormDomains(args[1:])
	if err != nil {
		return err
	}
	st, ctx, err := a.dataStore(cmd)
	if err != nil {
		return err
	}
	if grant {
		_, err = st.AddDomainAdmins(ctx, user, domains...)
	} else {
		err = st.RemoveDomainAdmins(ctx, user, domains...)
	}
	if err != nil {
		return dataError(err)
	}
	ad, err := st.GetAdmin(ctx, user)
	if err != nil {
		return dataError(err)
	}
	return a.dataEmit(cmd, ad, func(w io.Writer) { dataPrintAdmin(w, ad) })
}

func dataPrintAdmin(w io.Writer, ad store.Admin) {
	domains := strings.Join(ad.Domains, ", ")
	if domains == "" {
		domains = "-"
	}
	dataFields(w,
		"username", ad.Username,
		"superadmin", dataYesNo(ad.Superadmin),
		"domains", domains,
		"active", dataYesNo(ad.Active),
		"totp", dataYesNo(ad.TOTPEnabled),
		"created", ad.CreatedAt.Local().Format(time.DateTime),
		"updated", ad.UpdatedAt.Local().Format(time.DateTime),
	)
}
