package dev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// maxClientSuffix bounds the client ids tried for a service identity (lifecycle-worker-2 ...).
const maxClientSuffix = 100

// workerClients is what bootstrapping the platform's service identities needs of the issuer.
type workerClients interface {
	EnsureClient(ctx context.Context, tenant string, c *issuerv1.Client) error
	DisableClient(ctx context.Context, tenant, clientID, reason string) error
}

// serviceIdentity is a platform service identity `agentid dev` registers in the system tenant with
// one narrow role and nothing else.
type serviceIdentity struct {
	// name names the identity in logs and errors ("lifecycle worker").
	name string
	// clientID is its client id; a replacement client gets clientID-2, -3, ...
	clientID string
	// file is its credential's file name under <data dir>/credentials.
	file string
	// role is the only role its client holds.
	role authn.Role
}

var (
	// lifecycleWorker calls the other services from the lifecycle service's activities and sweeps.
	lifecycleWorker = serviceIdentity{name: "lifecycle worker", clientID: LifecycleClientID,
		file: "lifecycle-worker.json", role: authn.RoleLifecycleWorker}
	// registryService is what the registry asks the policy service to admit escalating updates as.
	registryService = serviceIdentity{name: "registry service", clientID: RegistryClientID,
		file: "registry-service.json", role: authn.RoleRegistryService}
)

// serviceClient is a service identity's credential in the data dir and the tokens it calls with;
// the tokens follow the client bootstrap settles on (ensure), so that components built before
// bootstrap call with it.
type serviceClient struct {
	identity serviceIdentity
	path     string
	cred     *authn.Credential
	tokens   *switchableTokenSource
	tokenCtx context.Context
}

// loadServiceClient loads the credential of id from <dataDir>/credentials, creating it on first start.
// tokenCtx carries the HTTP client the token requests use (service.WithHTTPClient).
func loadServiceClient(tokenCtx context.Context, dataDir, issuer string, id serviceIdentity) (*serviceClient, error) {
	path := filepath.Join(dataDir, "credentials", id.file)
	cred, err := loadOrCreateCredential(path, id.clientID, issuer)
	if err != nil {
		return nil, fmt.Errorf("%s credential: %w", id.name, err)
	}
	return &serviceClient{identity: id, path: path, cred: cred, tokenCtx: tokenCtx,
		tokens: &switchableTokenSource{ts: cred.TokenSource(tokenCtx)}}, nil
}

// ensure registers the client at the issuer (ensureServiceClient) and switches the tokens to the
// client it settles on.
func (s *serviceClient) ensure(ctx context.Context, issuer workerClients, log *slog.Logger) error {
	current, err := ensureServiceClient(ctx, issuer, s.identity, s.path, s.cred, log)
	if err != nil {
		return fmt.Errorf("%s client: %w", s.identity.name, err)
	}
	if current != s.cred {
		s.cred = current
		s.tokens.set(current.TokenSource(s.tokenCtx))
	}
	return nil
}

// ensureServiceClient registers the client of service identity id in the system tenant with id's
// role only and returns the credential the service calls with. A client that does not exist yet (a
// new data dir, or one of a version without this identity) is created. When the client of cred
// exists with other roles or keys (a data dir of an older version, whose lifecycle worker was a
// platform-admin) or is disabled, the identity moves to the next free client id (lifecycle-worker-2,
// -3, ...) with a fresh key, written to path in place of cred, and the old client is disabled, so
// that whatever it held (platform-admin) stops working; both steps are logged as warnings.
func ensureServiceClient(ctx context.Context, issuer workerClients, id serviceIdentity, path string, cred *authn.Credential, log *slog.Logger) (*authn.Credential, error) {
	err := registerServiceClient(ctx, issuer, id.role, cred)
	if err == nil || !stale(err) {
		return cred, err
	}
	old := cred.ClientID
	log.Warn("the "+id.name+"'s client is registered with other roles or keys (an older agentid dev made the lifecycle worker a platform-admin) or is disabled: moving it to a new client id and disabling the old one",
		"client_id", old, "role", string(id.role), "cause", err.Error())
	for n := 2; n <= maxClientSuffix; n++ {
		next := fmt.Sprintf("%s-%d", id.clientID, n)
		if next == old {
			continue
		}
		nextCred, err := authn.NewCredential(authn.SystemTenant, next, cred.Issuer)
		if err != nil {
			return nil, err
		}
		switch err := registerServiceClient(ctx, issuer, id.role, nextCred); {
		case stale(err):
			continue // taken by an earlier attempt
		case err != nil:
			return nil, err
		}
		if err := authn.WriteCredentialFile(path, nextCred); err != nil {
			return nil, fmt.Errorf("%s credential %s: %w", id.name, path, err)
		}
		if err := issuer.DisableClient(ctx, authn.SystemTenant, old,
			"replaced by "+next+": registered with other roles or keys by an older version"); err != nil {
			return nil, fmt.Errorf("disable the old %s client %s: %w", id.name, old, err)
		}
		log.Warn("the "+id.name+" now calls as a new client; the old client is disabled and its tokens revoked",
			"old_client_id", old, "client_id", next, "credential", path)
		return nextCred, nil
	}
	return nil, fmt.Errorf("no free %s client id up to %s-%d", id.name, id.clientID, maxClientSuffix)
}

// registerServiceClient ensures cred's client in the system tenant with role only.
func registerServiceClient(ctx context.Context, issuer workerClients, role authn.Role, cred *authn.Credential) error {
	jwks, err := cred.PublicJWKS()
	if err != nil {
		return err
	}
	return issuer.EnsureClient(ctx, authn.SystemTenant, &issuerv1.Client{
		ClientId: cred.ClientID, PublicJwks: string(jwks),
		Roles: []string{string(role)}, TokenTtlSeconds: 900,
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

// switchableTokenSource hands out the tokens of the source set last, so that a service identity's
// users, built before bootstrap, call with the client bootstrap settles on.
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
