package authn_test

import (
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
)

func TestVerifierRefusesHTTPIssuerOutsideLoopback(t *testing.T) {
	cred, err := authn.NewCredential("acme", "files-rs", "https://issuer.example/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		base    string
		wantErr bool
	}{
		{"http://127.0.0.1:8080", false},
		{"http://localhost:8080", false},
		{"http://[::1]:8080", false},
		{"https://issuer.example", false},
		{"https://10.0.0.5:8443", false},
		{"http://issuer.example", true},
		{"http://issuer:8080", true},
		{"http://10.0.0.5:8080", true},
		{"http://0.0.0.0:8080", true},
		{"HTTP://issuer.example", true},
		{"http://127.0.0.1.example.com", true},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			_, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: tt.base})
			if (err != nil) != tt.wantErr {
				t.Fatalf("JWKS verifier: err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.base) {
				t.Fatalf("JWKS verifier: err = %v, want it to name %s", err, tt.base)
			}
			endpoint := tt.base + "/t/acme/oauth2/introspect"
			_, err = authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{Credential: cred, Endpoint: endpoint, Audience: "https://files.example"})
			if (err != nil) != tt.wantErr {
				t.Fatalf("introspection verifier: err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), endpoint) {
				t.Fatalf("introspection verifier: err = %v, want it to name %s", err, endpoint)
			}
		})
	}
}
