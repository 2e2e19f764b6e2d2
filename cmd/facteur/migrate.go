package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/migrations"
)

func addMigrateCommands(root *cobra.Command, a *app) {
	m := &cobra.Command{Use: "migrate", Short: "apply or inspect database migrations"}
	m.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.migrateUp(cmd.Context(), true)
		},
	})
	m.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "list migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			db := stdlib.OpenDBFromPool(st.Pool())
			p, err := migrations.Provider(db)
			if err != nil {
				return err
			}
			res, err := p.Status(cmd.Context())
			if err != nil {
				return fmt.Errorf("migration status: %w", err)
			}
			for _, r := range res {
				applied := "pending"
				if !r.AppliedAt.IsZero() {
					applied = r.AppliedAt.Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%-8d %-40s %s\n", r.Source.Version, r.Source.Path, applied)
			}
			return nil
		},
	})
	m.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "roll back the most recent migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			db := stdlib.OpenDBFromPool(st.Pool())
			p, err := migrations.Provider(db)
			if err != nil {
				return err
			}
			r, err := p.Down(cmd.Context())
			if err != nil {
				return fmt.Errorf("migrate down: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled back %d %s\n", r.Source.Version, r.Source.Path)
			return nil
		},
	})
	root.AddCommand(m)
}

// migrateUp applies pending migrations; verbose prints each one.
func (a *app) migrateUp(ctx context.Context, verbose bool) error {
	st, err := a.store(ctx)
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(st.Pool())
	res, err := migrations.Up(ctx, db)
	if err != nil {
		return err
	}
	if verbose {
		for _, r := range res {
			fmt.Printf("applied %d %s (%s)\n", r.Source.Version, r.Source.Path, r.Duration)
		}
		if len(res) == 0 {
			fmt.Println("database is up to date")
		}
	}
	return nil
}
