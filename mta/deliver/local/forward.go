package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/facteur/facteur/internal/aliasesfile"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/pipe"
	"github.com/facteur/facteur/mta/envelope"
)

// readForward reads ~/.forward as the user. It returns no destinations when
// there is no usable file.
func (d *delivery) readForward(ctx context.Context, acct account, id pipe.Identity) ([]aliasesfile.Destination, *deliver.Result) {
	path := filepath.Join(acct.home, ".forward")
	rep, res := d.a.helper(ctx, id, d.log, "read", "-owner", strconv.FormatUint(uint64(acct.uid), 10), "-dir-check", "--", path)
	if res != nil {
		return nil, res
	}
	switch rep.Status {
	case readNone:
		return nil, nil
	case readUnsafe:
		d.log.Warn("local: .forward ignored", "file", path, "reason", rep.Text)
		return nil, nil
	case readOK:
	default:
		d.log.Error("local: read .forward", "file", path, "reason", rep.Text)
		r := tempError("cannot read .forward file of " + acct.name)
		return nil, &r
	}
	dests, problems := aliasesfile.ParseForward(rep.Content)
	for _, p := range problems {
		d.log.Warn("local: .forward: bad line", "file", path, "problem", p.Error())
	}
	return dests, nil
}

// forward delivers to the destinations of a user's .forward file.
func (d *delivery) forward(ctx context.Context, acct account, id pipe.Identity, domain string, dests []aliasesfile.Destination, vars cmdVars) []deliver.Result {
	var out []deliver.Result
	own := false
	for _, dst := range dests {
		switch dst.Kind {
		case aliasesfile.NoForward, aliasesfile.LocalUser:
			if dst.Value == acct.name {
				own = true
			} else {
				d.addForward(dst.Value + "@" + domain)
			}
		case aliasesfile.Address:
			if isSelf(dst.Value, acct.name, domain, d.a.opts.RecipientDelimiter) {
				own = true
			} else {
				d.addForward(dst.Value)
			}
		case aliasesfile.Command:
			out = append(out, d.command(ctx, dst.Value[1:], id, vars))
		case aliasesfile.File:
			out = append(out, d.file(ctx, dst.Value, id))
		case aliasesfile.Include:
			d.log.Warn("local: :include: is not honoured in .forward files", "dest", dst.Value)
		}
	}
	if own {
		out = append(out, d.mailbox(ctx, acct, id))
	}
	if len(out) == 0 && len(d.forwards) == 0 {
		// Nothing usable: as if there were no .forward.
		return []deliver.Result{d.mailbox(ctx, acct, id)}
	}
	return out
}

// isSelf reports whether addr names the user itself (user@domain, with or
// without an extension).
func isSelf(addr, name, domain, delim string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || !strings.EqualFold(addr[at+1:], domain) {
		return false
	}
	u, _ := address.SplitExtension(strings.ToLower(addr[:at]), delim)
	return u == name
}

func (d *delivery) addForward(addr string) {
	if !slices.Contains(d.forwards, addr) {
		d.forwards = append(d.forwards, addr)
	}
}

// include delivers to the destinations of an :include: file of an alias.
// The file is read as its owner (DefaultUser when root owns it), whose
// privileges its commands and files get.
func (d *delivery) include(ctx context.Context, path string, depth int) []deliver.Result {
	if depth > maxIncludeDepth {
		return []deliver.Result{result(deliver.Bounced, 554, envelope.Status{5, 4, 6}, ":include: files nested too deep: "+path)}
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return []deliver.Result{configError(":include: file " + path + " is not a clean absolute path")}
	}
	fi, err := os.Stat(path)
	if err != nil {
		d.log.Error("local: :include: file", "file", path, "err", err)
		return []deliver.Result{configError("cannot open :include: file " + path)}
	}
	st := fi.Sys().(*syscall.Stat_t)
	var id pipe.Identity
	if st.Uid == 0 {
		var res *deliver.Result
		if id, res = d.a.defaultIdentity(); res != nil {
			return []deliver.Result{*res}
		}
	} else {
		u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10))
		if err != nil {
			d.log.Error("local: owner of :include: file", "file", path, "uid", st.Uid, "err", err)
			return []deliver.Result{configError("owner of :include: file " + path + " is not a user")}
		}
		acct, _, err := accountOf(u)
		if err != nil {
			return []deliver.Result{configError("owner of :include: file " + path + ": " + err.Error())}
		}
		var res *deliver.Result
		if id, res = d.a.identity(acct); res != nil {
			return []deliver.Result{*res}
		}
	}
	rep, res := d.a.helper(ctx, id, d.log, "read", "-owner", strconv.FormatUint(uint64(st.Uid), 10), "--", path)
	if res != nil {
		return []deliver.Result{*res}
	}
	switch rep.Status {
	case readOK:
	case readUnsafe:
		d.log.Error("local: :include: file not trusted", "file", path, "reason", rep.Text)
		return []deliver.Result{configError(":include: file " + path + " is not trusted: " + rep.Text)}
	default:
		d.log.Error("local: read :include: file", "file", path, "status", rep.Status, "reason", rep.Text)
		return []deliver.Result{configError("cannot read :include: file " + path)}
	}
	dests, problems := aliasesfile.ParseForward(rep.Content)
	for _, p := range problems {
		d.log.Warn("local: :include: file: bad line", "file", path, "problem", p.Error())
	}
	vars := d.recipientVars(d.origAddress())
	var out []deliver.Result
	for _, dst := range dests {
		switch dst.Kind {
		case aliasesfile.LocalUser, aliasesfile.NoForward:
			d.addForward(dst.Value + "@" + d.a.opts.LocalDomain)
		case aliasesfile.Address:
			d.addForward(dst.Value)
		case aliasesfile.Command, aliasesfile.File:
			if !d.a.opts.AllowIncludeCommands {
				out = append(out, result(deliver.Bounced, 550, envelope.Status{5, 7, 1},
					fmt.Sprintf("mail to %s is restricted: :include: file %s may not name commands or files", dst.Kind, path)))
				continue
			}
			if dst.Kind == aliasesfile.Command {
				out = append(out, d.command(ctx, dst.Value[1:], id, vars))
			} else {
				out = append(out, d.file(ctx, dst.Value, id))
			}
		case aliasesfile.Include:
			out = append(out, d.include(ctx, strings.TrimPrefix(dst.Value, ":include:"), depth+1)...)
		}
	}
	return out
}

// finish re-submits the forwarded addresses and combines the results of one
// recipient: a deferral wins (and nothing is forwarded yet: the retry
// will), then a bounce (the other destinations still get their copy, as in
// Postfix, and the sender learns which one failed).
func (d *delivery) finish(ctx context.Context, results []deliver.Result) deliver.Result {
	for _, r := range results {
		if r.Status == deliver.Deferred {
			return r
		}
	}
	if len(d.forwards) > 0 {
		r := d.resubmit(ctx)
		if r.Status != deliver.Delivered {
			return r
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		return result(deliver.Bounced, 550, envelope.Status{5, 1, 1}, "<"+d.origAddress()+">: no deliverable destination")
	}
	for _, r := range results {
		if r.Status == deliver.Bounced {
			return r
		}
	}
	if len(results) == 1 {
		return results[0]
	}
	texts := make([]string, 0, len(results))
	for _, r := range results {
		texts = append(texts, r.Reply.Text)
	}
	return delivered(strings.Join(texts, "; "))
}

// resubmit queues a copy of the message for d.forwards, with Delivered-To:
// naming the recipient, through the Submitter.
func (d *delivery) resubmit(ctx context.Context) deliver.Result {
	if d.a.sub == nil {
		return configError("forwarding is not set up (no submitter)")
	}
	body, err := d.msg.Open()
	if err != nil {
		d.log.Error("local: open queued message", "err", err)
		return tempError("cannot read queued message")
	}
	defer body.Close()
	rcpt := d.rc.Address
	if strings.HasPrefix(rcpt, ":") {
		rcpt = d.origAddress()
	}
	kind := d.msg.Kind
	if kind == "mail" {
		kind = ""
	}
	env := envelope.Envelope{Sender: d.msg.Sender, BodyType: d.msg.BodyType, SMTPUTF8: d.msg.SMTPUTF8,
		DSNRet: d.msg.DSNRet, DSNEnvID: d.msg.DSNEnvID}
	for _, f := range d.forwards {
		env.Recipients = append(env.Recipients, envelope.Recipient{Address: f})
	}
	m := &cleanup.Message{Envelope: env, Kind: kind,
		Client: cleanup.Client{Protocol: "local", LocalUser: localPart(rcpt)}}
	prefix := "Delivered-To: " + pipe.SanitizeHeaderValue(rcpt) + "\r\n"
	id, err := d.a.sub.Enqueue(ctx, m, io.MultiReader(strings.NewReader(prefix), body))
	if err != nil {
		d.log.Error("local: forward", "to", strings.Join(d.forwards, ","), "err", err)
		var rep envelope.Reply
		if errors.As(err, &rep) && rep.Permanent() {
			return result(deliver.Bounced, rep.Code, rep.Enhanced, "forwarding failed: "+rep.Text)
		}
		return tempError("forwarding failed: cannot queue the copy")
	}
	d.log.Info("local: forwarded", "forward_queue_id", id, "to", strings.Join(d.forwards, ","))
	return delivered("forwarded as " + id)
}

func localPart(addr string) string {
	if at := strings.LastIndexByte(addr, '@'); at > 0 {
		return addr[:at]
	}
	return addr
}
