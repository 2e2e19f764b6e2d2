package local

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/maildir"
	"github.com/facteur/facteur/mta/envelope"
)

// maxReadFile bounds a .forward or :include: file.
const maxReadFile = 1 << 20

// Exit statuses of the helper (sysexits.h).
const (
	exUsage   = 64
	exNoPerm  = 77
	exIOErr   = 74
	exOK      = 0
	exTmpFail = 75
)

// HelperMain is the helper that the agent runs as the recipient's user
// ("facteur local-deliver MODE ..."): cmd/facteur calls it with the
// arguments after the subcommand. It prints one JSON reply on stdout and
// returns the exit status. It refuses to run as root.
//
// Modes:
//
//	read [-owner UID] [-dir-check] PATH
//	    print PATH (a .forward or :include: file) if it is a regular file
//	    owned by UID and not writable by group or others (and, with
//	    -dir-check, in a directory owned by UID or root that group and
//	    others cannot write): status "ok" with the content, "none" when it
//	    does not exist, "unsafe" with the reason, "error".
//	mbox -sender S [-owner UID] [-locks L] [-attempts N] [-delay D] [-stale D] [-dotlock-may-fail] PATH
//	    append the message on stdin to the mbox file PATH.
//	maildir -rcpt R -sender S [-queue-id ID] [-hostname H] DIR
//	    deliver the message on stdin into the Maildir DIR.
func HelperMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: local-deliver read|mbox|maildir ...")
		return exUsage
	}
	if os.Geteuid() == 0 || os.Getuid() == 0 {
		// The agent never runs it as root; refuse rather than write
		// users' files with root's rights.
		fmt.Fprintln(stderr, "local-deliver: refusing to run as root")
		return exNoPerm
	}
	var rep helperReply
	var code int
	switch args[0] {
	case "read":
		rep, code = helperRead(args[1:], stderr)
	case "mbox":
		rep, code = helperMbox(args[1:], stdin, stderr)
	case "maildir":
		rep, code = helperMaildir(args[1:], stdin, stderr)
	default:
		fmt.Fprintf(stderr, "local-deliver: unknown mode %q\n", args[0])
		return exUsage
	}
	if code != exOK {
		return code
	}
	b, err := json.Marshal(rep)
	if err == nil {
		b = append(b, '\n')
		_, err = stdout.Write(b)
	}
	if err != nil {
		fmt.Fprintf(stderr, "local-deliver: write reply: %v\n", err)
		return exIOErr
	}
	return exOK
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fl := flag.NewFlagSet("local-deliver "+name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	return fl
}

func helperRead(args []string, stderr io.Writer) (helperReply, int) {
	fl := newFlags("read", stderr)
	owner := fl.Int64("owner", -1, "uid that must own the file")
	dirCheck := fl.Bool("dir-check", false, "check the directory too")
	if err := fl.Parse(args); err != nil || fl.NArg() != 1 || !filepath.IsAbs(fl.Arg(0)) {
		fmt.Fprintln(stderr, "usage: local-deliver read [-owner UID] [-dir-check] /PATH")
		return helperReply{}, exUsage
	}
	path := fl.Arg(0)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return helperReply{Status: readNone}, exOK
	}
	if err != nil {
		return helperReply{Status: readFailed, Text: err.Error()}, exOK
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return helperReply{Status: readFailed, Text: err.Error()}, exOK
	}
	if why := unsafeFile(fi, *owner, false); why != "" {
		return helperReply{Status: readUnsafe, Text: path + " " + why}, exOK
	}
	if *dirCheck {
		dir := filepath.Dir(path)
		di, err := os.Stat(dir)
		if err != nil {
			return helperReply{Status: readFailed, Text: err.Error()}, exOK
		}
		if why := unsafeFile(di, *owner, true); why != "" {
			return helperReply{Status: readUnsafe, Text: dir + " " + why}, exOK
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxReadFile+1))
	if err != nil {
		return helperReply{Status: readFailed, Text: err.Error()}, exOK
	}
	if len(b) > maxReadFile {
		return helperReply{Status: readUnsafe, Text: fmt.Sprintf("%s is larger than %d bytes", path, maxReadFile)}, exOK
	}
	return helperReply{Status: readOK, Content: strings.ToValidUTF8(string(b), "\uFFFD")}, exOK
}

// unsafeFile says why fi may not be trusted ("" when it may): the wrong
// type, owner (root may own a directory), or writable by group or others.
func unsafeFile(fi fs.FileInfo, owner int64, dir bool) string {
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case dir && !fi.IsDir():
		return "is not a directory"
	case !dir && !fi.Mode().IsRegular():
		return "is not a regular file"
	case owner >= 0 && int64(st.Uid) != owner && !(dir && st.Uid == 0):
		return fmt.Sprintf("is owned by uid %d, not %d", st.Uid, owner)
	case fi.Mode().Perm()&0o022 != 0:
		return "is writable by group or others"
	}
	return ""
}

func helperMbox(args []string, stdin io.Reader, stderr io.Writer) (helperReply, int) {
	fl := newFlags("mbox", stderr)
	sender := fl.String("sender", DefaultNullSender, "envelope sender for the From_ line")
	owner := fl.Int64("owner", -1, "uid that must own an existing file")
	locks := fl.String("locks", LockDot+","+LockFcntl, "locks to take")
	attempts := fl.Int("attempts", DefaultLockAttempts, "lock attempts")
	delay := fl.Duration("delay", DefaultLockDelay, "between lock attempts")
	stale := fl.Duration("stale", DefaultStaleLockAge, "age of a stale dot-lock")
	mayFail := fl.Bool("dotlock-may-fail", false, "skip the dot-lock where it cannot be created")
	if err := fl.Parse(args); err != nil || fl.NArg() != 1 || !filepath.IsAbs(fl.Arg(0)) {
		fmt.Fprintln(stderr, "usage: local-deliver mbox -sender S [options] /PATH")
		return helperReply{}, exUsage
	}
	o := mboxOptions{locks: strings.Split(*locks, ","), attempts: max(*attempts, 1), delay: *delay,
		stale: *stale, owner: *owner, dotlockMayFail: *mayFail}
	return appendMbox(filepath.Clean(fl.Arg(0)), o, *sender, stdin), exOK
}

func helperMaildir(args []string, stdin io.Reader, stderr io.Writer) (helperReply, int) {
	fl := newFlags("maildir", stderr)
	rcpt := fl.String("rcpt", "", "recipient, for Delivered-To:")
	sender := fl.String("sender", "", "envelope sender, for Return-Path:")
	queueID := fl.String("queue-id", "", "queue id, for the log")
	hostname := fl.String("hostname", "", "host name in file names")
	if err := fl.Parse(args); err != nil || fl.NArg() != 1 || !filepath.IsAbs(fl.Arg(0)) || *rcpt == "" {
		fmt.Fprintln(stderr, "usage: local-deliver maildir -rcpt R -sender S /DIR")
		return helperReply{}, exUsage
	}
	// The helper runs as the user, so the whole file system is its root:
	// the Maildir agent's confinement is not what protects here, the
	// user's rights are (and a ~/Maildir symbolic link keeps working).
	md, err := maildir.New(maildir.Options{Root: "/", Hostname: *hostname})
	if err != nil {
		return helperReply{Status: deliver.Deferred.String(), Code: 451, Enhanced: envelope.Status{4, 3, 0}, Text: err.Error()}, exOK
	}
	used := false
	msg := &deliver.Message{
		QueueID: *queueID, Sender: *sender,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("queue_id", *queueID),
		Open: func() (io.ReadCloser, error) {
			if used {
				return nil, errors.New("message already read")
			}
			used = true
			return io.NopCloser(stdin), nil
		},
	}
	rel := strings.TrimPrefix(filepath.Clean(fl.Arg(0)), "/")
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	res := md.Deliver(ctx, "", msg, []deliver.Recipient{{Address: *rcpt, Mailbox: &deliver.Mailbox{Maildir: rel + "/"}}})
	r := res[0]
	return helperReply{Status: r.Status.String(), Code: r.Reply.Code, Enhanced: r.Reply.Enhanced, Text: r.Reply.Text}, exOK
}
