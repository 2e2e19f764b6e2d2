package main

import (
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/store"
)

// addAliasCommands adds `facteur alias …`.
func addAliasCommands(root *cobra.Command, a *app) {
	root.AddCommand(a.aliasCommand())
}

// dataNormDestinations normalises alias destinations given as arguments or
// flag values. Addresses may be comma-separated ("a@x,b@y"); a command, file
// or :include: destination is taken whole, commas and all.
func dataNormDestinations(in []string) ([]string, error) {
	var out []string
	for _, arg := range in {
		parts := strings.Split(arg, ",")
		if t := strings.TrimSpace(arg); dataIsCommandOrFile(t) {
			parts = []string{t}
		}
		for _, d := range parts {
			if strings.TrimSpace(d) == "" {
				continue
			}
			n, err := dataNormDestination(d)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
	}
	return out, nil
}

func (a *app) aliasCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "alias",
		Short: "manage aliases (an address, or @domain for a catch-all, forwarded to destinations)",
		Long: `An alias forwards an address to one or more destinations. To forward the mail
of a mailbox and keep a copy, name the mailbox's own address among the
destinations. On domains marked local, a destination may also be a local
user, |command, /file or :include:/file.`,
	}

	var addDesc string
	var addActive bool
	add := &cobra.Command{
		Use:   "add ADDRESS DESTINATION...",
		Short: "add an alias",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAliasAddress(args[0])
			if err != nil {
				return err
			}
			dsts, err := dataNormDestinations(args[1:])
			if err != nil {
				return err
			}
			if len(dsts) == 0 {
				return dataBadInput("alias %s: no destination", addr)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			dom := addr[strings.LastIndexByte(addr, '@')+1:]
			al, err := st.CreateAlias(ctx, store.Alias{Address: addr, Destinations: dsts, Description: addDesc, Active: addActive})
			if err != nil {
				return dataError(dataNotFoundAs(err, "domain %s does not exist", dom))
			}
			return a.dataEmit(cmd, al, func(w io.Writer) { dataPrintAlias(w, al) })
		},
	}
	add.Flags().StringVar(&addDesc, "description", "", "free text")
	add.Flags().BoolVar(&addActive, "active", true, "in effect (--active=false to prepare it suspended)")

	list := &cobra.Command{Use: "list", Short: "list aliases (--search also matches destinations)", Args: cobra.NoArgs}
	lo := dataListFlags(list)
	var listDomain string
	list.Flags().StringVar(&listDomain, "domain", "", "only the aliases of this domain")
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
		as, err := st.ListAliases(ctx, o)
		if err != nil {
			return dataError(err)
		}
		return a.dataEmit(cmd, as, func(w io.Writer) {
			rows := make([][]string, 0, len(as))
			for _, al := range as {
				rows = append(rows, []string{al.Address, dataYesNo(al.Active), strings.Join(al.Destinations, ", ")})
			}
			dataTable(w, []string{"ADDRESS", "ACTIVE", "DESTINATIONS"}, rows)
		})
	}

	show := &cobra.Command{
		Use:   "show ADDRESS",
		Short: "show an alias",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAliasAddress(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			al, err := st.GetAlias(ctx, addr)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, al, func(w io.Writer) { dataPrintAlias(w, al) })
		},
	}

	var setDsts, addDsts, rmDsts []string
	var desc string
	var active bool
	update := &cobra.Command{
		Use:   "update ADDRESS",
		Short: "change an alias's destinations, description or state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAliasAddress(args[0])
			if err != nil {
				return err
			}
			var p store.AliasPatch
			if dataChanged(cmd, "destinations") {
				if dataChanged(cmd, "add") || dataChanged(cmd, "remove") {
					return dataBadInput("give --destinations, or --add and --remove, not both")
				}
				d, err := dataNormDestinations(setDsts)
				if err != nil {
					return err
				}
				if len(d) == 0 {
					return dataBadInput("alias %s: no destination", addr)
				}
				p.Destinations = &d
			}
			if p.AddDestinations, err = dataNormDestinations(addDsts); err != nil {
				return err
			}
			if p.RemoveDestinations, err = dataNormDestinations(rmDsts); err != nil {
				return err
			}
			if dataChanged(cmd, "description") {
				p.Description = &desc
			}
			if dataChanged(cmd, "active") {
				p.Active = &active
			}
			if p.Destinations == nil && p.AddDestinations == nil && p.RemoveDestinations == nil &&
				p.Description == nil && p.Active == nil {
				return dataNothingToChange(cmd)
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			al, err := st.UpdateAlias(ctx, addr, p)
			if err != nil {
				return dataError(err)
			}
			return a.dataEmit(cmd, al, func(w io.Writer) { dataPrintAlias(w, al) })
		},
	}
	update.Flags().StringArrayVar(&setDsts, "destinations", nil, "replace the destinations (comma-separated or repeated)")
	update.Flags().StringArrayVar(&addDsts, "add", nil, "add destinations (comma-separated or repeated)")
	update.Flags().StringArrayVar(&rmDsts, "remove", nil, "remove destinations (comma-separated or repeated)")
	update.Flags().StringVar(&desc, "description", "", "free text")
	update.Flags().BoolVar(&active, "active", true, "in effect or suspended")

	rm := &cobra.Command{
		Use:   "rm ADDRESS",
		Short: "delete an alias",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := dataNormAliasAddress(args[0])
			if err != nil {
				return err
			}
			st, ctx, err := a.dataStore(cmd)
			if err != nil {
				return err
			}
			if err := st.DeleteAlias(ctx, addr); err != nil {
				return dataError(err)
			}
			return a.dataEmitDeleted(cmd, "alias", addr)
		},
	}

	c.AddCommand(add, list, show, update, rm)
	return c
}

func dataPrintAlias(w io.Writer, al store.Alias) {
	kv := []string{"address", al.Address}
	if al.LocalPart == "" {
		kv = append(kv, "catch-all", "yes")
	}
	for i, d := range al.Destinations {
		name := ""
		if i == 0 {
			name = "destinations"
		}
		kv = append(kv, name, d)
	}
	kv = append(kv,
		"description", al.Description,
		"active", dataYesNo(al.Active),
		"created", al.CreatedAt.Local().Format(time.DateTime),
		"updated", al.UpdatedAt.Local().Format(time.DateTime),
	)
	dataFields(w, kv...)
}
