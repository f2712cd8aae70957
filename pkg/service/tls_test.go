package service_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/tlsx/tlsxtest"
)

func TestMissingCertFailsNamingFlag(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	certFile, keyFile := ca.WritePair(t, dir, "server", "server", "localhost")
	_, otherKey := ca.WritePair(t, dir, "other", "other", "localhost")
	caFile := ca.WriteCA(t, dir, "ca.crt")
	missing := filepath.Join(dir, "missing.pem")
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files service.TLSFiles
		want  []string // all in the error
	}{
		{"missing certificate", service.TLSFiles{CertFile: missing, KeyFile: keyFile}, []string{"--tls-cert", missing}},
		{"empty certificate", service.TLSFiles{CertFile: empty, KeyFile: keyFile}, []string{"--tls-cert", empty}},
		{"missing key", service.TLSFiles{CertFile: certFile, KeyFile: missing}, []string{"--tls-key", missing}},
		{"mismatched key", service.TLSFiles{CertFile: certFile, KeyFile: otherKey}, []string{"--tls-key", otherKey, certFile}},
		{"certificate without key", service.TLSFiles{CertFile: certFile}, []string{"--tls-cert", certFile, "--tls-key"}},
		{"key without certificate", service.TLSFiles{KeyFile: keyFile}, []string{"--tls-key", keyFile, "--tls-cert"}},
		{"missing CA", service.TLSFiles{CAFile: missing}, []string{"--ca", missing}},
		{"CA without certificate", service.TLSFiles{CAFile: empty}, []string{"--ca", empty}},
		{"all good", service.TLSFiles{CertFile: certFile, KeyFile: keyFile, CAFile: caFile}, nil},
		{"none: plaintext", service.TLSFiles{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := service.LoadTLS(tt.files, quiet)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if (got.Server != nil) != (tt.files.CertFile != "") || (got.Client != nil) != (tt.files.CAFile != "") {
					t.Fatalf("configs = %+v for %+v", got, tt.files)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to name %s", err, w)
				}
			}
		})
	}
}

// TestRunServesTLS: with RunConfig.TLS and grpcx.ServerTLS both listeners speak only TLS.
func TestRunServesTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "test CA")
	certFile, keyFile := ca.WritePair(t, dir, "server", "server", "127.0.0.1")
	cfgs, err := service.LoadTLS(service.TLSFiles{CertFile: certFile, KeyFile: keyFile, CAFile: ca.WriteCA(t, dir, "ca.crt")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: quiet}, grpcx.ServerTLS(cfgs.Server, quiet))
	addrs := make(chan [2]string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, service.RunConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", TLS: cfgs.Server,
			Server: srv, Health: grpcx.HealthServer(srv), Logger: slog.New(slog.DiscardHandler),
			OnListening: func(g, h string) { addrs <- [2]string{g, h} }})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("not listening")
	}

	client := service.HTTPClient(cfgs.Client)
	res, err := client.Get("https://" + a[1] + "/livez")
	if err != nil {
		t.Fatalf("HTTPS with the CA: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /livez = %d", res.StatusCode)
	}
	if res, err := http.Get("http://" + a[1] + "/livez"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatal("plaintext HTTP answered 200 on a TLS listener")
		}
	}
	if _, err := service.HTTPClient(&tls.Config{MinVersion: tls.VersionTLS12}).Get("https://" + a[1] + "/livez"); err == nil {
		t.Fatal("a server of an unknown CA was trusted")
	}

	conn, err := grpcx.DialTLS(a[0], cfgs.Client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), waitTimeout)
	defer ccancel()
	if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
}
