package sendmailcli

import (
	"fmt"
	"slices"
	"strings"
)

// Mode is what an invocation does.
type Mode int

// Modes.
const (
	// ModeEnqueue reads a message from standard input and submits it
	// (-bm, the default).
	ModeEnqueue Mode = iota
	// ModeMailq lists the queue (-bp, or invoked as mailq).
	ModeMailq
	// ModeSMTP speaks SMTP on standard input and output (-bs).
	ModeSMTP
	// ModeNewaliases is -bi, -I, or invoked as newaliases.
	ModeNewaliases
	// ModeIgnore does nothing and succeeds (-bh, -bH, -q<interval>).
	ModeIgnore
)

// Options are the parsed command line.
type Options struct {
	Mode Mode
	// Sender is the envelope sender of -f or -r; HasSender tells whether
	// one was given ("" and "<>" are the null sender).
	Sender    string
	HasSender bool
	// FullName is -F; HasFullName tells whether it was given.
	FullName    string
	HasFullName bool
	// Extract is -t: recipients from the To:, Cc: and Bcc: fields.
	Extract bool
	// IgnoreDots is -i or -oi: a line with a single "." does not end the
	// message.
	IgnoreDots bool
	// Config is -C: the configuration file.
	Config string
	// Notify is -N (DSN NOTIFY), upper case; EnvID is -V (DSN ENVID); Body
	// is -B (7BIT or 8BITMIME).
	Notify string
	EnvID  string
	Body   string
	// Verbose counts -v.
	Verbose int
	// Recipients are the operands.
	Recipients []string
	// Warnings are messages about options that were ignored.
	Warnings []string
}

// UsageError is a command line that cannot be run: exit status EX_USAGE.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usage(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// optionArgs lists the options that Postfix's sendmail accepts (its
// GETOPT_LIST "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"), true for
// those that take an argument.
var optionArgs = map[byte]bool{
	'A': true, 'B': true, 'C': true, 'F': true, 'G': false, 'I': false, 'L': true, 'N': true,
	'O': true, 'R': true, 'U': false, 'V': true, 'X': true, 'b': true, 'c': false, 'e': true,
	'f': true, 'h': true, 'i': false, 'm': false, 'n': false, 'o': true, 'p': true, 'r': true,
	'q': true, 't': false, 'v': false, 'x': false,
}

// Parse parses sendmail's command line as Postfix's sendmail does: getopt
// rules (options may be grouped, "-fuser" and "-f user" are alike, "--"
// ends the options, and the first operand ends them too), the options
// Postfix accepts and ignores accepted, anything else a UsageError. name is
// the base name the program was invoked under: "mailq" lists the queue and
// "newaliases" is -bi, unless an option says otherwise.
func Parse(name string, args []string) (*Options, error) {
	o := &Options{}
	switch name {
	case "mailq":
		o.Mode = ModeMailq
	case "newaliases":
		o.Mode = ModeNewaliases
	}
	qtime := false
	i := 0
	for i < len(args) {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		if a == "-q" {
			// Postfix: flush the queue (postqueue -f).
			return nil, usage("-q (flush the queue) is not supported: the queue manager retries deferred mail on its own")
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			takesArg, known := optionArgs[c]
			if !known {
				return nil, usage("unknown option -%c", c)
			}
			val := ""
			if takesArg {
				if j+1 < len(a) {
					val = a[j+1:]
				} else {
					i++
					if i >= len(args) {
						return nil, usage("option -%c requires an argument", c)
					}
					val = args[i]
				}
			}
			q, err := o.apply(c, val)
			if err != nil {
				return nil, err
			}
			qtime = qtime || q
			if takesArg {
				break
			}
		}
		i++
	}
	o.Recipients = args[i:]

	if qtime {
		o.Mode = ModeIgnore // -q<interval>: Postfix ignores it outside daemon mode
	}
	if o.Extract && o.Mode != ModeEnqueue {
		return nil, usage("-t can be used only in delivery mode")
	}
	if len(o.Recipients) > 0 {
		switch o.Mode {
		case ModeMailq:
			return nil, usage("display queue mode requires no recipient")
		case ModeSMTP:
			return nil, usage("stand-alone mode requires no recipient")
		case ModeNewaliases:
			return nil, usage("alias initialization mode requires no recipient")
		}
	}
	if o.Mode == ModeEnqueue && len(o.Recipients) == 0 && !o.Extract {
		return nil, usage("no recipient specified (give recipients or -t)")
	}
	return o, nil
}

// apply handles one option; q reports -q<interval>.
func (o *Options) apply(c byte, val string) (q bool, err error) {
	switch c {
	case 'A', 'L', 'O', 'R', 'e', 'h', 'p', 'G', 'U', 'c', 'm', 'x':
		// Accepted and ignored, as Postfix does.
	case 'B':
		switch strings.ToUpper(val) {
		case "7BIT", "8BITMIME":
			o.Body = strings.ToUpper(val)
		default:
			return false, usage("-B option needs 8BITMIME or 7BIT")
		}
	case 'C':
		o.Config = val
	case 'F':
		o.FullName, o.HasFullName = val, true
	case 'I':
		o.Mode = ModeNewaliases
	case 'N':
		n, ok := notifyList(val)
		if !ok {
			o.Warnings = append(o.Warnings, "bad -N option value -- ignored")
			break
		}
		o.Notify = n
	case 'V':
		if len(val) > 100 || strings.IndexFunc(val, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
			o.Warnings = append(o.Warnings, "bad -V option value -- ignored")
			break
		}
		o.EnvID = val
	case 'X':
		return false, usage("unsupported: -X%s", firstChar(val))
	case 'b':
		switch firstChar(val) {
		case "m":
			o.Mode = ModeEnqueue
		case "p":
			o.Mode = ModeMailq
		case "s":
			o.Mode = ModeSMTP
		case "i":
			o.Mode = ModeNewaliases
		case "h", "H":
			o.Mode = ModeIgnore
		case "d":
			return false, usage("-bd: run `facteur serve` to start the daemon")
		default:
			return false, usage("unsupported: -b%s", firstChar(val))
		}
	case 'f', 'r':
		o.Sender, o.HasSender = val, true
	case 'i':
		o.IgnoreDots = true
	case 'n':
		return false, usage("-n option not supported")
	case 'o':
		switch firstChar(val) {
		case "i":
			o.IgnoreDots = true
		case "A":
			if len(val) < 2 {
				return false, usage("-oA requires pathname")
			}
		}
		// -oem, -odb, -odi, -om, -o7, -o8 and the rest: ignored.
	case 'q':
		switch v := firstChar(val); {
		case v >= "0" && v <= "9":
			return true, nil
		case v == "R" || v == "I":
			return false, usage("-q%s is not supported: the queue manager retries deferred mail on its own", v)
		default:
			return false, usage("-q%s is not implemented", v)
		}
	case 't':
		o.Extract = true
	case 'v':
		o.Verbose++
	}
	return false, nil
}

func firstChar(s string) string {
	if s == "" {
		return ""
	}
	return s[:1]
}

// notifyList checks a -N value: "never", or some of "success", "failure"
// and "delay", comma-separated (RFC 3461 4.1), and returns it upper case.
func notifyList(v string) (string, bool) {
	var out []string
	for _, n := range strings.Split(v, ",") {
		n = strings.ToUpper(strings.TrimSpace(n))
		switch n {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
		default:
			return "", false
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) > 1 {
		for _, n := range out {
			if n == "NEVER" {
				return "", false
			}
		}
	}
	return strings.Join(out, ","), true
}
