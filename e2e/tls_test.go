package e2e_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/pkg/tlsx/tlsxtest"
)

// TestAgentctlOverTLS: `agentid dev --tls-cert --tls-key` serves gRPC and OAuth over TLS; agentctl
// with --ca logs in and works (the session remembers the CA), without it fails with a certificate
// error that says what to do, and the OAuth endpoints answer only over TLS with https:// issuers.
func TestAgentctlOverTLS(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	certs, dataDir := t.TempDir(), t.TempDir()
	ca := tlsxtest.NewCA(t, "agentid e2e CA")
	caFile := ca.WriteCA(t, certs, "ca.crt")
	certFile, keyFile := ca.WritePair(t, certs, "agentid", "agentid dev", "127.0.0.1", "localhost")
	p := testkit.StartDevWith(t, agentidBin, dataDir, testkit.DevOptions{Args: []string{"--tls-cert", certFile, "--tls-key", keyFile}})
	// The banner follows the ready line: wait for its last line.
	testkit.Eventually(t, 0, "the banner after the ready line", func() (bool, error) {
		return strings.Contains(p.Output(), "next: agentctl login"), fmt.Errorf("banner so far:\n%s", p.Output())
	})
	if !strings.Contains(p.Output(), "--ca "+certFile) {
		t.Errorf("the banner does not tell how to log in over TLS:\n%s", p.Output())
	}

	// With the CA: login, then a command with the remembered session (no --ca any more).
	withCA := t.TempDir()
	out, err := runCLI(t, agentctlBin, withCA, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr, "--ca", caFile)
	if err != nil || !strings.Contains(out, "logged in to "+p.GRPCAddr) {
		t.Fatalf("login with --ca: %v\n%s", err, out)
	}
	out, err = runCLI(t, agentctlBin, withCA, "-o", "json", "tenants", "list")
	if err != nil || !strings.Contains(out, "tenants/default") {
		t.Fatalf("tenants list over TLS with the saved session: %v\n%s", err, out)
	}

	// Without the CA: a certificate error, nothing saved.
	without := t.TempDir()
	_, err = runCLI(t, agentctlBin, without, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr)
	if err == nil {
		t.Fatal("login without --ca succeeded against a server whose CA it does not know")
	}
	if msg := err.Error(); !strings.Contains(msg, "certificate") || !strings.Contains(msg, "--ca") {
		t.Fatalf("login without --ca: want a certificate error naming --ca, got %v", err)
	}
	if _, err := runCLI(t, agentctlBin, without, "tenants", "list"); err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("a failed login saved a session: %v", err)
	}

	// The OAuth endpoints: TLS only, issuer identifiers in https://.
	httpAddr := strings.TrimPrefix(p.HTTPURL, "http://")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	res, err := client.Get("https://" + httpAddr + "/t/default/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("OIDC discovery over TLS: %v", err)
	}
	defer res.Body.Close()
	var meta struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(res.Body).Decode(&meta); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("OIDC discovery: status %d, %v", res.StatusCode, err)
	}
	if want := "https://" + httpAddr + "/t/default"; meta.Issuer != want || !strings.HasPrefix(meta.TokenEndpoint, "https://") {
		t.Fatalf("issuer %q, token endpoint %q; want %s and https", meta.Issuer, meta.TokenEndpoint, want)
	}
	if res, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + httpAddr + "/t/default/.well-known/openid-configuration"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatal("the OAuth endpoints answered in plaintext")
		}
	}
}
