package oauth

import (
	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
)

// Metadata is the authorization server metadata document (RFC 8414, OpenID Connect Discovery).
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	JWKSURI                                    string   `json:"jwks_uri"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthSigningAlgs       []string `json:"introspection_endpoint_auth_signing_alg_values_supported"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	RevocationEndpointAuthSigningAlgs          []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	IDTokenSigningAlgValuesSupported           []string `json:"id_token_signing_alg_values_supported"`
	SubjectTypesSupported                      []string `json:"subject_types_supported"`
	ClaimsSupported                            []string `json:"claims_supported"`
	// DPoPSigningAlgValuesSupported lists the DPoP proof algorithms accepted (RFC 9449 §5.1).
	DPoPSigningAlgValuesSupported []string `json:"dpop_signing_alg_values_supported"`
}

// Metadata returns the metadata document of tenant.
func (s *Server) Metadata(tenant string) (*Metadata, *Error) {
	if !s.KnownTenant(tenant) {
		return nil, ErrUnknownTenant()
	}
	algs := []string{string(jose.ES256), string(jose.EdDSA)}
	return &Metadata{
		Issuer:                            s.Issuer(tenant),
		JWKSURI:                           s.JWKSURI(tenant),
		TokenEndpoint:                     s.TokenEndpoint(tenant),
		IntrospectionEndpoint:             s.IntrospectionEndpoint(tenant),
		GrantTypesSupported:               []string{GrantClientCredentials},
		ResponseTypesSupported:            []string{"token"},
		TokenEndpointAuthMethodsSupported: []string{"private_key_jwt"},
		TokenEndpointAuthSigningAlgValuesSupported: algs,
		IntrospectionEndpointAuthMethodsSupported:  []string{"private_key_jwt"},
		IntrospectionEndpointAuthSigningAlgs:       algs,
		RevocationEndpoint:                         s.RevocationEndpoint(tenant),
		RevocationEndpointAuthMethodsSupported:     []string{"private_key_jwt"},
		RevocationEndpointAuthSigningAlgs:          algs,
		IDTokenSigningAlgValuesSupported:           []string{string(jose.ES256)},
		SubjectTypesSupported:                      []string{"public"},
		ClaimsSupported: []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope",
			"tenant", "env", "agent", "roles", "cnf"},
		DPoPSigningAlgValuesSupported: authn.DPoPAlgorithms(),
	}, nil
}

// JWKS returns the public keys of tenant (every non-retired signing key).
func (s *Server) JWKS(tenant string) (*jose.JSONWebKeySet, *Error) {
	if !s.KnownTenant(tenant) {
		return nil, ErrUnknownTenant()
	}
	ks := s.creds.SigningKeys(tenant)
	set := &jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(ks))}
	for _, k := range ks {
		set.Keys = append(set.Keys, k.Public())
	}
	return set, nil
}
