package app_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/services/lifecycle/app"
)

// fakeTokens hands out tok-1, tok-2, ... each valid for ttl from the (fake) clock, and counts how
// often it is asked.
type fakeTokens struct {
	mu    sync.Mutex
	now   time.Time
	ttl   time.Duration
	calls int
	err   error
	empty bool
}

func (f *fakeTokens) Token() (*oauth2.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.calls++
	if f.empty {
		return &oauth2.Token{}, nil
	}
	return &oauth2.Token{AccessToken: "tok-" + string(rune('0'+f.calls)), TokenType: "Bearer", Expiry: f.now.Add(f.ttl)}, nil
}

func TestTemporalBearerSendsAFreshToken(t *testing.T) {
	src := &fakeTokens{now: time.Now(), ttl: time.Hour}
	// The worker's credential gives a reusing token source (authn.Credential.TokenSourceFor): a token
	// is reused until shortly before it expires, then a new one is fetched.
	h := app.TemporalBearer(oauth2.ReuseTokenSource(nil, src))

	want := func(v string) {
		t.Helper()
		got, err := h.GetHeaders(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got["authorization"] != "Bearer "+v {
			t.Fatalf("headers = %v, want only authorization: Bearer %s", got, v)
		}
	}
	want("tok-1")
	want("tok-1") // still valid: reused, not fetched again
	if src.calls != 1 {
		t.Fatalf("token fetched %d times for two calls with a valid token", src.calls)
	}

	// The token expires: the next call carries a new one.
	src.mu.Lock()
	src.ttl = -time.Minute
	src.mu.Unlock()
	h = app.TemporalBearer(oauth2.ReuseTokenSource(&oauth2.Token{AccessToken: "tok-0", Expiry: time.Now().Add(-time.Second)}, src))
	want("tok-2")
	want("tok-3") // every fetched token already expired: fetched on every call, never an old one
}

func TestTemporalBearerFailsClosed(t *testing.T) {
	tests := []struct {
		name    string
		src     *fakeTokens
		wantErr string
	}{
		{name: "token endpoint refuses", src: &fakeTokens{err: errors.New("invalid_target")}, wantErr: "invalid_target"},
		{name: "empty token", src: &fakeTokens{empty: true, now: time.Now(), ttl: time.Hour}, wantErr: "empty access token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := app.TemporalBearer(tt.src).GetHeaders(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "Temporal") {
				t.Fatalf("GetHeaders = %v, %v; want an error about the Temporal token mentioning %q", got, err, tt.wantErr)
			}
			if got != nil {
				t.Fatalf("headers %v sent with an error", got)
			}
		})
	}
}
