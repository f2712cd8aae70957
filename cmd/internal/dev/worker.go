package dev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// maxWorkerClientSuffix bounds the client ids tried for the lifecycle worker (lifecycle-worker-2 ...).
const maxWorkerClientSuffix = 100

// workerClients is what bootstrapping the lifecycle worker needs of the issuer.
type workerClients interface {
	EnsureClient(ctx context.Context, tenant string, c *issuerv1.Client) error
	DisableClient(ctx context.Context, tenant, clientID, reason string) error
}

// ensureLifecycleWorker registers the lifecycle worker's client in the system tenant with the
// lifecycle-worker role only and returns the credential the worker calls with. When the client of
// cred exists with other roles or keys (a data dir of an older version, whose worker was a
// platform-admin) or is disabled, the worker moves to the next free client id (lifecycle-worker-2,
// -3, ...) with a fresh key, written to path in place of cred, and the old client is disabled, so
// that whatever it held (platform-admin) stops working; both steps are logged as warnings.
func ensureLifecycleWorker(ctx context.Context, issuer workerClients, path string, cred *authn.Credential, log *slog.Logger) (*authn.Credential, error) {
	err := registerWorker(ctx, issuer, cred)
	if err == nil || !stale(err) {
		return cred, err
	}
	old := cred.ClientID
	log.Warn("the lifecycle worker's client is registered with other roles or keys (an older agentid dev made it a platform-admin) or is disabled: moving the worker to a new client id and disabling the old one",
		"client_id", old, "cause", err.Error())
	for n := 2; n <= maxWorkerClientSuffix; n++ {
		id := fmt.Sprintf("%s-%d", LifecycleClientID, n)
		if id == old {
			continue
		}
		next, err := authn.NewCredential(authn.SystemTenant, id, cred.Issuer)
		if err != nil {
			return nil, err
		}
		switch err := registerWorker(ctx, issuer, next); {
		case stale(err):
			continue // taken by an earlier attempt
		case err != nil:
			return nil, err
		}
		if err := authn.WriteCredentialFile(path, next); err != nil {
			return nil, fmt.Errorf("lifecycle worker credential %s: %w", path, err)
		}
		if err := issuer.DisableClient(ctx, authn.SystemTenant, old,
			"replaced by "+id+": registered with other roles or keys by an older version"); err != nil {
			return nil, fmt.Errorf("disable the old lifecycle worker client %s: %w", old, err)
		}
		log.Warn("the lifecycle worker now calls as a new client; the old client is disabled and its tokens revoked",
			"old_client_id", old, "client_id", id, "credential", path)
		return next, nil
	}
	return nil, fmt.Errorf("no free lifecycle worker client id up to %s-%d", LifecycleClientID, maxWorkerClientSuffix)
}

func registerWorker(ctx context.Context, issuer workerClients, cred *authn.Credential) error {
	jwks, err := cred.PublicJWKS()
	if err != nil {
		return err
	}
	return issuer.EnsureClient(ctx, authn.SystemTenant, &issuerv1.Client{
		ClientId: cred.ClientID, PublicJwks: string(jwks),
		Roles: []string{string(authn.RoleLifecycleWorker)}, TokenTtlSeconds: 900,
	})
}

// stale reports whether EnsureClient refused a client id because it is registered otherwise
// (AlreadyExists), disabled or tombstoned; any other error (the store unavailable) is no reason to
// give the client up.
func stale(err error) bool {
	var e *errs.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Kind == errs.KindAlreadyExists ||
		(e.Kind == errs.KindFailedPrecondition && (e.Reason == "CLIENT_DISABLED" || e.Reason == "CLIENT_TOMBSTONED"))
}

// switchableTokenSource hands out the tokens of the source set last, so that the lifecycle worker,
// built before bootstrap, calls with the client bootstrap settles on.
type switchableTokenSource struct {
	mu sync.RWMutex
	ts oauth2.TokenSource
}

// Token returns a token of the current source.
func (s *switchableTokenSource) Token() (*oauth2.Token, error) {
	s.mu.RLock()
	ts := s.ts
	s.mu.RUnlock()
	return ts.Token()
}

func (s *switchableTokenSource) set(ts oauth2.TokenSource) {
	s.mu.Lock()
	s.ts = ts
	s.mu.Unlock()
}
