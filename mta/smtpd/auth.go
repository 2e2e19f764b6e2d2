package smtpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
)

// ErrAuthFailed is returned by an Authenticator for wrong credentials, an
// unknown user or a mailbox that may not log in. Any other error means the
// check could not be made (a temporary failure, 454 4.7.0).
var ErrAuthFailed = errors.New("authentication failed")

// PasswordStore is what MailboxAuth needs from the store.
type PasswordStore interface {
	MailboxPassword(ctx context.Context, address string) (hash string, active bool, err error)
	UpgradeMailboxPassword(ctx context.Context, address, oldHash, newHash string) (bool, error)
	AppPasswordForLogin(ctx context.Context, address, name string) (store.AppPasswordLogin, error)
	TouchAppPassword(ctx context.Context, id int64, now time.Time, every time.Duration) error
}

// appTouchEvery is how often an app password's last_used_at is written at
// most.
const appTouchEvery = time.Minute

// splitAppLogin splits an app-password login "address#app" as Dovecot's
// app-password passdb does (docs/dovecot/dovecot-sql-app.conf.ext, regexp
// ^([^@]+@[^@#]+)#(.+)): the address runs to the first '#' after its '@'
// (domains never contain '#'; local parts may), the app name is the rest.
// ok is false for a plain login.
func splitAppLogin(user string) (addr, app string, ok bool) {
	at := strings.IndexByte(user, '@')
	if at <= 0 {
		return "", "", false
	}
	h := strings.IndexByte(user[at+1:], '#')
	if h <= 0 {
		return "", "", false
	}
	addr, app = user[:at+1+h], user[at+2+h:]
	if app == "" || strings.Contains(addr[at+1:], "@") {
		return "", "", false
	}
	return addr, app, true
}

// MailboxAuth checks SMTP AUTH credentials against the mailbox table with
// the Dovecot-compatible verifier: the user name is the mailbox address, the
// mailbox and its domain must be active, and a hash in an older scheme or
// weaker parameters is replaced by a fresh one after a successful login (only
// if the stored hash did not change meanwhile). As with Dovecot, the user
// name "address#app" logs in with the password of the mailbox's app password
// named app (active and unexpired), as the mailbox. Verification runs under a
// semaphore, since a strong hash costs tens of megabytes and a fraction of a
// second; throttling of failing clients happens before (Limits).
type MailboxAuth struct {
	st     PasswordStore
	hasher *passwd.Hasher
	sem    chan struct{}
	log    *slog.Logger

	dummyOnce sync.Once
	dummy     string
}

// NewMailboxAuth returns an authenticator over st; at most concurrency
// verifications run at once (0: 4).
func NewMailboxAuth(st PasswordStore, hasher *passwd.Hasher, concurrency int, log *slog.Logger) *MailboxAuth {
	if concurrency <= 0 {
		concurrency = 4
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &MailboxAuth{st: st, hasher: hasher, sem: make(chan struct{}, concurrency), log: log}
}

// Authenticate returns the canonical mailbox address that user and password
// log in as, ErrAuthFailed, or another error when the check could not be
// made.
func (a *MailboxAuth) Authenticate(ctx context.Context, user, password string) (string, error) {
	login, appName, isApp := splitAppLogin(user)
	if !isApp {
		login = user
	}
	addr, perr := address.Normalize(login)
	hash, active, err := "", false, error(nil)
	var app store.AppPasswordLogin
	switch {
	case perr != nil:
	case isApp:
		app, err = a.st.AppPasswordForLogin(ctx, addr, appName)
		hash, active = app.Hash, err == nil
	default:
		hash, active, err = a.st.MailboxPassword(ctx, addr)
	}
	switch {
	case perr != nil || errors.Is(err, store.ErrNotFound):
		// Spend the time a real check takes, so that the answer's delay
		// does not tell which users exist.
		a.dummyOnce.Do(func() { a.dummy, _ = a.hasher.Hash("facteur-no-such-user") })
		hash, active = a.dummy, false
	case err != nil:
		return "", fmt.Errorf("authenticate %s: %w", addr, err)
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("authenticate: %w", ctx.Err())
	}
	ok, upgrade, verr := a.hasher.Verify(hash, password)
	<-a.sem
	if verr != nil && hash != a.dummy {
		// A malformed or unsupported stored hash: the login fails, and the
		// operator needs to know.
		a.log.Warn("stored password hash cannot be verified", "mailbox", addr, "err", verr)
	}
	if !ok || !active {
		return "", ErrAuthFailed
	}
	if isApp {
		a.touchApp(ctx, addr, appName, app)
		return addr, nil
	}
	if upgrade {
		a.upgrade(ctx, addr, hash, password)
	}
	return addr, nil
}

// touchApp records the use of an app password, at most once a minute (the
// store's condition holds against concurrent logins too).
func (a *MailboxAuth) touchApp(ctx context.Context, addr, name string, app store.AppPasswordLogin) {
	now := time.Now()
	a.log.Info("app password login", "mailbox", addr, "app", printable(name))
	if app.LastUsedAt != nil && now.Sub(*app.LastUsedAt) < appTouchEvery {
		return
	}
	if err := a.st.TouchAppPassword(store.WithActor(ctx, "smtpd:login"), app.ID, now, appTouchEvery); err != nil {
		a.log.Warn("app password last use", "mailbox", addr, "err", err)
	}
}

func (a *MailboxAuth) upgrade(ctx context.Context, addr, old, password string) {
	nh, err := a.hasher.Hash(password)
	if err != nil {
		a.log.Warn("password hash upgrade: hash", "mailbox", addr, "err", err)
		return
	}
	changed, err := a.st.UpgradeMailboxPassword(store.WithActor(ctx, "smtpd:login"), addr, old, nh)
	if err != nil {
		a.log.Warn("password hash upgrade", "mailbox", addr, "err", err)
		return
	}
	if changed {
		a.log.Info("password hash upgraded", "mailbox", addr)
	}
}
