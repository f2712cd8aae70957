package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/issuer/app"
)

// TestPlatformClientsAreRegisteredAtStart covers the split-deployment bootstrap: identities given in
// the configuration get platform-admin tokens from the system tenant, and a restart registers nothing
// twice.
func TestPlatformClientsAreRegisteredAtStart(t *testing.T) {
	n := testkit.StartNATS(t)
	cred, err := authn.NewCredential(authn.SystemTenant, "ops-admin", "http://placeholder")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := cred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	configure := func(c *app.Config) {
		c.PlatformClients = []app.PlatformClient{{ClientID: "ops-admin", PublicJWKS: string(jwks), Roles: []string{"platform-admin"}}}
	}
	for round := range 2 {
		r := launchReplicaWith(t, n, "", configure)
		r.waitReady(t)
		cred.Issuer, cred.TokenURL = r.issuer(authn.SystemTenant), r.tokenURL(authn.SystemTenant)
		ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
		var tok *oauth2.Token
		var tokErr error
		for ctx.Err() == nil {
			if tok, tokErr = cred.TokenSource(ctx).Token(); tokErr == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if tokErr != nil {
			t.Fatalf("round %d: platform client token: %v", round, tokErr)
		}
		parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var claims struct {
			Roles  []string `json:"roles"`
			Tenant string   `json:"tenant"`
		}
		if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
			t.Fatal(err)
		}
		if len(claims.Roles) != 1 || claims.Roles[0] != "platform-admin" || claims.Tenant != authn.SystemTenant {
			t.Fatalf("round %d: token claims %+v, want platform-admin of system", round, claims)
		}
		evs, _, err := r.store.Load(context.Background(), authn.SystemTenant, "client", "ops-admin")
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("round %d: %d client events for ops-admin, want exactly 1", round, len(evs))
		}
	}
}

func TestPlatformClientsConfigIsValidated(t *testing.T) {
	cfg := app.Config{PublicURL: "http://127.0.0.1:8080", KEK: testKEK,
		PlatformClients: []app.PlatformClient{{ClientID: "ops-admin", PublicJWKS: `{"keys":[]}`}}}
	if err := cfg.Validate(); err == nil {
		t.Fatal("a platform client without roles was accepted")
	}
}
