// Package pgcluster runs a private PostgreSQL cluster with the server
// binaries installed on the machine (initdb, pg_ctl), for the test bootstrap
// (store/storetest) and for `facteur dev`.
//
// initdb refuses to run as root, so when the caller is root every server
// binary runs as the postgres user (through runuser), and the cluster's
// directory must be one that user can reach: a checkout under /root is not
// traversable. PostgreSQL refuses unix socket paths longer than 107 bytes, so
// the socket directory must be short.
//
// The server runs in its own session (setsid): a Ctrl-C in the terminal
// reaches the caller, which decides when to stop the server.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// MaxSocketDir is the longest socket directory that leaves room for the
// socket's own name (".s.PGSQL.65535") within PostgreSQL's limit of 107 bytes.
const MaxSocketDir = 107 - len("/.s.PGSQL.65535")

// Cluster is one private PostgreSQL cluster.
type Cluster struct {
	Dir       string // holds the data directory and the server log
	DataDir   string // the cluster's data directory (Dir/data)
	SocketDir string // unix socket directory; at most MaxSocketDir bytes
	BinDir    string // directory of initdb and pg_ctl
	AsUser    string // user the server binaries run as ("" = this process's user)
	Port      int    // port number of the socket and of any TCP listener
}

// New describes a cluster in dir (data in dir/data, socket in dir) on port,
// with the server binaries FindServerBinaries finds. As root the binaries run
// as the postgres user. Nothing is created.
func New(dir string, port int) (*Cluster, error) {
	bin, err := FindServerBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, DataDir: filepath.Join(dir, "data"), SocketDir: dir, BinDir: bin, Port: port}
	if os.Geteuid() == 0 {
		c.AsUser = "postgres"
	}
	return c, nil
}

// FindServerBinaries finds the directory holding initdb and pg_ctl: on PATH,
// else the newest /usr/lib/postgresql/*/bin.
func FindServerBinaries() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, m := range matches {
		dir := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (pg_ctl, initdb) found on PATH or in /usr/lib/postgresql/*/bin; install the postgresql package")
}

func versionOf(p string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return v
}

// Owner returns the uid and gid the server runs as.
func (c *Cluster) Owner() (uid, gid int, err error) {
	if c.AsUser == "" {
		return os.Geteuid(), os.Getegid(), nil
	}
	u, err := user.Lookup(c.AsUser)
	if err != nil {
		return 0, 0, fmt.Errorf("look up %s: %w", c.AsUser, err)
	}
	uid, err = strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, fmt.Errorf("uid of %s: %w", c.AsUser, err)
	}
	gid, err = strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, fmt.Errorf("gid of %s: %w", c.AsUser, err)
	}
	return uid, gid, nil
}

// Chown gives path to the user the server runs as (a no-op unless AsUser is set).
func (c *Cluster) Chown(path string) error {
	if c.AsUser == "" {
		return nil
	}
	uid, gid, err := c.Owner()
	if err != nil {
		return err
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// PrepareDirs creates Dir and SocketDir with mode perm, owned by the server's user.
func (c *Cluster) PrepareDirs(perm os.FileMode) error {
	for _, d := range []string{c.Dir, c.SocketDir} {
		if err := os.MkdirAll(d, perm); err != nil {
			return fmt.Errorf("cluster directory: %w", err)
		}
		if err := os.Chmod(d, perm); err != nil {
			return fmt.Errorf("cluster directory: %w", err)
		}
		if err := c.Chown(d); err != nil {
			return err
		}
	}
	return nil
}

// Run runs one of the server binaries (as AsUser when set) in its own
// session, with / as its working directory, and returns its combined output.
func (c *Cluster) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	bin := filepath.Join(c.BinDir, name)
	var cmd *exec.Cmd
	if c.AsUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.AsUser, "--", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Dir = "/"
	// A session of its own: the server outlives this process unless stopped,
	// and a terminal's Ctrl-C does not reach it behind the caller's back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd.CombinedOutput()
}

// Initialised reports whether the data directory holds a cluster.
func (c *Cluster) Initialised() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION"))
	return err == nil
}

// Init creates the cluster with superuser postgres, UTF8 and the C locale,
// and trust authentication unless extra initdb arguments (which come last)
// say otherwise. A data directory left half-made by an interrupted initdb is
// removed first.
func (c *Cluster) Init(ctx context.Context, extra ...string) error {
	if err := os.RemoveAll(c.DataDir); err != nil {
		return fmt.Errorf("remove half-made data directory: %w", err)
	}
	args := append([]string{"-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-D", c.DataDir}, extra...)
	if out, err := c.Run(ctx, "initdb", args...); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// LogFile is the server log that Start writes.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "server.log") }

// Start starts the server and waits until it accepts connections. settings
// are server parameters (-c key=value) in addition to the port and socket
// directory; values must not contain single quotes.
func (c *Cluster) Start(ctx context.Context, settings map[string]string) error {
	opts := []string{"-p", strconv.Itoa(c.Port), "-k", c.SocketDir}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := settings[k]
		if strings.ContainsAny(v, "'\\") || strings.ContainsAny(k, " '\"\\") {
			return fmt.Errorf("start PostgreSQL: unsupported setting %s=%q", k, v)
		}
		opts = append(opts, "-c", k+"='"+v+"'")
	}
	if out, err := c.Run(ctx, "pg_ctl", "-D", c.DataDir, "-w", "-t", "60", "-l", c.LogFile(), "-o", strings.Join(opts, " "), "start"); err != nil {
		return fmt.Errorf("start PostgreSQL in %s: %v: %s (log: %s)", c.DataDir, err, strings.TrimSpace(string(out)), c.LogFile())
	}
	return nil
}

// Stop stops the server in fast mode (open sessions are disconnected) and
// waits until it is down. Stopping a server that is not running is not an
// error.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.Running(ctx) {
		return nil
	}
	if out, err := c.Run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		if !c.Running(ctx) {
			return nil
		}
		return fmt.Errorf("stop PostgreSQL in %s: %v: %s", c.DataDir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Running reports whether a server runs on the data directory (pg_ctl status).
func (c *Cluster) Running(ctx context.Context) bool {
	if !c.Initialised() {
		return false
	}
	_, err := c.Run(ctx, "pg_ctl", "-D", c.DataDir, "status")
	return err == nil
}

// URL returns the connection URL of database db over the unix socket, as the
// postgres superuser.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", db, url.QueryEscape(c.SocketDir), c.Port)
}

// Ping reports whether the server answers on its socket within 3 seconds.
func (c *Cluster) Ping(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return false
	}
	conn.Close(ctx)
	return true
}
