package main

import (
	"bufio"
	"bytes"
	"encoding"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const deployDir = "../../deploy"

// TestSampleConfig loads deploy/facteur.toml.sample with the real loader
// and checks that it names every setting of Config: set, or (for settings
// that only `facteur dev` writes) shown in a comment as "# key = value".
func TestSampleConfig(t *testing.T) {
	sample := filepath.Join(deployDir, "facteur.toml.sample")
	cfg, err := loadConfig(sample)
	if err != nil {
		t.Fatalf("the sample does not load: %v", err)
	}
	if cfg.Hostname != "mx1.example.net" || cfg.SpoolDir != "/var/spool/facteur" ||
		cfg.Listen.Pickup != filepath.Join(cfg.SpoolDir, "pickup.sock") || cfg.Passwords.Scheme != "ARGON2ID" {
		t.Errorf("sample values: %+v", cfg)
	}
	var scratch Config
	md, err := toml.DecodeFile(sample, &scratch)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	keys := configKeys(reflect.TypeOf(Config{}), nil)
	if len(keys) < 20 {
		t.Fatalf("only %d settings found in Config: %v", len(keys), keys)
	}
	for _, k := range keys {
		if md.IsDefined(k...) {
			continue
		}
		dotted := strings.Join(k, ".")
		if len(k) == 1 && isTableArray(k[0]) {
			// An array of tables, shown commented: "# [[name]]".
			if !regexp.MustCompile(`(?m)^#\s*\[\[` + regexp.QuoteMeta(dotted) + `\]\]\s*$`).Match(text) {
				t.Errorf("table array %s is not in the sample (set it, or show it as \"# [[%s]]\")", dotted, dotted)
			}
			continue
		}
		re := regexp.MustCompile(`(?m)^#\s*` + regexp.QuoteMeta(dotted) + `\s*=`)
		if !re.Match(text) {
			t.Errorf("setting %s is not in the sample (set it, or show it as \"# %s = ...\")", dotted, dotted)
		}
	}
	// The commented template lines are valid TOML once uncommented.
	var uncommented bytes.Buffer
	for _, line := range strings.Split(string(text), "\n") {
		if m := regexp.MustCompile(`^#\s*([a-z_]+\.[a-z_]+\s*=.*)$`).FindStringSubmatch(line); m != nil {
			uncommented.WriteString(m[1] + "\n")
		}
	}
	var dev Config
	if md, err := toml.Decode(uncommented.String(), &dev); err != nil || len(md.Undecoded()) > 0 || dev.DevPostgres == nil {
		t.Errorf("commented settings do not decode: %v %v\n%s", err, md.Undecoded(), uncommented.String())
	}
	// The commented [[milter]] examples are valid once uncommented, and
	// show every milter setting.
	ex, md := sampleMilterExamples(t, text)
	if len(ex.Milters) != 2 {
		t.Fatalf("the [[milter]] examples decode into %d milters, want 2", len(ex.Milters))
	}
	shown := map[string]bool{}
	for _, k := range md.Keys() {
		shown[k.String()] = true
	}
	for _, k := range configKeys(reflect.TypeOf(MilterConfig{}), []string{"milter"}) {
		if !shown[strings.Join(k, ".")] {
			t.Errorf("the [[milter]] examples do not show %s", strings.Join(k, "."))
		}
	}
	if ex.Milters[0].Name != "rspamd" || ex.Milters[0].Addr == "" {
		t.Errorf("first milter example: %+v", ex.Milters[0])
	}
}

// sampleMilterExamples decodes the commented [[milter]] examples of the
// sample (text), as an operator uncommenting them would get them.
func sampleMilterExamples(t *testing.T, text []byte) (*Config, toml.MetaData) {
	t.Helper()
	var milters bytes.Buffer
	in := false
	for _, line := range strings.Split(string(text), "\n") {
		switch {
		case regexp.MustCompile(`^#\s*\[\[milter\]\]\s*$`).MatchString(line):
			in = true
			milters.WriteString("[[milter]]\n")
		case in && regexp.MustCompile(`^#\s*[a-z_]+\s*=`).MatchString(line):
			milters.WriteString(strings.TrimSpace(strings.TrimPrefix(line, "#")) + "\n")
		case line == "" || !strings.HasPrefix(line, "#"):
			in = false
		}
	}
	var ex Config
	md, err := toml.Decode(milters.String(), &ex)
	if err != nil || len(md.Undecoded()) > 0 {
		t.Fatalf("the [[milter]] examples do not decode: %v %v\n%s", err, md.Undecoded(), milters.String())
	}
	return &ex, md
}

// isTableArray reports whether the top-level setting name is an array of
// tables ([[milter]]).
func isTableArray(name string) bool {
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		if n, _, _ := strings.Cut(f.Tag.Get("toml"), ","); n == name {
			return f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct
		}
	}
	return false
}

// configKeys lists the TOML keys of a settings struct, recursively.
func configKeys(typ reflect.Type, prefix []string) [][]string {
	var out [][]string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		key := append(slices.Clip(prefix), name)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		// A type that reads itself from text (Duration) is one setting.
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
			out = append(out, configKeys(ft, key)...)
			continue
		}
		out = append(out, key)
	}
	return out
}

// unit is a parsed systemd unit file: section → key → values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "", strings.HasPrefix(line, "#"), strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) one(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// linuxCaps are the capability names of Linux (capabilities(7)).
var linuxCaps = strings.Fields(`CAP_AUDIT_CONTROL CAP_AUDIT_READ CAP_AUDIT_WRITE CAP_BLOCK_SUSPEND CAP_BPF
	CAP_CHECKPOINT_RESTORE CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_IPC_LOCK
	CAP_IPC_OWNER CAP_KILL CAP_LEASE CAP_LINUX_IMMUTABLE CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_MKNOD CAP_NET_ADMIN
	CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_RAW CAP_PERFMON CAP_SETFCAP CAP_SETGID CAP_SETPCAP CAP_SETUID
	CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_CHROOT CAP_SYS_MODULE CAP_SYS_NICE CAP_SYS_PACCT CAP_SYS_PTRACE
	CAP_SYS_RAWIO CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_SYSLOG CAP_WAKE_ALARM`)

// TestSystemdUnits checks the units' policy (capabilities per role,
// hardening, ExecStart arguments that this build's command line accepts,
// roles that exist) and has systemd-analyze verify them, with ExecStart
// pointing at a built binary (this test's).
func TestSystemdUnits(t *testing.T) {
	queueCaps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"}
	for _, tc := range []struct {
		file      string
		caps      []string
		ambient   []string
		user      string
		roles     []string // nil: every configured role
		noMigrate bool
		writable  []string
	}{
		{"facteur.service", append([]string{"CAP_NET_BIND_SERVICE"}, queueCaps...), nil, "root", nil, false,
			[]string{"/var/spool/facteur", "/var/mail", "-/home"}},
		{"facteur-mx.service", []string{"CAP_NET_BIND_SERVICE"}, []string{"CAP_NET_BIND_SERVICE"}, "facteur",
			[]string{"smtp", "submission", "submissions", "pickup"}, true, []string{"/var/spool/facteur"}},
		{"facteur-queue.service", queueCaps, nil, "root", []string{"queue"}, true,
			[]string{"/var/spool/facteur", "/var/mail", "-/home"}},
		{"facteur-admin.service", nil, nil, "facteur", []string{"admin"}, false, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			u := parseUnit(t, filepath.Join(deployDir, "systemd", tc.file))
			s := "Service"
			capsOf := func(key string) []string {
				var c []string
				for _, v := range u[s][key] {
					c = append(c, strings.Fields(v)...)
				}
				sort.Strings(c)
				return c
			}
			caps := capsOf("CapabilityBoundingSet")
			for _, c := range caps {
				if !slices.Contains(linuxCaps, c) {
					t.Errorf("unknown capability %s", c)
				}
			}
			want := slices.Sorted(slices.Values(tc.caps))
			if !slices.Equal(caps, want) {
				t.Errorf("CapabilityBoundingSet %v, want %v", caps, want)
			}
			if got := capsOf("AmbientCapabilities"); !slices.Equal(got, tc.ambient) {
				t.Errorf("AmbientCapabilities %v, want %v", got, tc.ambient)
			}
			for k, v := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
				"User": tc.user, "RestrictSUIDSGID": "yes", "SystemCallFilter": "~@privileged @resources"} {
				if k == "SystemCallFilter" {
					if tc.user == "root" {
						continue // the queue's children need @privileged calls (setuid, chown)
					}
				}
				if got := u.one(s, k); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			if got := strings.Fields(strings.Join(u[s]["ReadWritePaths"], " ")); !slices.Equal(got, tc.writable) {
				t.Errorf("ReadWritePaths %v, want %v", got, tc.writable)
			}

			// ExecStart, with the unit's Environment= applied, parses
			// with this build's commands and names known roles.
			env := map[string]string{}
			for _, e := range u[s]["Environment"] {
				k, v, _ := strings.Cut(e, "=")
				env[k] = v
			}
			args := strings.Fields(os.Expand(u.one(s, "ExecStart"), func(k string) string { return env[k] }))
			if len(args) < 2 || args[0] != "/usr/local/bin/facteur" {
				t.Fatalf("ExecStart %q", args)
			}
			root := newRoot(&app{})
			cmd, rest, err := root.Find(args[1:])
			if err != nil || cmd.Name() != "serve" {
				t.Fatalf("ExecStart %q: %v (%v)", args, err, cmd)
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Fatalf("ExecStart %q: %v", args, err)
			}
			if got, _ := root.PersistentFlags().GetString("config"); got != "/etc/facteur/facteur.toml" {
				t.Errorf("--config %q", got)
			}
			roles, _ := cmd.Flags().GetStringSlice("roles")
			if !slices.Equal(roles, tc.roles) {
				t.Errorf("roles %v, want %v", roles, tc.roles)
			}
			for _, r := range roles {
				if !slices.ContainsFunc(roleTable(), func(x role) bool { return x.name == r }) {
					t.Errorf("unknown role %q", r)
				}
			}
			if nm, _ := cmd.Flags().GetBool("no-migrate"); nm != tc.noMigrate {
				t.Errorf("--no-migrate %v, want %v", nm, tc.noMigrate)
			}
		})
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal("systemd-analyze is missing (FACTEUR_REQUIRE_PEERS=1)")
		}
		t.Skip("systemd-analyze is missing: units not verified")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	units, err := filepath.Glob(filepath.Join(deployDir, "systemd", "*.service"))
	if err != nil || len(units) != 4 {
		t.Fatalf("units: %v %v", units, err)
	}
	var rendered []string
	for _, p := range units {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, filepath.Base(p))
		if err := os.WriteFile(out, bytes.ReplaceAll(b, []byte("/usr/local/bin/facteur"), []byte(exe)), 0o644); err != nil {
			t.Fatal(err)
		}
		rendered = append(rendered, out)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, rendered...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	// Unknown keys and bad values are warnings only: any output fails.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestEquivsControlFile checks the package that makes facteur the host's
// MTA on Debian: it provides, conflicts with and replaces
// mail-transport-agent, and links sendmail, mailq and newaliases to the
// binary the units run. With equivs installed, it is built and its links
// read from the package.
func TestEquivsControlFile(t *testing.T) {
	ctl := filepath.Join(deployDir, "debian", "facteur-mta.ctl")
	b, err := os.ReadFile(ctl)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	last := ""
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "", strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, " "):
			fields[last] += "\n" + strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("bad line %q", line)
			}
			last = k
			fields[k] = strings.TrimSpace(v)
		}
	}
	for _, k := range []string{"Provides", "Conflicts", "Replaces"} {
		if fields[k] != "mail-transport-agent" {
			t.Errorf("%s: %q", k, fields[k])
		}
	}
	wantLinks := map[string]string{"/usr/sbin/sendmail": "/usr/local/bin/facteur",
		"/usr/bin/mailq": "/usr/local/bin/facteur", "/usr/bin/newaliases": "/usr/local/bin/facteur"}
	links := map[string]string{}
	for _, pair := range strings.Split(fields["Links"], "\n") {
		f := strings.Fields(pair)
		if len(f) != 2 {
			t.Fatalf("bad Links pair %q", pair)
		}
		links[f[1]] = f[0]
	}
	if !reflect.DeepEqual(links, wantLinks) {
		t.Errorf("links %v, want %v", links, wantLinks)
	}
	if _, ok := newaliasesArgs([]string{"/usr/bin/newaliases"}); !ok {
		t.Error("/usr/bin/newaliases is not dispatched to facteur newaliases")
	}

	build, err := exec.LookPath("equivs-build")
	if err != nil {
		t.Log("equivs-build is missing: the package is not built")
		return
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "facteur-mta.ctl"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(build, "facteur-mta.ctl")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("equivs-build: %v\n%s", err, out)
	}
	out, err := exec.Command("dpkg-deb", "-c", filepath.Join(dir, "facteur-mta_1.0_all.deb")).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, out)
	}
	for name := range wantLinks {
		if !strings.Contains(string(out), "."+name+" -> ") {
			t.Errorf("the package has no link %s:\n%s", name, out)
		}
	}
}
