package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/smtpd"
)

// Each listener kind gets one milter client with the milters that name it,
// in order; no listeners means all three; the sample's table loads.
func TestBuildMilters(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := &Config{Milters: []MilterConfig{
		{Name: "rspamd", Addr: "inet:127.0.0.1:11332", Listeners: []string{"smtp"}, DefaultAction: "accept"},
		{Name: "opendkim", Addr: "unix:/run/opendkim/opendkim.sock", Listeners: []string{"submission", "smtp"},
			CommandTimeout: Duration{10 * time.Second}},
		{Addr: "inet:11333@localhost"},
	}}
	cfg.applyDefaults()
	m, err := buildMilters(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	for kind, n := range map[smtpd.Kind]int{smtpd.MX: 3, smtpd.Submission: 2, smtpd.Submissions: 1} {
		if c := m[kind]; c == nil || c.Len() != n {
			t.Errorf("%s: %v milters, want %d", kind, c, n)
		}
	}
	if m, err := buildMilters(&Config{}, log); err != nil || m != nil {
		t.Errorf("no milters: %v %v", m, err)
	}
	for _, bad := range []struct {
		m    MilterConfig
		want string
	}{
		{MilterConfig{Name: "x"}, "addr is required"},
		{MilterConfig{Addr: "inet:127.0.0.1:1", Listeners: []string{"pickup"}}, "listener"},
		{MilterConfig{Addr: "inet:127.0.0.1:1", DefaultAction: "ignore"}, "default action"},
		{MilterConfig{Addr: "unix:relative.sock"}, "absolute"},
	} {
		if _, err := buildMilters(&Config{Milters: []MilterConfig{bad.m}}, log); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: %v, want an error with %q", bad.m, err, bad.want)
		}
	}

	sample, err := loadConfig(filepath.Join(deployDir, "facteur.toml.sample"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sample.Milters) != 0 {
		t.Errorf("the sample runs milters %+v; they are examples, commented", sample.Milters)
	}
	text, err := os.ReadFile(filepath.Join(deployDir, "facteur.toml.sample"))
	if err != nil {
		t.Fatal(err)
	}
	ex, _ := sampleMilterExamples(t, text)
	if len(ex.Milters) != 2 || ex.Milters[0].Name != "rspamd" || ex.Milters[0].ContentTimeout.Duration != 300*time.Second {
		t.Errorf("sample milter examples %+v", ex.Milters)
	}
	if m, err := buildMilters(ex, log); err != nil || m[smtpd.MX] == nil || m[smtpd.Submission] == nil || m[smtpd.Submissions] == nil {
		t.Errorf("sample milter examples: %v %v", m, err)
	}
}
