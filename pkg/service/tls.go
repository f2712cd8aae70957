package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/tlsx"
)

// TLSFiles are the TLS flags of a process: its server certificate and key (gRPC and HTTP servers)
// and the CA its clients verify other services against.
type TLSFiles struct {
	// CertFile is --tls-cert: the server certificate chain (PEM), reloaded when it changes.
	CertFile string
	// KeyFile is --tls-key: its private key (PEM).
	KeyFile string
	// CAFile is --ca: the CA bundle (PEM) outgoing gRPC and HTTPS connections verify servers against.
	CAFile string
}

// TLSConfigs are the configurations built from TLSFiles; a nil one means plaintext (loopback only).
type TLSConfigs struct {
	// Server serves gRPC (grpcx.ServerTLS) and HTTP (RunConfig.TLS); nil without --tls-cert.
	Server *tls.Config
	// Client verifies other services; nil without --ca.
	Client *tls.Config
}

// flagOf names the flag of a TLS file.
var flagOf = map[tlsx.FileKind]string{tlsx.CertFile: "--tls-cert", tlsx.KeyFile: "--tls-key", tlsx.CAFile: "--ca"}

// LoadTLS checks and loads the TLS files: --tls-cert and --tls-key go together; a missing,
// unreadable or mismatched file is an error naming its flag and the file.
func LoadTLS(f TLSFiles, log *slog.Logger) (TLSConfigs, error) {
	var out TLSConfigs
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		return out, fmt.Errorf("--tls-cert %s needs --tls-key (the certificate's private key)", f.CertFile)
	case f.CertFile == "" && f.KeyFile != "":
		return out, fmt.Errorf("--tls-key %s needs --tls-cert (the certificate of the key)", f.KeyFile)
	}
	if f.CertFile != "" {
		cfg, err := tlsx.NewServerConfig(tlsx.ServerOptions{CertFile: f.CertFile, KeyFile: f.KeyFile,
			Reload: tlsx.ReloaderOptions{Logger: log}})
		if err != nil {
			return out, namedTLSError(err)
		}
		out.Server = cfg
	}
	if f.CAFile != "" {
		cfg, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: f.CAFile})
		if err != nil {
			return out, namedTLSError(err)
		}
		out.Client = cfg
	}
	return out, nil
}

// namedTLSError prefixes a tlsx file error with the flag of the file.
func namedTLSError(err error) error {
	var fe *tlsx.FileError
	if errors.As(err, &fe) {
		return fmt.Errorf("%s: %w", flagOf[fe.Kind], err)
	}
	return err
}

// HTTPClient returns the client for outgoing HTTPS calls (JWKS, token endpoint): it verifies servers
// against tlsConfig (nil: the system roots) and times out after 10 seconds.
func HTTPClient(tlsConfig *tls.Config) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		t.TLSClientConfig = tlsConfig.Clone()
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: t}
}

// WithHTTPClient returns ctx carrying HTTPClient(tlsConfig) as the oauth2 HTTP client, so that the
// token sources made with it (authn.Credential.TokenSource) verify the token endpoint against
// tlsConfig.
func WithHTTPClient(ctx context.Context, tlsConfig *tls.Config) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, HTTPClient(tlsConfig))
}
