package keys_test

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/issuer/internal/keys"
)

func kek(b byte) []byte { return bytes.Repeat([]byte{b}, keys.KEKSize) }

func TestGenerateRoundTripsThroughSealedJWK(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	k, priv, err := keys.Generate(created)
	if err != nil {
		t.Fatal(err)
	}
	if k.Algorithm != jose.ES256 || k.KeyID == "" || !k.CreateTime.Equal(created) {
		t.Fatalf("key = %+v", k)
	}
	pub := k.Public()
	if !pub.IsPublic() || pub.KeyID != k.KeyID || pub.Use != "sig" || pub.Algorithm != "ES256" {
		t.Fatalf("public JWK = %+v", pub)
	}
	tp, err := authn.Thumbprint(pub)
	if err != nil || tp != k.KeyID {
		t.Fatalf("kid %q, thumbprint of public key %q (%v)", k.KeyID, tp, err)
	}

	s, err := keys.NewSealer("kek-1", kek(7))
	if err != nil {
		t.Fatal(err)
	}
	aad := keys.SealAAD("acme", k.KeyID)
	sealed, err := s.Seal(priv, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, priv[:16]) || json.Valid(sealed) {
		t.Fatal("sealed key leaks the plaintext JWK")
	}
	opened, err := s.Open(sealed, aad)
	if err != nil {
		t.Fatal(err)
	}
	back, err := keys.FromPrivateJWK(opened, created)
	if err != nil {
		t.Fatal(err)
	}
	if back.KeyID != k.KeyID {
		t.Fatalf("kid after unseal %q, want %q", back.KeyID, k.KeyID)
	}

	// A token signed by the restored key verifies with the original public key.
	tok, err := back.Sign([]byte(`{"sub":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if got := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType]; got != keys.AccessTokenType {
		t.Fatalf("typ = %v, want at+jwt", got)
	}
	if jws.Signatures[0].Header.KeyID != k.KeyID {
		t.Fatalf("kid header = %q", jws.Signatures[0].Header.KeyID)
	}
	if _, err := jws.Verify(pub.Key.(*ecdsa.PublicKey)); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

func TestOpenRefusesWrongKeyOrBinding(t *testing.T) {
	s1, _ := keys.NewSealer("a", kek(1))
	s2, _ := keys.NewSealer("b", kek(2))
	sealed, err := s1.Seal([]byte("secret"), keys.SealAAD("acme", "kid1"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	tests := []struct {
		name   string
		sealer *keys.Sealer
		data   []byte
		aad    []byte
	}{
		{"other key-encryption key", s2, sealed, keys.SealAAD("acme", "kid1")},
		{"other tenant", s1, sealed, keys.SealAAD("beta", "kid1")},
		{"other kid", s1, sealed, keys.SealAAD("acme", "kid2")},
		{"tampered", s1, tampered, keys.SealAAD("acme", "kid1")},
		{"truncated", s1, sealed[:5], keys.SealAAD("acme", "kid1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.sealer.Open(tt.data, tt.aad); !errors.Is(err, keys.ErrUnseal) {
				t.Fatalf("Open = %v, want ErrUnseal", err)
			}
		})
	}
}

func TestNewSealerRequires32Bytes(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := keys.NewSealer("x", make([]byte, n)); err == nil {
			t.Errorf("NewSealer with %d bytes succeeded", n)
		}
	}
}

func TestFromPrivateJWKRejectsMismatchedKid(t *testing.T) {
	_, priv, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(priv, &m); err != nil {
		t.Fatal(err)
	}
	m["kid"] = "not-the-thumbprint"
	b, _ := json.Marshal(m)
	if _, err := keys.FromPrivateJWK(b, time.Now()); err == nil {
		t.Fatal("FromPrivateJWK accepted a kid that is not the thumbprint")
	}
	if _, err := keys.FromPrivateJWK([]byte(`{"kty":"oct","k":"AAAA"}`), time.Now()); err == nil {
		t.Fatal("FromPrivateJWK accepted a symmetric key")
	}
}
