package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// maxTokenResponseBytes bounds a token endpoint response read by DPoPTokenSource.
const maxTokenResponseBytes = 64 << 10

// DPoPTokenSource returns a token source for DPoP-bound access tokens (RFC 9449): the
// client-credentials grant with private_key_jwt, every request carrying a DPoP proof made by prover.
// It keeps the issuer's latest DPoP-Nonce and, when the issuer answers use_dpop_nonce, retries once
// with the new nonce. Tokens have type DPoP (a Bearer answer is refused) and are reused until
// shortly before they expire. Present them with a proof per request (prover.Proof with the token);
// ctx is used for every fetch (it may carry an oauth2.HTTPClient).
func (c *Credential) DPoPTokenSource(ctx context.Context, prover *DPoPProver, scopes ...string) oauth2.TokenSource {
	return c.TokenSourceFor(ctx, TokenRequest{Scopes: scopes, DPoP: prover})
}

type dpopSource struct {
	ctx       context.Context
	cred      *Credential
	prover    *DPoPProver
	scopes    []string
	resources []string

	mu    sync.Mutex
	nonce string
}

// dpopTokenError is an RFC 6749 §5.2 error answer.
type dpopTokenError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

func (s *dpopSource) Token() (*oauth2.Token, error) {
	if s.prover == nil {
		return nil, errors.New("authn: DPoP token source has no prover")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, retry, err := s.fetch()
	if retry {
		tok, _, err = s.fetch()
	}
	return tok, err
}

// fetch makes one token request; retry reports a use_dpop_nonce answer that brought a new nonce.
func (s *dpopSource) fetch() (tok *oauth2.Token, retry bool, err error) {
	now := time.Now()
	assertion, err := s.cred.Assertion(s.cred.Issuer, now)
	if err != nil {
		return nil, false, err
	}
	proof, err := s.prover.Proof(http.MethodPost, s.cred.TokenURL, "", s.nonce, now)
	if err != nil {
		return nil, false, err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {s.cred.ClientID},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
	}
	if len(s.scopes) > 0 {
		form.Set("scope", strings.Join(s.scopes, " "))
	}
	if len(s.resources) > 0 {
		form["resource"] = s.resources
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.cred.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, false, fmt.Errorf("authn: token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(DPoPHeader, proof)
	hc := http.DefaultClient
	if c, ok := s.ctx.Value(oauth2.HTTPClient).(*http.Client); ok && c != nil {
		hc = c
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("authn: token request: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponseBytes+1))
	if err != nil {
		return nil, false, fmt.Errorf("authn: read token response: %w", err)
	}
	if len(body) > maxTokenResponseBytes {
		return nil, false, fmt.Errorf("authn: token response larger than %d bytes", maxTokenResponseBytes)
	}
	newNonce := resp.Header.Get(DPoPNonceHeader)
	if newNonce != "" && len(newNonce) <= maxDPoPNonceLen {
		s.nonce = newNonce
	}
	if resp.StatusCode != http.StatusOK {
		var te dpopTokenError
		_ = json.Unmarshal(body, &te)
		if resp.StatusCode == http.StatusBadRequest && te.Code == "use_dpop_nonce" && newNonce != "" {
			return nil, true, nil
		}
		if te.Code == "" {
			return nil, false, fmt.Errorf("authn: token endpoint answered HTTP %d", resp.StatusCode)
		}
		return nil, false, &oauth2.RetrieveError{Response: resp, Body: body, ErrorCode: te.Code, ErrorDescription: te.Description}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, false, fmt.Errorf("authn: token response has content type %q, want application/json", mt)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return nil, false, fmt.Errorf("authn: parse token response: %w", err)
	}
	switch {
	case tr.AccessToken == "":
		return nil, false, errors.New("authn: token response has no access_token")
	case !strings.EqualFold(tr.TokenType, DPoPTokenType):
		return nil, false, fmt.Errorf("authn: token endpoint issued a %q token, want DPoP", tr.TokenType)
	}
	tok = &oauth2.Token{AccessToken: tr.AccessToken, TokenType: DPoPTokenType}
	if tr.ExpiresIn > 0 {
		tok.Expiry = now.Add(time.Duration(tr.ExpiresIn) * time.Second)
	}
	return tok, false, nil
}
