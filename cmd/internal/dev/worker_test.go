package dev

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// fakeClients keeps clients of the system tenant as the issuer's EnsureClient and DisableClient do:
// a registration differing in keys or roles is AlreadyExists, a disabled client FailedPrecondition.
type fakeClients struct {
	mu       sync.Mutex
	clients  map[string]*issuerv1.Client
	disabled map[string]bool
	failNext error // returned once by EnsureClient
}

func (f *fakeClients) EnsureClient(_ context.Context, tenant string, c *issuerv1.Client) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	if tenant != authn.SystemTenant {
		return fmt.Errorf("tenant %s", tenant)
	}
	cur, ok := f.clients[c.GetClientId()]
	switch {
	case !ok:
		f.clients[c.GetClientId()] = c
		return nil
	case cur.GetPublicJwks() != c.GetPublicJwks() || !slices.Equal(cur.GetRoles(), c.GetRoles()):
		return errs.AlreadyExists("CLIENT_ALREADY_EXISTS", "client exists with a different registration")
	case f.disabled[c.GetClientId()]:
		return errs.FailedPrecondition("CLIENT_DISABLED", "client is disabled")
	}
	return nil
}

func (f *fakeClients) DisableClient(_ context.Context, tenant, clientID, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.clients[clientID]; !ok || tenant != authn.SystemTenant {
		return errs.NotFound("CLIENT_NOT_FOUND", "client not found")
	}
	f.disabled[clientID] = true
	return nil
}

// active returns the active clients and their roles.
func (f *fakeClients) active() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for id, c := range f.clients {
		if !f.disabled[id] {
			out[id] = c.GetRoles()
		}
	}
	return out
}

func TestEnsureLifecycleWorker(t *testing.T) {
	const issuer = "http://127.0.0.1:8080/t/system"
	platformAdmin := func(t *testing.T, cred *authn.Credential) *issuerv1.Client {
		jwks, err := cred.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		return &issuerv1.Client{ClientId: cred.ClientID, PublicJwks: string(jwks), Roles: []string{string(authn.RolePlatformAdmin)}}
	}
	tests := []struct {
		name string
		// setup registers what an older data dir holds, given the worker's credential.
		setup      func(t *testing.T, f *fakeClients, cred *authn.Credential)
		wantID     string
		wantActive map[string][]string
		wantLog    string
	}{
		{name: "new data dir", setup: func(*testing.T, *fakeClients, *authn.Credential) {},
			wantID: LifecycleClientID, wantActive: map[string][]string{LifecycleClientID: {"lifecycle-worker"}}},
		{name: "worker registered as platform-admin by an older version",
			setup: func(t *testing.T, f *fakeClients, cred *authn.Credential) {
				f.clients[cred.ClientID] = platformAdmin(t, cred)
			},
			wantID: LifecycleClientID + "-2", wantActive: map[string][]string{LifecycleClientID + "-2": {"lifecycle-worker"}},
			wantLog: "old_client_id=lifecycle-worker client_id=lifecycle-worker-2"},
		{name: "next suffix taken by an interrupted earlier attempt",
			setup: func(t *testing.T, f *fakeClients, cred *authn.Credential) {
				f.clients[cred.ClientID] = platformAdmin(t, cred)
				other, err := authn.NewCredential(authn.SystemTenant, LifecycleClientID+"-2", issuer)
				if err != nil {
					t.Fatal(err)
				}
				jwks, _ := other.PublicJWKS()
				f.clients[other.ClientID] = &issuerv1.Client{ClientId: other.ClientID, PublicJwks: string(jwks), Roles: []string{"lifecycle-worker"}}
			},
			wantID:     LifecycleClientID + "-3",
			wantActive: map[string][]string{LifecycleClientID + "-2": {"lifecycle-worker"}, LifecycleClientID + "-3": {"lifecycle-worker"}},
			wantLog:    "old_client_id=lifecycle-worker client_id=lifecycle-worker-3"},
		{name: "worker client disabled",
			setup: func(t *testing.T, f *fakeClients, cred *authn.Credential) {
				if err := registerServiceClient(context.Background(), f, authn.RoleLifecycleWorker, cred); err != nil {
					t.Fatal(err)
				}
				f.disabled[cred.ClientID] = true
			},
			wantID: LifecycleClientID + "-2", wantActive: map[string][]string{LifecycleClientID + "-2": {"lifecycle-worker"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "credentials", "lifecycle-worker.json")
			cred, err := loadOrCreateCredential(path, LifecycleClientID, issuer)
			if err != nil {
				t.Fatal(err)
			}
			f := &fakeClients{clients: map[string]*issuerv1.Client{}, disabled: map[string]bool{}}
			tt.setup(t, f, cred)
			var logs bytes.Buffer
			got, err := ensureServiceClient(context.Background(), f, lifecycleWorker, path, cred, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if got.ClientID != tt.wantID {
				t.Fatalf("worker client %s, want %s", got.ClientID, tt.wantID)
			}
			active := f.active()
			if fmt.Sprint(active) != fmt.Sprint(tt.wantActive) {
				t.Fatalf("active clients %v, want %v (the old platform-admin client must be disabled)", active, tt.wantActive)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Fatalf("log %q lacks %q", logs.String(), tt.wantLog)
			}
			// The credential file now holds the worker's client, so a restart registers nothing new.
			again, err := loadOrCreateCredential(path, LifecycleClientID, issuer)
			if err != nil || again.ClientID != tt.wantID {
				t.Fatalf("credential file holds %v (%v), want %s", again, err, tt.wantID)
			}
			if next, err := ensureServiceClient(context.Background(), f, lifecycleWorker, path, again, slog.New(slog.DiscardHandler)); err != nil || next != again {
				t.Fatalf("restart: %v, %v; want the same client kept", next, err)
			}
		})
	}
}

// An error that says nothing about the registration (the store unavailable) gives nothing up.
func TestEnsureLifecycleWorkerKeepsTheClientOnOtherErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lifecycle-worker.json")
	cred, err := loadOrCreateCredential(path, LifecycleClientID, "http://127.0.0.1:8080/t/system")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeClients{clients: map[string]*issuerv1.Client{}, disabled: map[string]bool{},
		failNext: errs.Unavailable("STORE_UNAVAILABLE", "the event store is unavailable", nil)}
	if _, err := ensureServiceClient(context.Background(), f, lifecycleWorker, path, cred, slog.New(slog.DiscardHandler)); !errs.Is(err, errs.KindUnavailable) {
		t.Fatalf("err = %v, want the Unavailable error", err)
	}
	if len(f.active()) != 0 || len(f.disabled) != 0 {
		t.Fatalf("clients %v disabled %v, want nothing registered or disabled", f.active(), f.disabled)
	}
}

// A data dir of a version without the registry's identity holds the lifecycle worker's client only:
// bootstrap creates the registry's client with the registry-service role alone, leaves the worker's
// alone, and a restart keeps both.
func TestRegistryServiceClientOnADataDirOfAnOlderVersion(t *testing.T) {
	const issuer = "http://127.0.0.1:8080/t/system"
	dataDir := t.TempDir()
	f := &fakeClients{clients: map[string]*issuerv1.Client{}, disabled: map[string]bool{}}
	worker, err := loadServiceClient(context.Background(), dataDir, issuer, lifecycleWorker)
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.ensure(context.Background(), f, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	for start := range 2 {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		clients := map[string]*serviceClient{}
		for _, id := range []serviceIdentity{lifecycleWorker, registryService} {
			c, err := loadServiceClient(context.Background(), dataDir, issuer, id)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.ensure(context.Background(), f, log); err != nil {
				t.Fatalf("start %d: %s: %v", start, id.name, err)
			}
			clients[id.clientID] = c
		}
		want := map[string][]string{LifecycleClientID: {"lifecycle-worker"}, RegistryClientID: {"registry-service"}}
		if got := f.active(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("start %d: active clients %v, want %v", start, got, want)
		}
		if logs.Len() != 0 {
			t.Fatalf("start %d: warnings %q, want none (nothing is replaced)", start, logs.String())
		}
		reg := clients[RegistryClientID]
		if reg.cred.ClientID != RegistryClientID || reg.cred.Tenant != authn.SystemTenant {
			t.Fatalf("registry credential %s of %s, want %s of the system tenant", reg.cred.ClientID, reg.cred.Tenant, RegistryClientID)
		}
		if reg.path != filepath.Join(dataDir, "credentials", "registry-service.json") {
			t.Fatalf("registry credential at %s", reg.path)
		}
	}
}

// A registry client registered otherwise (another role, another key) is replaced like the worker's:
// the registry calls as registry-service-2 with the registry-service role, its tokens follow, and the
// old client is disabled.
func TestRegistryServiceClientRegisteredOtherwiseIsReplaced(t *testing.T) {
	const issuer = "http://127.0.0.1:8080/t/system"
	dataDir := t.TempDir()
	c, err := loadServiceClient(context.Background(), dataDir, issuer, registryService)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeClients{clients: map[string]*issuerv1.Client{}, disabled: map[string]bool{}}
	if err := registerServiceClient(context.Background(), f, authn.RolePlatformAdmin, c.cred); err != nil {
		t.Fatal(err)
	}
	before := c.tokens.ts
	var logs bytes.Buffer
	if err := c.ensure(context.Background(), f, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{RegistryClientID + "-2": {"registry-service"}}
	if got := f.active(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("active clients %v, want %v (the platform-admin client disabled)", got, want)
	}
	if c.cred.ClientID != RegistryClientID+"-2" || c.tokens.ts == before {
		t.Fatalf("registry calls as %s (tokens switched: %v), want %s-2", c.cred.ClientID, c.tokens.ts != before, RegistryClientID)
	}
	if !strings.Contains(logs.String(), "old_client_id=registry-service client_id=registry-service-2") {
		t.Fatalf("log %q lacks the replacement", logs.String())
	}
	again, err := loadServiceClient(context.Background(), dataDir, issuer, registryService)
	if err != nil || again.cred.ClientID != RegistryClientID+"-2" {
		t.Fatalf("credential file holds %v (%v), want %s-2", again, err, RegistryClientID)
	}
}
