package app

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/oauth2"
)

// HeadersProvider adds gRPC headers to every call of the Temporal client (the SDK's
// client.Options.HeadersProvider).
type HeadersProvider interface {
	GetHeaders(ctx context.Context) (map[string]string, error)
}

// TemporalBearer returns the Temporal client's HeadersProvider that sends "authorization: Bearer
// <token>" with a token from ts on every call to the Temporal frontend, for its JWT authorizer
// (docs/deploy.md, "Temporal"). ts should be the worker credential's token source for
// authn.TemporalAudience: it reuses a token until shortly before it expires, so every call carries a
// valid one. A token that cannot be had fails the call instead of sending none.
func TemporalBearer(ts oauth2.TokenSource) HeadersProvider {
	return temporalBearer{ts: ts}
}

type temporalBearer struct{ ts oauth2.TokenSource }

func (b temporalBearer) GetHeaders(context.Context) (map[string]string, error) {
	tok, err := b.ts.Token()
	if err != nil {
		return nil, fmt.Errorf("lifecycle: token for the Temporal frontend: %w", err)
	}
	if tok.AccessToken == "" {
		return nil, errors.New("lifecycle: token for the Temporal frontend: empty access token")
	}
	return map[string]string{"authorization": "Bearer " + tok.AccessToken}, nil
}
