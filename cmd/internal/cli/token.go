package cli

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/agentid/agentid/pkg/authn"
)

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func newTokenCmd(g *globals) *cobra.Command {
	var credFile, resource string
	var scopes []string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Get an access token with a credential file (client credentials + private_key_jwt)",
		Long: `token does what any OAuth 2.0 client library does for an agent: it signs a client assertion
with the agent's private key and asks the tenant's token endpoint for a short-lived access token.
-o table prints the raw token; -o json|yaml prints the token response and its decoded claims.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if credFile == "" {
				return errors.New("--credentials FILE is required (written by `agentctl agents register --key-out`)")
			}
			cred, err := authn.LoadCredentialFile(credFile)
			if err != nil {
				return err
			}
			assertion, err := cred.Assertion(cred.Issuer, time.Now())
			if err != nil {
				return err
			}
			params := url.Values{
				"client_assertion_type": {authn.ClientAssertionType},
				"client_assertion":      {assertion},
			}
			if resource != "" {
				params.Set("resource", resource)
			}
			cc := clientcredentials.Config{ClientID: cred.ClientID, TokenURL: cred.TokenURL, Scopes: scopes,
				EndpointParams: params, AuthStyle: oauth2.AuthStyleInParams}
			ctx, err := g.tokenContext(cmd.Context(), cred.TokenURL)
			if err != nil {
				return err
			}
			tok, err := cc.Token(ctx)
			if err != nil {
				var re *oauth2.RetrieveError
				if errors.As(err, &re) {
					return fmt.Errorf("token endpoint refused: %s: %s", re.ErrorCode, re.ErrorDescription)
				}
				return err
			}
			if g.output == "table" {
				_, err := fmt.Fprintln(g.stdout, tok.AccessToken)
				return err
			}
			claims, err := decodeClaims(tok.AccessToken)
			if err != nil {
				return err
			}
			doc := map[string]any{
				"access_token": tok.AccessToken, "token_type": tok.TokenType,
				"expiry": tok.Expiry.UTC().Format(time.RFC3339), "scope": tok.Extra("scope"), "claims": claims,
			}
			b, err := json.MarshalIndent(doc, "", "  ")
			if err != nil {
				return err
			}
			if g.output == "yaml" {
				if b, err = yaml.JSONToYAML(b); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintln(g.stdout, strings.TrimSpace(string(b)))
			return err
		},
	}
	cmd.Flags().StringVar(&credFile, "credentials", "", "credential file of the agent or service identity")
	cmd.Flags().StringSliceVar(&scopes, "scope", nil, "scopes to ask for (default: all the client may have)")
	cmd.Flags().StringVar(&resource, "resource", "", "RFC 8707 resource indicator (becomes the token audience)")
	return cmd
}

// decodeClaims shows a JWT's payload without verifying it (display only; servers verify).
func decodeClaims(raw string) (map[string]any, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("the access token is not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("decode JWT payload: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode JWT payload: %w", err)
	}
	return m, nil
}
