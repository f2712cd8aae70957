package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultReloadInterval is how often, at most, a CertReloader looks at its files.
const DefaultReloadInterval = 2 * time.Second

// CertReloader serves a certificate read from a certificate file and a key file, and reads them again
// when their modification time or size changes (looked at on a handshake, at most once per interval),
// so that a renewed certificate is served without a restart. A pair that does not load (a file half
// written, a key that does not match) is logged and the last good pair stays in use.
type CertReloader struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	loaded   filesStamp // of the pair in cert
	failed   filesStamp // of the last pair that did not load, so that it is logged once
	lastLook time.Time
}

// ReloaderOptions tune a CertReloader.
type ReloaderOptions struct {
	// Interval is the least time between two looks at the files; 0 means DefaultReloadInterval and
	// a negative interval looks on every handshake.
	Interval time.Duration
	// Logger receives reloads and failed reloads; default slog.Default().
	Logger *slog.Logger
}

// NewCertReloader loads the pair once (a missing, unreadable or mismatched file is a *FileError naming
// it) and returns a reloader that serves it.
func NewCertReloader(certFile, keyFile string, opts ReloaderOptions) (*CertReloader, error) {
	switch {
	case certFile == "":
		return nil, &FileError{Kind: CertFile, Path: `""`, Err: errors.New("no file given")}
	case keyFile == "":
		return nil, &FileError{Kind: KeyFile, Path: `""`, Err: errors.New("no file given")}
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, interval: opts.Interval, log: opts.Logger}
	if r.interval == 0 {
		r.interval = DefaultReloadInterval
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	st, err := stampFiles(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded, r.lastLook = cert, st, time.Now()
	return r, nil
}

// GetCertificate is a tls.Config.GetCertificate that serves the current pair.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate that presents the current pair (mTLS).
func (r *CertReloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// Current returns the pair in use, first reloading it if the files changed since the last look and
// the interval has passed.
func (r *CertReloader) Current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.interval > 0 && now.Sub(r.lastLook) < r.interval {
		return r.cert
	}
	r.lastLook = now
	st, err := stampFiles(r.certFile, r.keyFile)
	if err != nil {
		if st != r.failed {
			r.failed = st
			r.log.Warn("TLS certificate files unreadable; keeping the last good certificate", "cert_file", r.certFile, "key_file", r.keyFile, "error", err.Error())
		}
		return r.cert
	}
	if st == r.loaded {
		return r.cert
	}
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		if st != r.failed {
			r.failed = st
			r.log.Warn("TLS certificate files changed but do not load; keeping the last good certificate", "cert_file", r.certFile, "key_file", r.keyFile, "error", err.Error())
		}
		return r.cert
	}
	r.cert, r.loaded, r.failed = cert, st, filesStamp{}
	r.log.Info("TLS certificate reloaded", "cert_file", r.certFile, "subject", cert.Leaf.Subject.String(),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return r.cert
}

type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

type filesStamp struct{ cert, key fileStamp }

func stampFiles(certFile, keyFile string) (filesStamp, error) {
	c, cerr := stampFile(CertFile, certFile)
	k, kerr := stampFile(KeyFile, keyFile)
	return filesStamp{cert: c, key: k}, errors.Join(cerr, kerr)
}

func stampFile(kind FileKind, path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, &FileError{Kind: kind, Path: path, Err: err}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}, nil
}

// loadPair reads and checks a certificate and its key, naming the file at fault.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &FileError{Kind: CertFile, Path: certFile, Err: err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &FileError{Kind: KeyFile, Path: keyFile, Err: err}
	}
	if _, err := parseCertificates(certPEM); err != nil {
		return nil, &FileError{Kind: CertFile, Path: certFile, Err: err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{Kind: KeyFile, Path: keyFile, Err: fmt.Errorf("not the key of certificate %s: %w", certFile, err)}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, &FileError{Kind: CertFile, Path: certFile, Err: err}
		}
	}
	return &cert, nil
}

// ServerOptions say where a server's TLS files are.
type ServerOptions struct {
	// CertFile and KeyFile are the server's certificate chain and key (PEM). Required.
	CertFile, KeyFile string
	// ClientCAFile, if set, makes the server require client certificates signed by a CA in it (mTLS).
	ClientCAFile string
	// Reload tunes the reloading of the pair.
	Reload ReloaderOptions
}

// NewServerConfig returns a server configuration (TLS 1.2 or later) serving the pair of o, reloaded
// when the files change. Errors are *FileError values naming the file.
func NewServerConfig(o ServerOptions) (*tls.Config, error) {
	r, err := NewCertReloader(o.CertFile, o.KeyFile, o.Reload)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if o.ClientCAFile != "" {
		pool, err := LoadCAPool(o.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
