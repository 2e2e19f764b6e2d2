package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/facteur/facteur/internal/dovecottest"
)

// FacteurConfig describes a `facteur serve` subprocess. Empty listen
// addresses other than SMTP leave the role off.
type FacteurConfig struct {
	DatabaseURL string
	// Dir holds the spool (Dir/spool), the mail root (Dir/mail), the
	// configuration and the log; default t.TempDir().
	Dir      string
	Hostname string // default mx.example.test
	// SMTP is the MX listener (default a free port on 127.0.0.1).
	SMTP       string
	Submission string
	Metrics    string
	// TLS writes a self-signed certificate and configures it.
	TLS bool
	// Queue settings, as Go durations; "" takes the harness defaults
	// (fast retries for tests: 1 s backoff, 1 s poll, no delay notices).
	MinBackoff, MaxBackoff, PollInterval, DelayWarning, MaxLifetime string
	// Extra is appended to the configuration file as it is.
	Extra string
}

// Facteur is one facteur serve subprocess, restartable: Start, Kill
// (SIGKILL, a crash), Stop (SIGTERM, a clean stop), Start again.
type Facteur struct {
	t       testing.TB
	Cfg     FacteurConfig
	Bin     string
	Config  string // path of the configuration file
	LogPath string
	Spool   string
	Mail    string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	starts   int
	stopWdog func()
}

// NewFacteur writes the configuration of a facteur subprocess (not started).
func NewFacteur(t testing.TB, cfg FacteurConfig) *Facteur {
	t.Helper()
	bin := Binary(t)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	// As root, the Maildirs belong to vmail, which must reach the mail root.
	if err := os.Chmod(cfg.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.example.test"
	}
	if cfg.SMTP == "" {
		cfg.SMTP = FreeAddr(t)
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&cfg.MinBackoff, "1s")
	def(&cfg.MaxBackoff, "2s")
	def(&cfg.PollInterval, "1s")
	def(&cfg.DelayWarning, "-1s")
	def(&cfg.MaxLifetime, "1h")
	uid, gid := dovecottest.MailOwner(t)
	// PostgreSQL and unix sockets refuse long paths: the pickup socket
	// lives in a short directory of its own.
	sockDir, err := os.MkdirTemp("/tmp", "fh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	f := &Facteur{t: t, Cfg: cfg, Bin: bin,
		Config:  filepath.Join(cfg.Dir, "facteur.toml"),
		LogPath: filepath.Join(cfg.Dir, "facteur.log"),
		Spool:   filepath.Join(cfg.Dir, "spool"),
		Mail:    filepath.Join(cfg.Dir, "mail"),
	}
	var b strings.Builder
	fmt.Fprintf(&b, "database_url = %s\nspool_dir = %s\nmail_root = %s\nhostname = %s\nmail_owner = \"%d:%d\"\n",
		Quote(cfg.DatabaseURL), Quote(f.Spool), Quote(f.Mail), Quote(cfg.Hostname), uid, gid)
	if cfg.TLS {
		cert, key := WriteCert(t, cfg.Dir, cfg.Hostname)
		fmt.Fprintf(&b, "[tls]\ncert_file = %s\nkey_file = %s\n", Quote(cert), Quote(key))
	}
	b.WriteString("[log]\nformat = \"text\"\nlevel = \"info\"\n[passwords]\nscheme = \"ARGON2ID\"\nargon2_memory = 64\nargon2_time = 1\nargon2_threads = 1\n")
	fmt.Fprintf(&b, "[listen]\nsmtp = %s\npickup = %s\n", Quote(cfg.SMTP), Quote(filepath.Join(sockDir, "pickup.sock")))
	if cfg.Submission != "" {
		fmt.Fprintf(&b, "submission = %s\n", Quote(cfg.Submission))
	}
	if cfg.Metrics != "" {
		fmt.Fprintf(&b, "metrics = %s\n", Quote(cfg.Metrics))
	}
	fmt.Fprintf(&b, "[dns]\nresolver = \"none\"\n[queue]\nmin_backoff = %s\nmax_backoff = %s\npoll_interval = %s\ndelay_warning = %s\nmax_lifetime = %s\n",
		Quote(cfg.MinBackoff), Quote(cfg.MaxBackoff), Quote(cfg.PollInterval), Quote(cfg.DelayWarning), Quote(cfg.MaxLifetime))
	b.WriteString(cfg.Extra)
	if err := os.WriteFile(f.Config, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Kill()
		if t.Failed() {
			t.Logf("facteur log (last 150 lines of %s):\n%s", f.LogPath, f.LogTail(150))
		}
	})
	return f
}

// Quote returns s as a TOML basic string.
func Quote(s string) string { return strconv.Quote(s) }

// FreeAddr returns a 127.0.0.1 address whose port is free now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Run runs a facteur subcommand with this configuration and returns its
// combined output; it fails t if the command fails.
func (f *Facteur) Run(args ...string) string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.Bin, append([]string{"-c", f.Config}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("facteur %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Start starts `facteur serve` and waits until its SMTP listener greets.
func (f *Facteur) Start() {
	f.t.Helper()
	if err := f.StartNoWait(); err != nil {
		f.t.Fatal(err)
	}
	if err := f.WaitReady(60 * time.Second); err != nil {
		f.t.Fatalf("%v\nlog:\n%s", err, f.LogTail(60))
	}
}

// StartNoWait starts `facteur serve` without waiting for it.
func (f *Facteur) StartNoWait() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd != nil {
		return errors.New("facteur already running")
	}
	logf, err := os.OpenFile(f.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	f.starts++
	fmt.Fprintf(logf, "=== harness: start #%d at %s\n", f.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(f.Bin, "-c", f.Config, "serve")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that cleanup reaches its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start facteur: %w", err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // the exit is observed through exited
	f.cmd, f.exited = cmd, exited
	f.stopWdog = watchdog(fmt.Sprintf("kill -9 -%d", cmd.Process.Pid))
	return nil
}

// WaitReady waits until the SMTP listener answers 220, or the process exits.
func (f *Facteur) WaitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		f.mu.Lock()
		exited := f.exited
		f.mu.Unlock()
		if exited == nil {
			return errors.New("facteur is not running")
		}
		select {
		case <-exited:
			return errors.New("facteur exited before it was ready")
		default:
		}
		if c, err := net.DialTimeout("tcp", f.Cfg.SMTP, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "220 ") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("facteur not ready after %s", within)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Running reports whether the subprocess is alive.
func (f *Facteur) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd == nil {
		return false
	}
	select {
	case <-f.exited:
		return false
	default:
		return true
	}
}

// PID returns the subprocess's pid (0 when not running).
func (f *Facteur) PID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd == nil {
		return 0
	}
	return f.cmd.Process.Pid
}

// Kill sends SIGKILL to facteur (a crash) and to its process group, and
// waits until it is gone. It does nothing when facteur is not running.
func (f *Facteur) Kill() {
	f.signal(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits up to 40 s for a clean exit, then SIGKILL.
func (f *Facteur) Stop() {
	if !f.signal(syscall.SIGTERM, 40*time.Second) {
		f.t.Errorf("facteur did not stop within 40 s of SIGTERM; killed")
		f.Kill()
	}
}

func (f *Facteur) signal(sig syscall.Signal, wait time.Duration) bool {
	f.mu.Lock()
	cmd, exited, stopWdog := f.cmd, f.exited, f.stopWdog
	f.mu.Unlock()
	if cmd == nil {
		return true
	}
	defer stopWdog()
	pid := cmd.Process.Pid
	_ = syscall.Kill(pid, sig)
	ok := true
	select {
	case <-exited:
	case <-time.After(wait):
		ok = false
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
	// Children left in the group (pipe commands) go too.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	f.mu.Lock()
	f.cmd, f.exited = nil, nil
	f.mu.Unlock()
	return ok
}

// Log returns the whole log of every run so far.
func (f *Facteur) Log() string {
	b, _ := os.ReadFile(f.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the log.
func (f *Facteur) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(f.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FDs returns the number of open file descriptors of the subprocess.
func (f *Facteur) FDs() (int, error) {
	pid := f.PID()
	if pid == 0 {
		return 0, errors.New("facteur is not running")
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// Metric scrapes the metrics listener and returns the value of an
// unlabelled metric (go_goroutines).
func (f *Facteur) Metric(name string) (float64, error) {
	if f.Cfg.Metrics == "" {
		return 0, errors.New("no metrics listener configured")
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + f.Cfg.Metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}
