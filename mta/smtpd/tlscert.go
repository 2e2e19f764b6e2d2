package smtpd

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertReloader serves a certificate and key read from PEM files, and reads
// them again when either file changes (a renewed certificate is picked up
// without a restart). The files are checked at most once per CheckEvery, on a
// TLS handshake; a file that fails to load keeps the previous certificate in
// service, and the failure is logged.
type CertReloader struct {
	certFile, keyFile string
	checkEvery        time.Duration
	log               *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	lastCheck time.Time
}

// NewCertReloader loads certFile and keyFile (PEM) and returns a reloader
// that checks them for changes at most every checkEvery (0: 5 seconds).
func NewCertReloader(certFile, keyFile string, checkEvery time.Duration, log *slog.Logger) (*CertReloader, error) {
	if checkEvery <= 0 {
		checkEvery = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, checkEvery: checkEvery, log: log, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *CertReloader) load() error {
	cm, km, err := r.mtimes()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.mu.Lock()
	r.cert, r.certMod, r.keyMod = &cert, cm, km
	r.lastCheck = r.now()
	r.mu.Unlock()
	return nil
}

func (r *CertReloader) mtimes() (cert, key time.Time, err error) {
	ci, err := os.Stat(r.certFile)
	if err != nil {
		return cert, key, fmt.Errorf("certificate: %w", err)
	}
	ki, err := os.Stat(r.keyFile)
	if err != nil {
		return cert, key, fmt.Errorf("key: %w", err)
	}
	return ci.ModTime(), ki.ModTime(), nil
}

// GetCertificate is a tls.Config.GetCertificate function.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	due := r.now().Sub(r.lastCheck) >= r.checkEvery
	if due {
		r.lastCheck = r.now()
	}
	cert, cm, km := r.cert, r.certMod, r.keyMod
	r.mu.Unlock()
	if !due {
		return cert, nil
	}
	ncm, nkm, err := r.mtimes()
	if err != nil {
		r.log.Warn("tls certificate check failed, keeping the loaded one", "err", err)
		return cert, nil
	}
	if ncm.Equal(cm) && nkm.Equal(km) {
		return cert, nil
	}
	if err := r.load(); err != nil {
		r.log.Warn("tls certificate reload failed, keeping the loaded one", "err", err)
		return cert, nil
	}
	r.log.Info("tls certificate reloaded", "cert", r.certFile)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, nil
}

// TLSConfig returns a server configuration that serves the reloaded
// certificate, TLS 1.2 at least.
func (r *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}
