// Command issuer runs the issuer service alone: the per-tenant OAuth authorization server on HTTP and
// IssuerService on gRPC.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/services/issuer/app"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

func main() {
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	f := service.DefaultFlags("127.0.0.1:7072", "127.0.0.1:8080")
	f.Register(fs)
	publicURL := fs.String("public-url", "", "public base URL of the issuer; tenant issuers are {public-url}/t/{tenant} (default --issuer-url)")
	kekFile := fs.String("kek-file", "", "file holding the 32-byte key-encryption key (raw, hex or base64); required")
	kekID := fs.String("kek-id", "", "id of the key-encryption key (default: derived from the key)")
	var oldKEKs oldKEKFiles
	fs.Var(&oldKEKs, "old-kek-file", "[KEK_ID=]FILE: an earlier key-encryption key that only opens signing keys sealed with it, until `agentctl keys reseal --all` reports none left under it (repeatable; KEK_ID defaults to the id derived from the key)")
	tokenTTL := fs.Duration("default-token-ttl", 10*time.Minute, "access token lifetime of clients that set none")
	temporalNS := fs.String("temporal-namespace", oauth.DefaultTemporalNamespace, "Temporal namespace named in the permissions claim of tokens for audience "+authn.TemporalAudience+" (lifecycle-worker: <ns>:write, platform-admin: <ns>:admin)")
	settings := app.DefaultFlags()
	settings.Register(fs)
	// The platform's own service identities, one flag per role; each registers clients of tenant
	// system with that one role at start.
	identities := []*platformClients{
		{flag: "platform-client", role: authn.RolePlatformAdmin,
			usage: "CLIENT_ID=PUBLIC_JWKS_FILE: register a platform-admin service identity of tenant system at start (repeatable; see deploy/secrets/generate.sh)"},
		{flag: "lifecycle-client", role: authn.RoleLifecycleWorker,
			usage: "CLIENT_ID=PUBLIC_JWKS_FILE: register the lifecycle worker's service identity of tenant system, with the narrow lifecycle-worker role, at start (repeatable; see deploy/secrets/generate.sh)"},
		{flag: "registry-client", role: authn.RoleRegistryService,
			usage: "CLIENT_ID=PUBLIC_JWKS_FILE: register the registry's service identity of tenant system, with the registry-service role only (it may ask the policy service to admit updates, nothing else), at start (repeatable; see deploy/secrets/generate.sh)"},
	}
	for _, p := range identities {
		fs.Var(p, p.flag, p.usage)
	}
	os.Exit(service.Main(app.Name, fs, &f, func(_ context.Context, env *service.Env) (service.Component, error) {
		kek, err := app.LoadKEKFile(*kekFile)
		if err != nil {
			return nil, err
		}
		old, err := oldKEKs.load()
		if err != nil {
			return nil, err
		}
		clients, err := loadPlatformClients(identities)
		if err != nil {
			return nil, err
		}
		public := *publicURL
		if public == "" {
			public = f.IssuerURL
		}
		// The issuer identifier in every token: plaintext only on loopback (`agentid dev`).
		if err := authn.CheckIssuerURL(public); err != nil {
			return nil, fmt.Errorf("--public-url: %w", err)
		}
		cfg := app.Config{PublicURL: public, KEK: kek, KEKID: *kekID, DefaultTokenTTL: *tokenTTL, PlatformClients: clients,
			JTIReplicas: env.StreamReplicas, TemporalNamespace: *temporalNS, OldKEKs: old}
		settings.Apply(&cfg)
		// The process's denylist (the platform API's) serves introspection too: one copy per process.
		return app.New(cfg, app.Deps{Store: env.Store, JetStream: env.JetStream, Logger: env.Logger,
			Denylist: env.Denylist, DenylistReady: env.DenylistReady})
	}))
}

// platformClients collects repeated CLIENT_ID=PUBLIC_JWKS_FILE flags of service identities with one
// role; the files are read when the service starts.
type platformClients struct {
	flag    string     // the flag's name, without dashes
	role    authn.Role // the one role the identities get
	usage   string     // the flag's help
	clients []struct{ id, path string }
}

func (p *platformClients) String() string {
	if p == nil || len(p.clients) == 0 {
		return ""
	}
	return fmt.Sprint(len(p.clients), " ", p.role, " clients")
}

func (p *platformClients) Set(v string) error {
	id, path, ok := strings.Cut(v, "=")
	if !ok || id == "" || path == "" {
		return fmt.Errorf("want CLIENT_ID=PUBLIC_JWKS_FILE, got %q", v)
	}
	p.clients = append(p.clients, struct{ id, path string }{id, path})
	return nil
}

// loadPlatformClients reads the public key files of every identity flag. A client id given twice, in
// one flag or in two, is refused: one client has one registration, with the one role of its flag.
func loadPlatformClients(identities []*platformClients) ([]app.PlatformClient, error) {
	var out []app.PlatformClient
	seen := map[string]string{} // client id -> the flag that named it
	for _, p := range identities {
		for _, c := range p.clients {
			if prev, dup := seen[c.id]; dup {
				return nil, fmt.Errorf("--%s %s: client %q is also given by --%s; each service identity is one client with one role", p.flag, c.id, c.id, prev)
			}
			seen[c.id] = p.flag
			jwks, err := os.ReadFile(c.path)
			if err != nil {
				return nil, fmt.Errorf("--%s %s: %w", p.flag, c.id, err)
			}
			out = append(out, app.PlatformClient{ClientID: c.id, PublicJWKS: string(jwks), Roles: []string{string(p.role)}})
		}
	}
	return out, nil
}

// oldKEKFiles collects repeated [KEK_ID=]FILE flags of earlier key-encryption keys.
type oldKEKFiles []struct{ id, path string }

func (o *oldKEKFiles) String() string { return fmt.Sprint(len(*o), " old KEKs") }

func (o *oldKEKFiles) Set(v string) error {
	id, path, ok := strings.Cut(v, "=")
	if !ok {
		id, path = "", v
	}
	if path == "" {
		return fmt.Errorf("want [KEK_ID=]FILE, got %q", v)
	}
	*o = append(*o, struct{ id, path string }{id, path})
	return nil
}

// load reads the key files.
func (o oldKEKFiles) load() ([]app.OldKEK, error) {
	out := make([]app.OldKEK, 0, len(o))
	for _, f := range o {
		k, err := app.LoadKEKFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("--old-kek-file %s: %w", f.path, err)
		}
		out = append(out, app.OldKEK{ID: f.id, Key: k})
	}
	return out, nil
}
