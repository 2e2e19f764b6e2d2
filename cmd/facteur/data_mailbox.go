package main

import (
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/store"
)

// addMailboxCommands adds `facteur mailbox …`.
func addMailboxCommands(root *cobra.Command, a *app) {
	root.AddCommand(a.mailboxCommand())
}

// mailboxFlags are the columns of a mailbox that add and update set.
type mailboxFlags struct {
	name, quota, transport, maildir string
	active                          bool
}

func (f *mailboxFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "the owner's name")
	fl.StringVar(&f.quota, "quota", "", `quota, e.g. 2G ("unlimited" for none; default: the domain's default quota)`)
	fl.StringVar(&f.transport, "transport", "", `next hop overriding the domain's ("none" clears it)`)
	fl.StringVar(&f.maildir, "maildir", "", "Maildir relative to the mail root (default: DOMAIN/LOCAL/)")
	fl.BoolVar(&f.active, "active", true, "may receive mail and log in (--active=false suspends it)")
}

func (f *mailboxFlags) apply(cmd *cobra.Command, m *store.Mailbox, p *store.MailboxPatch) error {
	m.Name, m.Maildir, m.Active = f.name, strings.TrimSpace(f.maildir), f.active
	if dataChanged(cmd, "name") {
		p.Name = &f.name
	}
	if dataChanged(cmd, "maildir") {
		p.Maildir = &m.Maildir
	}
	if dataChanged(cmd, "active") {
		p.Active = &f.active
	}
	if dataChanged(cmd, "quota") {
		q, err := dataSizeLimit("quota", f.quota)
		if err != nil {
			return err
		}
		m.QuotaBytes = q
		p.QuotaBytes = store.Nullable[int64]{Set: true, Value: q}
	}
	if dataChanged(cmd, "transport") {
		m.Transport = dataOptText(f.transport)
		p.Transport = store.Nullable[string]{Set: true, Value: m.Transport}
	}
	return nil
}

func (a *app) mailboxCommand() *cobra.Command {
	c := &cobra.Command{Use: "mailbox", Short: "manage mailboxes (virtual users who receive and send mail)"}

	var af mailboxFlags
	var addStdin bool
	add := &cobra.Command{
		Use:   "add ADDRESS",
		Short: "add a mailbox; the password is asked for (or read with --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAddress(args[0])
			if err != nil {
				return err
			}
			m := store.Mailbox{Address: addr}
			if err := af.apply(cmd, &m, &store.MailboxPatch{}); err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			dom := addr[strings.LastIndexByte(addr, '@')+1:]
			// Ask for the password only once the domain is known to exist
			// (the foreign key still decides).
			if _, err := st.GetDomain(ctx, dom); err != nil {
				return dataError(dataNotFoundAs(err, "domain %s does not exist", dom))
			}
			if m.Password, err = a.dataHashNewPassword(cmd, addStdin); err != nil {
				return err
			}
			out, err := st.CreateMailbox(ctx, m)
			if err != nil {
				return dataError(dataNotFoundAs(err, "domain %s does not exist", dom))
			}
			return a.dataEmit(cmd, out, func(w io.Writer) { dataPrintMailbox(w, out) })
		},
	}
	af.register(add)
	add.Flags().BoolVar(&addStdin, "password-stdin", false, "read the password from the first line of standard input")

	list := &cobra.Command{Use: "list", Short: "list mailboxes", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	var listDomain string
	list.Flags().StringVar(&listDomain, "domain", "", "only the mailboxes of this domain")
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
		ms, err := st.ListMailboxes(ctx, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, ms, func(w io.Writer) {
			rows := make([][]string, 0, len(ms))
			for _, m := range ms {
				rows = append(rows, []string{m.Address, dataYesNo(m.Active), dataFormatSize(m.UsedBytes),
					dataFormatLimit(m.QuotaBytes), m.Name})
			}
			dataTable(w, []string{"ADDRESS", "ACTIVE", "USED", "QUOTA", "NAME"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show ADDRESS",
		Short: "show a mailbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAddress(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			m, err := st.GetMailbox(ctx, addr)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, m, func(w io.Writer) { dataPrintMailbox(w, m) })
		},
	}

	var uf mailboxFlags
	update := &cobra.Command{
		Use:   "update ADDRESS",
		Short: "change a mailbox's name, quota, transport, Maildir or state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAddress(args[0])
			if err != nil {
				return err
			}
			var p store.MailboxPatch
			if err := uf.apply(cmd, &store.Mailbox{}, &p); err != nil {
				return err
			}
			if p == (store.MailboxPatch{}) {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			m, err := st.UpdateMailbox(ctx, addr, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, m, func(w io.Writer) { dataPrintMailbox(w, m) })
		},
	}
	uf.register(update)

	rm := &cobra.Command{
		Use:   "rm ADDRESS",
		Short: "delete a mailbox (its Maildir stays on disk)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAddress(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteMailbox(ctx, addr); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "mailbox", addr)
		},
	}

	var pwStdin bool
	pw := &cobra.Command{
		Use:   "passwd ADDRESS",
		Short: "set a mailbox's password (asked for, or read with --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAddress(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if _, err := st.GetMailbox(ctx, addr); err != nil {
				return dataError(err)
			}
			hash, err := a.dataHashNewPassword(cmd, pwStdin)
			if err != nil {
				return err
			}
			if err := st.SetMailboxPassword(ctx, addr, hash); err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, map[string]string{"password_changed": addr}, func(w io.Writer) {
				io.WriteString(w, "password of "+addr+" changed\n")
			})
		},
	}
	pw.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input")

	c.AddCommand(add, list, show, update, rm, pw)
	return c
}

func dataPrintMailbox(w io.Writer, m store.Mailbox) {
	dataFields(w,
		"address", m.Address,
		"name", m.Name,
		"active", dataYesNo(m.Active),
		"quota", dataFormatLimit(m.QuotaBytes),
		"used", dataFormatSize(m.UsedBytes)+" in "+strconv.FormatInt(m.UsedMessages, 10)+" messages",
		"maildir", m.Maildir,
		"transport", dataOrDash(m.Transport),
		"created", m.CreatedAt.Local().Format(time.DateTime),
		"updated", m.UpdatedAt.Local().Format(time.DateTime),
	)
}
