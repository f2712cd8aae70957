package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ClientOptions say how a client verifies servers and, for mTLS, which certificate it presents.
type ClientOptions struct {
	// CAFile holds the CA certificates servers are verified against (PEM); empty uses the system roots.
	CAFile string
	// CertFile and KeyFile, if set, are the client certificate presented to servers that ask (mTLS);
	// they are reloaded when they change, like a server's.
	CertFile, KeyFile string
	// Reload tunes the reloading of the client pair.
	Reload ReloaderOptions
}

// NewClientConfig returns a client configuration (TLS 1.2 or later) that verifies the server's
// certificate chain and name against o.CAFile (or the system roots). Errors are *FileError values
// naming the file.
func NewClientConfig(o ClientOptions) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pool, err := LoadCAPool(o.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" || o.KeyFile != "" {
		r, err := NewCertReloader(o.CertFile, o.KeyFile, o.Reload)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = r.GetClientCertificate
	}
	return cfg, nil
}

// LoadCAPool reads a PEM bundle of CA certificates; a missing or unreadable file, or one without a
// certificate, is a *FileError naming it.
func LoadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Kind: CAFile, Path: path, Err: err}
	}
	certs, err := parseCertificates(b)
	if err != nil {
		return nil, &FileError{Kind: CAFile, Path: path, Err: err}
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCertificates returns every CERTIFICATE block of a PEM bundle; a bundle without one, or with a
// block that does not parse, is an error.
func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}
