package oauth

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Protocol constants.
const (
	// GrantClientCredentials is the only grant type the issuer supports.
	GrantClientCredentials = "client_credentials"
	// ClientAssertionTypeJWT is the RFC 7523 client_assertion_type.
	ClientAssertionTypeJWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// FormContentType is the only accepted request body type.
	FormContentType = "application/x-www-form-urlencoded"
	// MaxBodyBytes bounds a token or introspection request body.
	MaxBodyBytes = 64 << 10
	// maxResources bounds the resource parameters of one request.
	maxResources = 10
	// maxResourceLen bounds one resource URI.
	maxResourceLen = 2048
)

// Request is the transport-independent form of an HTTP request to a token or introspection endpoint.
type Request struct {
	// ContentType is the Content-Type header.
	ContentType string
	// Authorization is the Authorization header, if any.
	Authorization string
	// Body is the request body; at most MaxBodyBytes are read.
	Body io.Reader
	// RequestID links the request across services (X-Request-Id or generated).
	RequestID string
	// RemoteAddr is the caller's address.
	RemoteAddr string
	// Method is the HTTP method (a DPoP proof's htm must match it).
	Method string
	// DPoP holds every DPoP header field of the request (RFC 9449 §4.1); more than one is refused.
	DPoP []string
}

// ReadBody reads at most MaxBodyBytes of body.
func ReadBody(body io.Reader) ([]byte, *Error) {
	if body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(body, MaxBodyBytes+1))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge) || len(b) > MaxBodyBytes:
		return nil, invalidRequest("request body is larger than %d bytes", MaxBodyBytes)
	case err != nil:
		return nil, invalidRequest("cannot read the request body")
	}
	return b, nil
}

// ParseForm parses an application/x-www-form-urlencoded body. Parameters without a value are
// dropped (RFC 6749 §3.1); a parameter may appear only once unless listed in repeatable.
func ParseForm(contentType string, body []byte, repeatable ...string) (url.Values, *Error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != FormContentType {
		return nil, invalidRequest("the request body must be %s", FormContentType)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, invalidRequest("the request body must be UTF-8")
	}
	if len(body) > MaxBodyBytes {
		return nil, invalidRequest("request body is larger than %d bytes", MaxBodyBytes)
	}
	raw, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("the request body is not a valid form")
	}
	form := make(url.Values, len(raw))
	for k, vs := range raw {
		if !utf8.ValidString(k) {
			return nil, invalidRequest("the request body is not valid UTF-8")
		}
		var kept []string
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, invalidRequest("the request body is not valid UTF-8")
			}
			if v != "" {
				kept = append(kept, v)
			}
		}
		if len(kept) == 0 {
			continue
		}
		if len(kept) > 1 && !contains(repeatable, k) {
			return nil, invalidRequest("parameter %s appears more than once", SafeDescription(k))
		}
		form[k] = kept
	}
	return form, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ClientAuth is how a request authenticates its client.
type ClientAuth struct {
	// ClientID is the client_id form parameter, if sent.
	ClientID string
	// AssertionType is client_assertion_type.
	AssertionType string
	// Assertion is client_assertion.
	Assertion string
	// HeaderScheme is the scheme of an Authorization header the client also sent ("Basic", ...).
	HeaderScheme string
}

// TokenRequest is a parsed token request.
type TokenRequest struct {
	// GrantType is grant_type.
	GrantType string
	// Client authenticates the client.
	Client ClientAuth
	// Scope is the requested scope, space-separated; empty asks for every scope of the client.
	Scope string
	// Resources are the RFC 8707 resource parameters.
	Resources []string
}

// ParseTokenRequest parses and checks the form of a token request: content type, duplicates,
// grant_type. Client authentication is not checked here.
func ParseTokenRequest(contentType string, body []byte) (*TokenRequest, *Error) {
	form, oerr := ParseForm(contentType, body, "resource")
	if oerr != nil {
		return nil, oerr
	}
	req := &TokenRequest{
		GrantType: form.Get("grant_type"),
		Client: ClientAuth{
			ClientID:      form.Get("client_id"),
			AssertionType: form.Get("client_assertion_type"),
			Assertion:     form.Get("client_assertion"),
		},
		Scope:     form.Get("scope"),
		Resources: form["resource"],
	}
	switch {
	case req.GrantType == "":
		return req, invalidRequest("missing grant_type")
	case req.GrantType != GrantClientCredentials:
		return req, newError(ErrUnsupportedGrantType, http.StatusBadRequest, "only the client_credentials grant is supported")
	case len(req.Resources) > maxResources:
		return req, newError(ErrInvalidTarget, http.StatusBadRequest, "at most %d resource parameters", maxResources)
	}
	return req, nil
}

// IntrospectionRequest is a parsed RFC 7662 introspection request.
type IntrospectionRequest struct {
	// Token is the token to introspect.
	Token string
	// TokenTypeHint is token_type_hint (informational).
	TokenTypeHint string
	// Client authenticates a client caller (private_key_jwt); empty for bearer callers.
	Client ClientAuth
}

// ParseIntrospectionRequest parses the form of an introspection request.
func ParseIntrospectionRequest(contentType string, body []byte) (*IntrospectionRequest, *Error) {
	form, oerr := ParseForm(contentType, body)
	if oerr != nil {
		return nil, oerr
	}
	return &IntrospectionRequest{
		Token:         form.Get("token"),
		TokenTypeHint: form.Get("token_type_hint"),
		Client: ClientAuth{
			ClientID:      form.Get("client_id"),
			AssertionType: form.Get("client_assertion_type"),
			Assertion:     form.Get("client_assertion"),
		},
	}, nil
}

// authScheme splits an Authorization header into its scheme and credentials.
func authScheme(header string) (scheme, credentials string) {
	header = strings.TrimSpace(header)
	if header == "" {
		return "", ""
	}
	scheme, credentials, _ = strings.Cut(header, " ")
	return scheme, strings.TrimSpace(credentials)
}
