// Command issuer runs the issuer service alone: the per-tenant OAuth authorization server on HTTP and
// IssuerService on gRPC.
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/agentid/agentid/pkg/service"

	"github.com/agentid/agentid/services/issuer/app"
)

func main() {
	fs := flag.NewFlagSet("issuer", flag.ExitOnError)
	f := service.DefaultFlags("127.0.0.1:7072", "127.0.0.1:8080")
	f.Register(fs)
	publicURL := fs.String("public-url", "", "public base URL of the issuer; tenant issuers are {public-url}/t/{tenant} (default --issuer-url)")
	kekFile := fs.String("kek-file", "", "file holding the 32-byte key-encryption key (raw, hex or base64); required")
	kekID := fs.String("kek-id", "", "id of the key-encryption key (default: derived from the key)")
	tokenTTL := fs.Duration("default-token-ttl", 10*time.Minute, "access token lifetime of clients that set none")
	os.Exit(service.Main(app.Name, fs, &f, func(_ context.Context, env *service.Env) (service.Component, error) {
		kek, err := app.LoadKEKFile(*kekFile)
		if err != nil {
			return nil, err
		}
		public := *publicURL
		if public == "" {
			public = f.IssuerURL
		}
		return app.New(app.Config{PublicURL: public, KEK: kek, KEKID: *kekID, DefaultTokenTTL: *tokenTTL},
			app.Deps{Store: env.Store, JetStream: env.JetStream, Logger: env.Logger})
	}))
}
