package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/pgcluster"
)

// The seed of a new development instance.
const (
	devDomain     = "example.test"
	devPostmaster = "postmaster@example.test"
	devAbuse      = "abuse@example.test"
	devAdmin      = "admin@example.test"
)

// devOptions are the flags of `facteur dev`.
type devOptions struct {
	dir       string
	freePorts bool
	serve     serveOptions
}

func addDevCommands(root *cobra.Command, a *app) {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run a development instance with its own PostgreSQL under ./.facteur/",
		Long: `dev runs a complete development instance from the directory it is started in
(or --dir): a private PostgreSQL cluster started with the server binaries
found on PATH or in /usr/lib/postgresql/*/bin, the schema, a seeded domain
example.test with the mailbox postmaster@example.test and the superadmin
admin@example.test (their passwords are printed on the first run only), a
self-signed certificate for localhost, and .facteur/facteur.toml, which every
other facteur command run from the same directory reads. Then it serves
every role that exists on loopback ports (SMTP 2525, submission 2587,
submissions 2465, admin HTTP 8080) until Ctrl-C, which stops PostgreSQL too.
Running it again reuses the data.

As root, PostgreSQL runs as the postgres user and its data lives in
/var/tmp/facteur-dev-<hash of the directory>/ (linked from .facteur/postgres),
because a checkout under /root is not reachable by that user.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.configPath != "" {
				return &exitError{code: exitUsage, err: errors.New("dev writes and reads .facteur/facteur.toml of its directory; use --dir instead of -c")}
			}
			o.serve.logTo = cmd.ErrOrStderr()
			return a.dev(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().StringVar(&o.dir, "dir", ".", "directory of the instance (its data goes in DIR/.facteur)")
	cmd.Flags().BoolVar(&o.freePorts, "free-ports", false, "on the first run, listen on free loopback ports instead of 2525, 2587, 2465 and 8080")
	addServeFlags(cmd, &o.serve)
	root.AddCommand(cmd)
}

// dev prepares the instance, serves until ctx is cancelled, then stops
// PostgreSQL.
func (a *app) dev(ctx context.Context, out io.Writer, o devOptions) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, "facteur dev: "+format+"\n", args...) }
	base, err := filepath.Abs(o.dir)
	if err != nil {
		return fmt.Errorf("dev directory: %w", err)
	}
	if base, err = filepath.EvalSymlinks(base); err != nil {
		return fmt.Errorf("dev directory: %w", err)
	}
	fdir := filepath.Join(base, ".facteur")
	if err := os.MkdirAll(fdir, 0o700); err != nil {
		return fmt.Errorf("dev directory: %w", err)
	}
	unlock, err := devLock(fdir)
	if err != nil {
		return err
	}
	defer unlock()

	cfgPath := filepath.Join(fdir, "facteur.toml")
	first := false
	if _, err := os.Stat(cfgPath); errors.Is(err, fs.ErrNotExist) {
		first = true
		if err := writeDevConfig(cfgPath, fdir, o.freePorts); err != nil {
			return err
		}
		say("new development instance in %s", fdir)
	} else if err != nil {
		return fmt.Errorf("dev config: %w", err)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	if cfg.DevPostgres == nil || cfg.DevPostgres.Dir == "" || cfg.DevPostgres.Port == 0 {
		return fmt.Errorf("%s has no [dev_postgres] dir and port: it was not written by facteur dev", cfgPath)
	}
	for _, d := range []string{cfg.SpoolDir, cfg.MailRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("dev directory: %w", err)
		}
	}
	if err := ensureDevCert(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
		return err
	}
	if err := ensureSRSSecret(cfg.SRS.SecretFile); err != nil {
		return err
	}

	c, err := devCluster(fdir, cfg.DevPostgres)
	if err != nil {
		return err
	}
	defer func() {
		// The pool first, so that PostgreSQL has no session to wait for.
		a.close()
		a.st = nil
		bg := context.WithoutCancel(ctx)
		if !c.Running(bg) {
			return
		}
		if serr := c.Stop(bg); serr != nil {
			err = errors.Join(err, serr)
			return
		}
		say("PostgreSQL stopped")
	}()
	if err := startDevCluster(ctx, c, cfg.DatabaseURL, say); err != nil {
		return err
	}

	a.configPath, a.cfg = cfgPath, cfg
	st, err := a.store(ctx)
	if err != nil {
		return err
	}
	log, err := serveLogger(o.serve.logTo, cfg.Log, o.serve.logFormat, o.serve.logLevel)
	if err != nil {
		return err
	}
	if err := serveSchema(ctx, st, false, log); err != nil {
		return err
	}
	seeded, err := seedDev(ctx, st, cfg, say)
	if err != nil {
		return err
	}
	if !seeded {
		if first {
			say("the database already holds data: nothing seeded")
		} else {
			say("reusing the data in %s; the superadmin is %s and the mailbox %s (their passwords were printed by the first run; `facteur admin passwd %s` sets a new one)", fdir, devAdmin, devPostmaster, devAdmin)
		}
	}
	say("configuration %s: run other facteur commands from %s", cfgPath, base)

	o.serve.ready = func(running []string) {
		r := strings.Join(running, ", ")
		if r == "" {
			r = "none built yet"
		}
		say("ready (roles running: %s); Ctrl-C stops facteur and PostgreSQL", r)
	}
	return a.serve(ctx, o.serve)
}

// devLock makes sure one `facteur dev` runs per directory.
func devLock(fdir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(fdir, "dev.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dev lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another facteur dev is running for %s", fdir)
		}
		return nil, fmt.Errorf("dev lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// devHash names the PostgreSQL directory of the instance in fdir.
func devHash(fdir string) string {
	h := sha256.Sum256([]byte(fdir))
	return hex.EncodeToString(h[:6])
}

// devClusterDir returns where the instance's cluster lives: as root outside
// the checkout, in a directory the postgres user can reach; otherwise in
// .facteur/postgres.
func devClusterDir(fdir string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/tmp", "facteur-dev-"+devHash(fdir))
	}
	return filepath.Join(fdir, "postgres")
}

// devCluster describes the instance's cluster and creates its directories.
func devCluster(fdir string, pc *DevPostgresConfig) (*pgcluster.Cluster, error) {
	c, err := pgcluster.New(pc.Dir, pc.Port)
	if err != nil {
		return nil, err
	}
	if len(c.SocketDir) > pgcluster.MaxSocketDir {
		c.SocketDir = filepath.Join(os.TempDir(), fmt.Sprintf("facteur-dev-%d-%s", os.Geteuid(), devHash(fdir)))
	}
	if err := c.PrepareDirs(0o700); err != nil {
		return nil, err
	}
	if link := filepath.Join(fdir, "postgres"); link != c.Dir {
		if _, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(c.Dir, link); err != nil {
				return nil, fmt.Errorf("link the PostgreSQL directory: %w", err)
			}
		}
	}
	return c, nil
}

// startDevCluster initialises the cluster on first use (superuser postgres:
// trust on its socket, the password of databaseURL over TCP), starts it on
// 127.0.0.1 unless it already runs, and creates the database that
// databaseURL names.
func startDevCluster(ctx context.Context, c *pgcluster.Cluster, databaseURL string, say func(string, ...any)) error {
	pc, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("database_url: %w", err)
	}
	if !c.Initialised() {
		pw := filepath.Join(c.Dir, "pwfile")
		if err := os.WriteFile(pw, []byte(pc.Password+"\n"), 0o600); err != nil {
			return fmt.Errorf("password file: %w", err)
		}
		defer os.Remove(pw)
		if err := c.Chown(pw); err != nil {
			return err
		}
		if err := c.Init(ctx, "--auth-host=scram-sha-256", "--pwfile="+pw); err != nil {
			return err
		}
	}
	if c.Running(ctx) && !c.Ping(ctx) {
		// Left running by an earlier run, on another port or socket.
		if err := c.Stop(ctx); err != nil {
			return err
		}
	}
	if c.Running(ctx) {
		say("PostgreSQL was left running in %s: using it", c.DataDir)
	} else {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)))
		if err != nil {
			return fmt.Errorf("PostgreSQL port %d is taken (%v): change port in [dev_postgres] and in database_url", c.Port, err)
		}
		l.Close()
		if err := c.Start(ctx, map[string]string{
			"listen_addresses":        "127.0.0.1",
			"unix_socket_permissions": "0700",
		}); err != nil {
			return err
		}
	}
	version, _ := os.ReadFile(filepath.Join(c.DataDir, "PG_VERSION"))
	say("PostgreSQL %s in %s, listening on 127.0.0.1:%d (log: %s)", strings.TrimSpace(string(version)), c.Dir, c.Port, c.LogFile())

	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to the dev cluster: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The password of the configuration, also when the configuration was
	// written again beside an existing cluster. (ALTER ROLE takes no
	// parameters; standard_conforming_strings is on.)
	lit := "'" + strings.ReplaceAll(pc.Password, "'", "''") + "'"
	if _, err := conn.Exec(ctx, "ALTER ROLE "+pgx.Identifier{pc.User}.Sanitize()+" WITH PASSWORD "+lit); err != nil {
		return fmt.Errorf("set the dev database password: %w", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", pc.Database).Scan(&exists); err != nil {
		return fmt.Errorf("find the dev database: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{pc.Database}.Sanitize()); err != nil {
			return fmt.Errorf("create the dev database: %w", err)
		}
	}
	return nil
}

// seedDev seeds an empty database (no domain, no admin): the domain
// example.test, the mailbox postmaster@, abuse@ pointing at it, the
// superadmin, and postmaster@example.test as the target of every new
// domain's postmaster@ and abuse@. It prints the generated passwords and
// reports whether it seeded.
func seedDev(ctx context.Context, st *store.Store, cfg *Config, say func(string, ...any)) (bool, error) {
	var used bool
	if err := st.Pool().QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM domain) OR EXISTS (SELECT 1 FROM admin)").Scan(&used); err != nil {
		return false, fmt.Errorf("look for existing data: %w", err)
	}
	if used {
		return false, nil
	}
	h, err := cfg.hasher()
	if err != nil {
		return false, err
	}
	mailboxPW, adminPW := rand.Text(), rand.Text()
	mailboxHash, err := h.Hash(mailboxPW)
	if err != nil {
		return false, fmt.Errorf("hash password: %w", err)
	}
	adminHash, err := h.Hash(adminPW)
	if err != nil {
		return false, fmt.Errorf("hash password: %w", err)
	}
	err = st.WithTx(store.WithActor(ctx, "facteur dev"), func(tx pgx.Tx) error {
		// The setting comes after the domain, so that the domain does not get
		// a postmaster@ alias that shadows its own postmaster mailbox.
		steps := []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO domain (name, description) VALUES ($1, 'development domain of facteur dev')", []any{devDomain}},
			{"INSERT INTO mailbox (address, name, password) VALUES ($1, 'Postmaster', $2)", []any{devPostmaster, mailboxHash}},
			{"INSERT INTO admin (username, password, superadmin) VALUES ($1, $2, true)", []any{devAdmin, adminHash}},
			{`INSERT INTO setting (key, value) VALUES ('default_alias_target', $1)
			  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, []any{devPostmaster}},
			{"INSERT INTO alias (address, destinations, description) VALUES ($1, ARRAY[$2::text], 'default alias')", []any{devAbuse, devPostmaster}},
		}
		for _, s := range steps {
			if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
				return fmt.Errorf("seed: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	say("seeded the domain %s; these passwords are shown this once only:", devDomain)
	say("  mailbox     %-26s password %s", devPostmaster, mailboxPW)
	say("  superadmin  %-26s password %s", devAdmin, adminPW)
	say("change them with `facteur mailbox passwd %s` and `facteur admin passwd %s`", devPostmaster, devAdmin)
	return true, nil
}

// writeDevConfig writes the instance's configuration on its first run.
func writeDevConfig(path, fdir string, freePorts bool) error {
	pgPort, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	listen := map[string]string{
		"smtp":        "127.0.0.1:2525",
		"submission":  "127.0.0.1:2587",
		"submissions": "127.0.0.1:2465",
		"admin":       "127.0.0.1:8080",
	}
	if freePorts {
		for k := range listen {
			p, err := freeLoopbackPort()
			if err != nil {
				return err
			}
			listen[k] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		}
	}
	pickup := filepath.Join(fdir, "pickup.sock")
	if len(pickup) > pgcluster.MaxSocketDir {
		pickup = filepath.Join(os.TempDir(), fmt.Sprintf("facteur-dev-%d-%s.sock", os.Geteuid(), devHash(fdir)))
	}
	q := tomlQuote
	var b bytes.Buffer
	fmt.Fprintf(&b, `# The development instance of %s, written by the first run of
# "facteur dev". Every facteur command run from that directory reads this file
# (see the configuration search order in README.md).

database_url = %s
spool_dir = %s
mail_root = %s
hostname = "localhost"
postmaster = %s

[listen]
smtp = %s
submission = %s
submissions = %s
pickup = %s
admin = %s

# A self-signed certificate for localhost, made by facteur dev.
[tls]
cert_file = %s
key_file = %s

# SRS for mail that aliases forward elsewhere; facteur dev makes the secret.
[srs]
secret_file = %s

# The private PostgreSQL cluster that facteur dev starts and stops.
[dev_postgres]
dir = %s
port = %d
`, filepath.Dir(fdir),
		q(fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/facteur?sslmode=disable", rand.Text(), pgPort)),
		q(filepath.Join(fdir, "spool")), q(filepath.Join(fdir, "mail")), q(devPostmaster),
		q(listen["smtp"]), q(listen["submission"]), q(listen["submissions"]), q(pickup), q(listen["admin"]),
		q(filepath.Join(fdir, "tls", "cert.pem")), q(filepath.Join(fdir, "tls", "key.pem")),
		q(filepath.Join(fdir, "srs.secret")), q(devClusterDir(fdir)), pgPort)
	// Written beside and renamed, so an interrupted first run leaves no
	// half-written file that the next run would take for a configuration.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write dev config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write dev config: %w", err)
	}
	return nil
}

// tomlQuote quotes s as a TOML basic string (JSON's escapes are TOML's).
func tomlQuote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that is free now.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureDevCert makes a self-signed certificate for localhost unless the
// files hold one that is valid for at least another week.
func ensureDevCert(certFile, keyFile string) error {
	if certFile == "" || keyFile == "" {
		return nil
	}
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && pair.Leaf != nil &&
		time.Until(pair.Leaf.NotAfter) > 7*24*time.Hour {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"facteur dev"}},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certificate key: %w", err)
	}
	for _, d := range []string{filepath.Dir(certFile), filepath.Dir(keyFile)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("certificate directory: %w", err)
		}
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("write certificate key: %w", err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return nil
}

// ensureSRSSecret writes a random SRS secret to path (when set) unless the
// file exists.
func ensureSRSSecret(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("srs secret: %w", err)
	}
	_, err = fmt.Fprintf(f, "# SRS secret made by facteur dev; a new one goes on the first line.\n%s\n", rand.Text())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("srs secret: %w", err)
	}
	return nil
}
