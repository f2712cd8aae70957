package authn_test

import (
	"context"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

// FuzzJWKSVerifierVerify feeds untrusted bearer tokens to the verifier: it must never panic, must
// answer with an errs-typed error, and may accept only tokens carrying the genuine claims.
func FuzzJWKSVerifierVerify(f *testing.F) {
	fi := newFakeIssuer(f)
	key := newES256(f, "k1")
	fi.publish("acme", key)
	valid := mint(f, key, "at+jwt", validClaims(fi, "acme"))
	f.Add(valid)
	f.Add(valid[:len(valid)-4])
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, HTTPClient: fi.srv.Client(), Now: (&clock{now: baseTime}).Now})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := v.Verify(context.Background(), raw)
		if err != nil {
			if e := errs.FromStatus(err); e.Kind != errs.KindUnauthenticated && e.Kind != errs.KindUnavailable {
				t.Fatalf("unexpected error kind %v: %v", e.Kind, err)
			}
			return
		}
		if claims.Subject != "svc-lifecycle" || claims.Tenant != "acme" || claims.ID != "jti-1" {
			t.Fatalf("accepted forged claims %+v from %q", claims, raw)
		}
	})
}

// FuzzParseCredential feeds untrusted credential files to the parser: it must never panic, and a
// credential it accepts must be able to sign.
func FuzzParseCredential(f *testing.F) {
	cred, err := authn.NewCredential("acme", "svc", "http://127.0.0.1:8080/t/acme")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := cred.MarshalFile()
	f.Add(good)
	f.Add([]byte(`{"tenant":"acme","client_id":"x","issuer":"http://x/t/acme","private_jwk":{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := authn.ParseCredential(data)
		if err != nil {
			return
		}
		if _, err := c.Assertion(c.Issuer, baseTime); err != nil {
			t.Fatalf("accepted credential cannot sign: %v", err)
		}
	})
}
