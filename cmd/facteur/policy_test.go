package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/facteur/facteur/mta/smtpd"
)

func TestBuildPolicy(t *testing.T) {
	cfg := &Config{}
	cfg.applyDefaults()
	cfg.DNS.Resolver = "none"
	p, err := buildPolicy(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var d smtpd.Deps
	p.deps(&d)
	if d.DNSBL == nil || d.Greylist == nil || d.Outbound == nil || d.MsgAuth == nil || d.Policies == nil || d.Signer == nil || p.signer == nil {
		t.Errorf("defaults leave a check out: %+v", d)
	}
	if d.Messages != nil {
		t.Error("a message rate without policy.message_rate")
	}

	off := false
	cfg.Policy.Authenticate, cfg.Policy.MessageRate, cfg.Policy.UnauthorizedFrom = &off, 30, "unsigned"
	p, err = buildPolicy(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d = smtpd.Deps{}
	p.deps(&d)
	if d.MsgAuth != nil || d.Policies != nil || d.Messages == nil {
		t.Errorf("authenticate = false, message_rate = 30: %+v", d)
	}

	cfg.Policy.UnauthorizedFrom = "sign-anyway"
	if _, err := buildPolicy(cfg, nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "unauthorized_from") {
		t.Errorf("bad unauthorized_from: %v", err)
	}
}
