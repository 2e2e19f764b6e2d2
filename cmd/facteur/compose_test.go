package main

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeEnv is what an operator sets before `docker compose up`.
var composeEnv = map[string]string{
	"FACTEUR_DB_PASSWORD": "0123456789abcdef",
	"FACTEUR_HOSTNAME":    "mx.example.org",
}

func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "compose.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: path, Content: b}},
		Environment: env,
	}, func(o *loader.Options) {
		o.SetProjectName("facteur", true)
		o.ResolvePaths = true
	})
}

func TestComposeFileRunsFacteurWithPostgreSQL(t *testing.T) {
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	pg, err := p.GetService("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pg.Image, "postgres:16") {
		t.Errorf("postgres image = %q, want PostgreSQL 16", pg.Image)
	}
	hc := pg.HealthCheck
	if hc == nil || hc.Disable || len(hc.Test) < 2 || !slices.ContainsFunc(hc.Test, func(s string) bool { return strings.Contains(s, "pg_isready") }) {
		t.Fatalf("postgres health check = %+v, want pg_isready", hc)
	}
	if hc.Interval == nil || hc.Retries == nil || *hc.Retries == 0 {
		t.Errorf("postgres health check has no interval or retries: %+v", hc)
	}
	if len(pg.Ports) != 0 {
		t.Errorf("PostgreSQL is published on the host: %+v", pg.Ports)
	}
	if pg.Environment["POSTGRES_PASSWORD"] == nil || *pg.Environment["POSTGRES_PASSWORD"] != composeEnv["FACTEUR_DB_PASSWORD"] {
		t.Errorf("POSTGRES_PASSWORD does not come from FACTEUR_DB_PASSWORD")
	}

	f, err := p.GetService("facteur")
	if err != nil {
		t.Fatal(err)
	}
	if f.Build == nil || f.Build.Dockerfile != "Dockerfile" || f.Build.Context != p.WorkingDir {
		t.Errorf("facteur build = %+v, want the repository's Dockerfile", f.Build)
	}
	if !slices.Equal(f.Command, types.ShellCommand{"serve"}) {
		t.Errorf("facteur command = %q, want serve (every configured role)", f.Command)
	}
	if dep, ok := f.DependsOn["postgres"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("facteur does not wait for a healthy postgres: %+v", f.DependsOn)
	}

	mounts := map[string]string{} // target -> named volume
	for _, v := range f.Volumes {
		if v.Type == types.VolumeTypeVolume {
			mounts[v.Target] = v.Source
		}
	}
	for _, target := range []string{"/var/spool/facteur", "/var/mail/vhosts"} {
		name := mounts[target]
		if name == "" {
			t.Errorf("no named volume on %s: %+v", target, f.Volumes)
			continue
		}
		if _, ok := p.Volumes[name]; !ok {
			t.Errorf("volume %s is not declared at the top level", name)
		}
	}

	// The mounted configuration loads with facteur's own loader (unknown keys
	// fail) and agrees with the rest of the file.
	var content string
	for _, c := range f.Configs {
		if c.Target == "/etc/facteur/facteur.toml" {
			content = p.Configs[c.Source].Content
		}
	}
	if content == "" {
		t.Fatalf("no configuration mounted at /etc/facteur/facteur.toml: %+v", f.Configs)
	}
	path := filepath.Join(t.TempDir(), "facteur.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("compose's facteur.toml: %v", err)
	}
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if u.Hostname() != "postgres" || u.Path != "/"+*pg.Environment["POSTGRES_DB"] ||
		u.User.Username() != *pg.Environment["POSTGRES_USER"] || pw != composeEnv["FACTEUR_DB_PASSWORD"] {
		t.Errorf("database_url %q does not match the postgres service", u.Redacted())
	}
	if cfg.Hostname != composeEnv["FACTEUR_HOSTNAME"] {
		t.Errorf("hostname = %q", cfg.Hostname)
	}
	if mounts[cfg.SpoolDir] == "" || mounts[cfg.MailRoot] == "" {
		t.Errorf("spool_dir %s or mail_root %s is not on a volume", cfg.SpoolDir, cfg.MailRoot)
	}
	published := map[uint32]bool{}
	for _, port := range f.Ports {
		published[port.Target] = true
	}
	for name, addr := range map[string]string{"smtp": cfg.Listen.SMTP, "submission": cfg.Listen.Submission,
		"submissions": cfg.Listen.Submissions, "admin": cfg.Listen.Admin} {
		_, ps, err := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(ps)
		if err != nil || !published[uint32(n)] {
			t.Errorf("listen.%s = %q is not published (ports %+v)", name, addr, f.Ports)
		}
	}
	secrets := map[string]bool{}
	for _, s := range f.Secrets {
		secrets[s.Target] = true
	}
	if !secrets[cfg.TLS.CertFile] || !secrets[cfg.TLS.KeyFile] {
		t.Errorf("TLS files %s, %s are not mounted secrets: %+v", cfg.TLS.CertFile, cfg.TLS.KeyFile, f.Secrets)
	}
}

func TestComposeFileNeedsTheDatabasePassword(t *testing.T) {
	env := map[string]string{"FACTEUR_HOSTNAME": "mx.example.org"}
	if _, err := loadCompose(t, env); err == nil || !strings.Contains(err.Error(), "FACTEUR_DB_PASSWORD") {
		t.Fatalf("compose.yaml without FACTEUR_DB_PASSWORD: err = %v, want it to name the variable", err)
	}
}

// TestDockerfileBuildsAStaticNonRootImage reads the Dockerfile: a Go build
// stage of go.mod's Go version, a static binary, a non-root final stage whose
// volume mount points are those of compose.yaml.
func TestDockerfileBuildsAStaticNonRootImage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := ""
	for _, line := range strings.Split(string(gomod), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			parts := strings.Split(strings.TrimSpace(v), ".")
			goVersion = strings.Join(parts[:min(2, len(parts))], ".")
		}
	}
	var froms []string
	var user, entrypoint string
	var build []string
	var stageLines []string // lines of the final stage
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			stageLines = nil
			user = ""
		case "USER":
			user = f[1]
		case "ENTRYPOINT":
			entrypoint = line
		case "RUN":
			if strings.Contains(line, "go build") {
				build = f
			}
		}
		stageLines = append(stageLines, line)
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(froms))
	}
	if want := "golang:" + goVersion; !strings.HasPrefix(froms[0], want) {
		t.Errorf("build stage FROM %s, want %s (go.mod says go %s)", froms[0], want, goVersion)
	}
	if !slices.Contains(build, "CGO_ENABLED=0") || !slices.Contains(build, "./cmd/facteur") {
		t.Errorf("go build line %q does not build a static ./cmd/facteur", strings.Join(build, " "))
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0:") || user == "0" {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}
	if !strings.Contains(entrypoint, "facteur") {
		t.Errorf("ENTRYPOINT %q does not run facteur", entrypoint)
	}
	final := strings.Join(stageLines, "\n")
	for _, dir := range []string{"/var/spool/facteur", "/var/mail/vhosts"} {
		if !strings.Contains(final, dir) {
			t.Errorf("the final stage does not prepare the volume mount point %s", dir)
		}
	}
}
