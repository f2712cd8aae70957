package oauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

func es256Key(t testing.TB, kid string) (*ecdsa.PrivateKey, jose.JSONWebKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: string(jose.ES256)}
}

func signJWS(t testing.TB, k *ecdsa.PrivateKey, kid, payload string) *jose.JSONWebSignature {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func compact(t testing.TB, jws *jose.JSONWebSignature) string {
	t.Helper()
	c, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAssertionParseAndVerify(t *testing.T) {
	key, jwk := es256Key(t, "k1")
	other, _ := es256Key(t, "k1")
	exp := time.Now().Add(time.Minute).Unix()
	claims := `{"iss":"c1","sub":"c1","aud":"https://issuer/t/acme","exp":` + itoa(exp) + `,"jti":"j-1"}`
	good := compact(t, signJWS(t, key, "k1", claims))
	parts := strings.Split(good, ".")
	swapped := parts[0] + "." + strings.Split(compact(t, signJWS(t, key, "k1", `{"iss":"c1","sub":"c1","jti":"j-2"}`)), ".")[1] + "." + parts[2]

	tests := []struct {
		name        string
		raw         string
		wantParse   string // error substring from ParseAssertion
		wantVerify  bool   // Verify must fail
		wantIssuer  string
		wantSubject string
	}{
		{name: "valid", raw: good, wantIssuer: "c1", wantSubject: "c1"},
		{name: "signed by another key", raw: compact(t, signJWS(t, other, "k1", claims)), wantVerify: true, wantIssuer: "c1", wantSubject: "c1"},
		{name: "payload of another assertion", raw: swapped, wantVerify: true, wantIssuer: "c1", wantSubject: "c1"},
		{name: "JSON serialization", raw: signJWS(t, key, "k1", claims).FullSerialize(), wantParse: "not a JWS"},
		{name: "claim names are case-sensitive", raw: compact(t, signJWS(t, key, "k1", `{"ISS":"c1","Sub":"c1","jti":"j"}`))},
		{name: "claims not JSON", raw: compact(t, signJWS(t, key, "k1", `not json`)), wantParse: "assertion claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := oauth.ParseAssertion(tt.raw)
			if tt.wantParse != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantParse) {
					t.Fatalf("ParseAssertion = %v, want an error with %q", err, tt.wantParse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Issuer != tt.wantIssuer || a.Subject != tt.wantSubject || a.KeyID != "k1" || a.Algorithm != jose.ES256 {
				t.Fatalf("parsed %+v", a)
			}
			vk, err := a.VerificationKey(jwk)
			if err != nil {
				t.Fatal(err)
			}
			c, err := a.Verify(vk)
			if tt.wantVerify {
				if err == nil {
					t.Fatalf("Verify accepted %s", tt.name)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Issuer != tt.wantIssuer {
				t.Fatalf("verified claims %+v", c)
			}
			if tt.name == "valid" && (c.ID != "j-1" || c.Expiry.Unix() != exp || len(c.Audience) != 1) {
				t.Fatalf("verified claims %+v", c)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// BenchmarkAssertion is the client authentication of a token request without the replay check:
// parse, pick the key, verify the ES256 signature and check the claims.
func BenchmarkAssertion(b *testing.B) {
	key, jwk := es256Key(b, "k1")
	now := time.Now()
	raw := compact(b, signJWS(b, key, "k1", `{"iss":"c1","sub":"c1","aud":"https://issuer/t/acme","exp":`+itoa(now.Add(time.Minute).Unix())+`,"jti":"j-1"}`))
	b.ReportAllocs()
	for b.Loop() {
		a, err := oauth.ParseAssertion(raw)
		if err != nil {
			b.Fatal(err)
		}
		vk, err := a.VerificationKey(jwk)
		if err != nil {
			b.Fatal(err)
		}
		c, err := a.Verify(vk)
		if err != nil {
			b.Fatal(err)
		}
		if err := oauth.CheckAssertionClaims(c, "c1", "https://issuer/t/acme", now, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
