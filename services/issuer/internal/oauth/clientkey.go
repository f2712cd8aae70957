package oauth

import "github.com/agentid/agentid/services/issuer/internal/credentials"

// assertionKeyThumbprint is the thumbprint of the client key that signed the (already verified)
// client assertion: the token's `ckt` claim, by which a rotation revokes the tokens of the key it
// removes and no others. "" when it cannot be told.
func assertionKeyThumbprint(client *credentials.Client, assertion string) string {
	a, err := ParseAssertion(assertion)
	if err != nil {
		return ""
	}
	return client.ClientKeyThumbprint(a.KeyID)
}
