package tlsx_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/tlsx"
	"github.com/agentid/agentid/pkg/tlsx/tlsxtest"
)

// serveTLS accepts connections on a loopback listener and completes the handshake of each.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return lis.Addr().String()
}

// servedName dials addr and returns the common name of the certificate the server presents.
func servedName(t *testing.T, addr string, roots *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// replace writes data to path through a temporary file and a rename, as certificate renewers do.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestTLSReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	certFile, keyFile := ca.WritePair(t, dir, "server", "first", "localhost", "127.0.0.1")
	cfg, err := tlsx.NewServerConfig(tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile,
		Reload: tlsx.ReloaderOptions{Interval: -1, Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if got := servedName(t, addr, roots); got != "first" {
		t.Fatalf("served %q, want first", got)
	}

	// Renewed: the next handshake presents the new certificate, without a restart.
	c2, k2 := ca.Issue(t, "second", "localhost", "127.0.0.1")
	replace(t, keyFile, k2)
	replace(t, certFile, c2)
	if got := servedName(t, addr, roots); got != "second" {
		t.Fatalf("after the files changed served %q, want second", got)
	}

	// A bad write (garbage, or a certificate without its key) keeps the last good pair.
	replace(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"))
	if got := servedName(t, addr, roots); got != "second" {
		t.Fatalf("after a garbage certificate served %q, want the last good (second)", got)
	}
	c3, _ := ca.Issue(t, "third", "localhost", "127.0.0.1")
	replace(t, certFile, c3)
	if got := servedName(t, addr, roots); got != "second" {
		t.Fatalf("after a certificate without its key served %q, want the last good (second)", got)
	}

	// Once the pair matches again it is served.
	c4, k4 := ca.Issue(t, "fourth", "localhost", "127.0.0.1")
	replace(t, keyFile, k4)
	replace(t, certFile, c4)
	if got := servedName(t, addr, roots); got != "fourth" {
		t.Fatalf("after a good pair served %q, want fourth", got)
	}
}

func TestServerConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	certFile, keyFile := ca.WritePair(t, dir, "server", "server", "localhost")
	_, otherKey := ca.WritePair(t, dir, "other", "other", "localhost")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name     string
		opts     tlsx.ServerOptions
		wantKind tlsx.FileKind
		wantPath string
	}{
		{"missing certificate", tlsx.ServerOptions{CertFile: missing, KeyFile: keyFile}, tlsx.CertFile, missing},
		{"missing key", tlsx.ServerOptions{CertFile: certFile, KeyFile: missing}, tlsx.KeyFile, missing},
		{"certificate not PEM", tlsx.ServerOptions{CertFile: garbage, KeyFile: keyFile}, tlsx.CertFile, garbage},
		{"key of another certificate", tlsx.ServerOptions{CertFile: certFile, KeyFile: otherKey}, tlsx.KeyFile, otherKey},
		{"missing client CA", tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: missing}, tlsx.CAFile, missing},
		{"client CA without certificate", tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: garbage}, tlsx.CAFile, garbage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlsx.NewServerConfig(tt.opts)
			var fe *tlsx.FileError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *tlsx.FileError", err)
			}
			if fe.Kind != tt.wantKind || fe.Path != tt.wantPath || !strings.Contains(err.Error(), tt.wantPath) {
				t.Fatalf("err = %v (kind %s), want kind %s naming %s", err, fe.Kind, tt.wantKind, tt.wantPath)
			}
		})
	}
}

func TestClientConfigVerifiesAgainstCA(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	certFile, keyFile := ca.WritePair(t, dir, "server", "server", "localhost", "127.0.0.1")
	srv, err := tlsx.NewServerConfig(tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, srv)

	good, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: ca.WriteCA(t, dir, "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, good)
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	_ = c.Close()

	other := tlsxtest.NewCA(t, "other CA")
	bad, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: other.WriteCA(t, dir, "other.crt")})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tls.Dial("tcp", addr, bad); err == nil {
		_ = c.Close()
		t.Fatal("a server certificate of another CA was accepted")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate error", err)
	}
}

func TestMutualTLSRequiresClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	caFile := ca.WriteCA(t, dir, "ca.crt")
	certFile, keyFile := ca.WritePair(t, dir, "server", "server", "localhost", "127.0.0.1")
	clientCert, clientKey := ca.WritePair(t, dir, "client", "client", "client")
	srv, err := tlsx.NewServerConfig(tlsx.ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	results := make(chan error, 2)
	go func() {
		for range 2 {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			results <- c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	for _, tt := range []struct {
		name    string
		opts    tlsx.ClientOptions
		wantErr bool
	}{
		{"with a client certificate", tlsx.ClientOptions{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}, false},
		{"without", tlsx.ClientOptions{CAFile: caFile}, true},
	} {
		cfg, err := tlsx.NewClientConfig(tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := tls.Dial("tcp", lis.Addr().String(), cfg); err == nil {
			_, _ = c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict arrives after the client's handshake
			_ = c.Close()
		}
		if err := <-results; (err != nil) != tt.wantErr {
			t.Fatalf("%s: server handshake error %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestLoopback(t *testing.T) {
	tests := []struct {
		in   string
		host bool // IsLoopbackAddr
		tgt  bool // IsLoopbackTarget
	}{
		{"127.0.0.1:7070", true, true},
		{"127.1.2.3:7070", true, true},
		{"[::1]:7070", true, true},
		{"localhost:7070", true, true},
		{"LOCALHOST", true, true},
		{"api.localhost:1", true, true},
		{"[::ffff:127.0.0.1]:1", true, true},
		{"0.0.0.0:7070", false, false},
		{":7070", false, false},
		{"[::]:7070", false, false},
		{"registry:7071", false, false},
		{"10.0.0.1:7071", false, false},
		{"localhost.example.com:1", false, false},
		{"dns:///127.0.0.1:7070", false, true},
		{"dns://8.8.8.8/localhost:7070", false, true},
		{"dns:///registry:7071", false, false},
		{"passthrough:///localhost", false, true},
		{"unix:///run/agentid.sock", false, true},
	}
	for _, tt := range tests {
		if got := tlsx.IsLoopbackAddr(tt.in); got != tt.host {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", tt.in, got, tt.host)
		}
		if got := tlsx.IsLoopbackTarget(tt.in); got != tt.tgt {
			t.Errorf("IsLoopbackTarget(%q) = %v, want %v", tt.in, got, tt.tgt)
		}
	}
	urls := []struct {
		in   string
		want bool
	}{
		{"http://127.0.0.1:8080", true},
		{"http://localhost:8080/t/default", true},
		{"http://[::1]/", true},
		{"http://issuer:8080", false},
		{"http://127.0.0.1.example.com", false},
		{"/relative", false},
	}
	for _, tt := range urls {
		if got := tlsx.IsLoopbackURL(tt.in); got != tt.want {
			t.Errorf("IsLoopbackURL(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
