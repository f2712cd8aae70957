package authn_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
)

func TestParsePublicJWKS(t *testing.T) {
	cred, err := authn.NewCredential("acme", "c1", "http://127.0.0.1/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(pub, &set); err != nil {
		t.Fatal(err)
	}
	k := set.Keys[0]
	twoKeys := func(a, b jose.JSONWebKey) string {
		out, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{a, b}})
		return string(out)
	}
	other := k
	other.KeyID = "other"
	private, _ := authn.ParseCredential(mustFile(t, cred))

	keys, err := authn.ParsePublicJWKS(string(pub), 1)
	if err != nil || len(keys) != 1 || keys[0].KeyID != cred.KeyID() {
		t.Fatalf("valid set: %v, %v", keys, err)
	}
	tests := []struct {
		name, raw string
		max       int
		want      string
	}{
		{"empty", "", 5, "is required"},
		{"not JSON", "{", 5, "is not a JWK Set"},
		{"too many keys", twoKeys(k, other), 1, "must hold 1 to 1 keys"},
		{"duplicate kid", twoKeys(k, k), 5, "is used twice"},
		{"private key", privateSet(t, private), 5, "private key material"},
		{"symmetric key", `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}`, 5, "private key material"},
		{"too large", `{"keys":[` + strings.Repeat(" ", authn.MaxJWKSBytes) + `]}`, 5, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := authn.ParsePublicJWKS(tt.raw, tt.max); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func mustFile(t *testing.T, c *authn.Credential) []byte {
	t.Helper()
	b, err := c.MarshalFile()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// privateSet is a JWK Set holding the credential's private key, as a careless client would register.
func privateSet(t *testing.T, c *authn.Credential) string {
	t.Helper()
	var f authn.CredentialFile
	if err := json.Unmarshal(mustFile(t, c), &f); err != nil {
		t.Fatal(err)
	}
	return `{"keys":[` + string(f.PrivateJWK) + `]}`
}
