package sendmailcli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/BurntSushi/toml"
)

// Defaults that must agree with cmd/facteur's configuration (config.go,
// applyDefaults): the spool directory, and the socket in it.
const (
	DefaultSpoolDir   = "/var/spool/facteur"
	DefaultSocketName = "pickup.sock"
)

// DefaultSocket is the pickup socket of a configuration that sets neither
// listen.pickup nor spool_dir.
var DefaultSocket = filepath.Join(DefaultSpoolDir, DefaultSocketName)

// ConfigCandidates lists where facteur's configuration is looked for, in
// order, as cmd/facteur does: $FACTEUR_CONFIG, ./facteur.toml,
// ./.facteur/facteur.toml, /etc/facteur/facteur.toml.
func ConfigCandidates(getenv func(string) string) []string {
	var c []string
	if env := getenv("FACTEUR_CONFIG"); env != "" {
		c = append(c, env)
	}
	return append(c, "facteur.toml", filepath.Join(".facteur", "facteur.toml"), "/etc/facteur/facteur.toml")
}

// Locate finds the pickup socket for the standalone sendmail, which reads
// only two settings of facteur's configuration and ignores the rest:
//
//   - with configPath (-C), that file's listen.pickup, else its
//     spool_dir + "/pickup.sock";
//   - else $FACTEUR_PICKUP when set;
//   - else the first configuration candidate that exists (see
//     ConfigCandidates), read the same way;
//   - else DefaultSocket.
//
// A candidate this user may not read is skipped: the configuration holds
// the database password, and sendmail runs as any user. getenv nil reads
// the process's environment.
func Locate(configPath string, getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if configPath != "" {
		return socketFromFile(configPath)
	}
	if p := getenv("FACTEUR_PICKUP"); p != "" {
		return p, nil
	}
	for _, p := range ConfigCandidates(getenv) {
		path, err := socketFromFile(p)
		switch {
		case err == nil:
			return path, nil
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
			continue
		default:
			return "", err
		}
	}
	return DefaultSocket, nil
}

// socketFromFile reads listen.pickup and spool_dir from a configuration
// file.
func socketFromFile(path string) (string, error) {
	var c struct {
		SpoolDir string `toml:"spool_dir"`
		Listen   struct {
			Pickup string `toml:"pickup"`
		} `toml:"listen"`
	}
	if _, err := toml.DecodeFile(path, &c); err != nil {
		return "", fmt.Errorf("config %s: %w", path, err)
	}
	switch {
	case c.Listen.Pickup != "":
		return c.Listen.Pickup, nil
	case c.SpoolDir != "":
		return filepath.Join(c.SpoolDir, DefaultSocketName), nil
	}
	return DefaultSocket, nil
}
