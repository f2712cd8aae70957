package grpcx

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

// DefaultStreamRecheckInterval is how often the bearer token of an open stream is verified again
// (ServerConfig.StreamRecheckInterval).
const DefaultStreamRecheckInterval = 10 * time.Second

// streamGuard keeps an authenticated stream only as long as its token would still be accepted: it
// ends the stream's context at the token's exp and when a new verification of the token fails
// (revoked, signing key withdrawn), and remembers why, so that the stream ends with that status.
type streamGuard struct {
	ic     *interceptors
	raw    string
	cancel context.CancelCauseFunc

	mu  sync.Mutex
	err error // the failure that ended the stream
}

type guardKey struct{}

// guardStream runs a non-public stream's handler (run) under a streamGuard. It returns the guard's
// failure when the guard ended the stream, and the handler's result otherwise.
func (ic *interceptors) guardStream(ctx context.Context, run func(context.Context) error) error {
	raw, err := bearerToken(ctx)
	if err != nil {
		return err
	}
	g := &streamGuard{ic: ic, raw: raw}
	claims, err := g.verify(ctx) // answered by the verifier's cache of verified tokens
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g.cancel = cancel
	ctx = context.WithValue(ctx, guardKey{}, g)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { g.watch(ctx, claims.Expiry, stop) })
	err = run(ctx)
	close(stop)
	wg.Wait()
	if failure := g.failure(); failure != nil {
		return failure
	}
	return err
}

// watch ends the stream at exp (if set) and rechecks the token every interval until stop or ctx ends.
func (g *streamGuard) watch(ctx context.Context, exp time.Time, stop <-chan struct{}) {
	var expired <-chan time.Time
	if !exp.IsZero() {
		t := time.NewTimer(time.Until(exp))
		defer t.Stop()
		expired = t.C
	}
	tick := time.NewTicker(g.ic.streamRecheck)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-expired:
			g.fail(errs.Unauthenticated(authn.ReasonTokenExpired,
				"access token has expired; open the stream again with a new token"))
			return
		case <-tick.C:
			if g.recheck(ctx) != nil {
				return
			}
		}
	}
}

// verify verifies the stream's token again.
func (g *streamGuard) verify(ctx context.Context) (*authn.Claims, error) {
	if g.ic.verifier == nil {
		return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "this server cannot verify access tokens")
	}
	claims, err := g.ic.verifier.Verify(ctx, g.raw)
	if err != nil {
		var e *errs.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "access token is invalid").WithCause(err)
	}
	if claims == nil {
		return nil, errs.Unauthenticated(authn.ReasonTokenInvalid, "access token is invalid")
	}
	return claims, nil
}

// recheck verifies the token again and ends the stream when it no longer passes.
func (g *streamGuard) recheck(ctx context.Context) error {
	if err := g.failure(); err != nil {
		return err
	}
	if _, err := g.verify(ctx); err != nil {
		if ctx.Err() != nil && g.failure() == nil {
			return nil // the stream ended for another reason
		}
		g.fail(err)
		return g.failure()
	}
	return nil
}

// fail ends the stream with err, unless it has already failed.
func (g *streamGuard) fail(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.mu.Unlock()
	g.cancel(err)
}

func (g *streamGuard) failure() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// RecheckToken verifies the bearer token of the stream whose context is ctx again (expiry, revocation,
// signing key) and, when it no longer passes, ends the stream: its context is cancelled and the stream
// ends with the returned Unauthenticated error (e.g. reason TOKEN_REVOKED) whatever the handler
// returns. It returns nil when the token still passes or ctx is not that of a stream authenticated by
// NewServer. The server rechecks every ServerConfig.StreamRecheckInterval on its own; long-lived stream
// handlers call RecheckToken as well on their heartbeats.
func RecheckToken(ctx context.Context) error {
	g, ok := ctx.Value(guardKey{}).(*streamGuard)
	if !ok || g == nil {
		return nil
	}
	return g.recheck(ctx)
}
