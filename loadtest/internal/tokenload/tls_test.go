package tokenload_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/loadtest/internal/tokenload"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/tlsx/tlsxtest"
)

func TestParseFlagsCA(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "platform CA")
	caFile := ca.WriteCA(t, dir, "ca.pem")

	plain, err := tokenload.ParseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := plain.ClientTLS(); cfg != nil || err != nil {
		t.Errorf("ClientTLS without --ca = %v, %v; want nil, nil (plaintext)", cfg, err)
	}

	c, err := tokenload.ParseFlags([]string{"--ca", caFile, "--server", "127.0.0.1:7443"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.CAFile != caFile || c.Server != "127.0.0.1:7443" {
		t.Errorf("CAFile, Server = %q, %q; want %q, 127.0.0.1:7443", c.CAFile, c.Server, caFile)
	}
	cfg, err := c.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil || cfg.RootCAs == nil || cfg.MinVersion < tls.VersionTLS12 || cfg.InsecureSkipVerify {
		t.Fatalf("ClientTLS = %+v, want a verifying TLS 1.2+ configuration with the CA as roots", cfg)
	}
	ours, _ := ca.Issue(t, "127.0.0.1", "127.0.0.1")
	theirs, _ := tlsxtest.NewCA(t, "other CA").Issue(t, "127.0.0.1", "127.0.0.1")
	if err := verify(t, cfg, ours); err != nil {
		t.Errorf("a certificate of the --ca CA does not verify: %v", err)
	}
	if err := verify(t, cfg, theirs); err == nil {
		t.Error("a certificate of another CA verifies against --ca")
	}
}

// verify checks a server certificate (PEM) for 127.0.0.1 against the roots of cfg.
func verify(t *testing.T, cfg *tls.Config, certPEM []byte) error {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block in the issued certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: "127.0.0.1"})
	return err
}

func TestParseFlagsBadCANamesTheFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	notPEM := filepath.Join(dir, "key-only.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, keyFile := tlsxtest.NewCA(t, "CA").WritePair(t, dir, "server", "127.0.0.1", "127.0.0.1")
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, key, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{filepath.Join(dir, "missing.pem"), empty, notPEM, dir} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := tokenload.ParseFlags([]string{"--ca", file}, io.Discard)
			if err == nil {
				t.Fatalf("ParseFlags(--ca %s) succeeded, want an error", file)
			}
			if !strings.Contains(err.Error(), "--ca: ") || !strings.Contains(err.Error(), file) {
				t.Errorf("error %q does not name --ca and %s", err, file)
			}
			c := tokenload.DefaultConfig()
			c.CAFile = file
			if cfg, err := c.ClientTLS(); cfg != nil || err == nil || !strings.Contains(err.Error(), file) {
				t.Errorf("ClientTLS = %v, %v; want no configuration and an error naming %s", cfg, err, file)
			}
		})
	}
}

// TestRunRefusesASchemeThatDoesNotMatchCA checks that a TLS platform without --ca, or a plaintext one
// with it, is refused before anything is sent.
func TestRunRefusesASchemeThatDoesNotMatchCA(t *testing.T) {
	caFile := tlsxtest.NewCA(t, "CA").WriteCA(t, t.TempDir(), "ca.pem")
	tests := []struct {
		name, issuer, ca, want string
	}{
		{"TLS platform without --ca", "https://127.0.0.1:1/t/system", "", "serves TLS"},
		{"plaintext platform with --ca", "http://127.0.0.1:1/t/system", caFile, "serves plaintext"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			cred, err := authn.NewCredential(authn.SystemTenant, "bootstrap-admin", tc.issuer)
			if err != nil {
				t.Fatal(err)
			}
			b, err := cred.MarshalFile()
			if err != nil {
				t.Fatal(err)
			}
			path := tokenload.AdminCredentialPath(dataDir)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := tokenload.DefaultConfig()
			cfg.DataDir, cfg.Server, cfg.CAFile = dataDir, "127.0.0.1:1", tc.ca
			_, err = tokenload.Run(context.Background(), cfg, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "--ca: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want a --ca error saying the platform %s", err, tc.want)
			}
		})
	}
}
