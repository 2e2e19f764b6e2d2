package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
)

// cmdPrep creates every mailbox's Maildir (tmp, new, cur) under -root,
// owned by -uid:-gid with mode 0700, so that no run pays for creating
// Maildirs: on a running host they exist.
func cmdPrep(args []string) error {
	fs := flag.NewFlagSet("prep", flag.ExitOnError)
	root := fs.String("root", "", "mail root")
	mbs := fs.String("mailboxes", "", "mailboxes.tsv from gen")
	uid := fs.Int("uid", -1, "owner uid")
	gid := fs.Int("gid", -1, "owner gid")
	fs.Parse(args)
	if *root == "" || *mbs == "" {
		return errors.New("prep: -root and -mailboxes are required")
	}
	list, err := readMailboxes(*mbs)
	if err != nil {
		return err
	}
	mk := func(p string) error {
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if *uid >= 0 {
			return os.Chown(p, *uid, *gid)
		}
		return nil
	}
	if err := mk(*root); err != nil {
		return err
	}
	for _, m := range list {
		// <domain>/<local>/ : create each level.
		p := *root
		for _, part := range splitPath(m[1]) {
			p = filepath.Join(p, part)
			if err := mk(p); err != nil {
				return err
			}
		}
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := mk(filepath.Join(p, sub)); err != nil {
				return err
			}
		}
	}
	return nil
}

func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(filepath.ToSlash(p), "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
