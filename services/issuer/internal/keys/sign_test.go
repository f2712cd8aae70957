package keys_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/services/issuer/internal/keys"
)

func TestSignProducesAStandardCompactJWS(t *testing.T) {
	k, _, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"iss":"https://issuer/t/acme","sub":"c1","jti":"0192"}`)
	tok, err := k.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(hb, &h); err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h["alg"] != "ES256" || h["kid"] != k.KeyID || h["typ"] != keys.AccessTokenType {
		t.Fatalf("header = %v, want exactly alg ES256, kid and typ at+jwt", h)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature of %d bytes (%v), want R || S of 64", len(sig), err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	got, err := jws.Verify(k.Public().Key)
	if err != nil || string(got) != string(payload) {
		t.Fatalf("verify = %q, %v", got, err)
	}
	// Another key's public half does not verify it; each signature is fresh.
	other, _, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(other.Public().Key); err == nil {
		t.Fatal("verified with another key")
	}
	again, err := k.Sign(payload)
	if err != nil || again == tok {
		t.Fatalf("second signature %v equal to the first: %v", err, again == tok)
	}
}

// BenchmarkSign signs a typical access token's claims.
func BenchmarkSign(b *testing.B) {
	k, _, err := keys.Generate(time.Now())
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"iss":"http://127.0.0.1:8080/t/default","sub":"agt_01JQ","aud":["agentid-api"],"exp":1893456000,"iat":1893455400,"nbf":1893455400,"jti":"01936f3e-7a2b-7c00-8000-000000000000","client_id":"agt_01JQ","scope":"faq.read","tenant":"default","env":"dev","agent":"tenants/default/agents/agt_01JQ"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Sign(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkES256Floor is the cryptography a token request cannot avoid: one P-256 ECDSA signature
// (the access token) and one verification (the client assertion) over SHA-256, with nothing else.
func BenchmarkES256Floor(b *testing.B) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("header.payload"))
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, priv, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
}
