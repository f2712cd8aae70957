// Command registry runs the registry service on its own: the agent and tenant registry over NATS
// JetStream, served as agentid.registry.v1.RegistryService.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/services/registry/app"
)

func main() {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	flags := service.DefaultFlags("127.0.0.1:7071", "127.0.0.1:8071")
	flags.Register(fs)
	var cfg app.Config
	fs.StringVar(&cfg.PolicyAddr, "policy-addr", "", "gRPC address of the policy service, which admits updates that escalate an ACTIVE or SUSPENDED agent; "+
		"verified against --ca (empty: no policy service, such updates are refused with ADMISSION_UNAVAILABLE)")
	credentials := fs.String("credentials", "", "credential file of the registry's service identity (a client of tenant system with the registry-service role only), "+
		"which it calls --policy-addr as (required with --policy-addr)")
	fs.DurationVar(&cfg.AdmissionTimeout, "admission-timeout", 0, "how long one admission may take at the policy service (0: 5s)")
	fs.StringVar(&cfg.Checkpoints, "checkpoints", app.CheckpointsNATS, "where the read models' checkpoints are kept so a restart replays only the tail (docs/inventory.md): "+
		app.CheckpointsNATS+" (the JetStream object store bucket CHECKPOINTS, shared by the replicas), "+app.CheckpointsOff+" (none: every start replays the streams), or a directory")
	os.Exit(service.Main(app.Name, fs, &flags, func(ctx context.Context, env *service.Env) (service.Component, error) {
		deps := app.Deps{Store: env.Store, Logger: env.Logger}
		if err := policyCredentials(ctx, env, cfg.PolicyAddr, *credentials, &deps); err != nil {
			return nil, err
		}
		return app.New(cfg, deps)
	}))
}

// policyCredentials sets what the registry calls the policy service with: the service identity of
// the --credentials file, over TLS verified against --ca. Without --policy-addr it sets nothing (the
// registry logs at start that it refuses escalating updates).
func policyCredentials(ctx context.Context, env *service.Env, policyAddr, credentials string, deps *app.Deps) error {
	switch {
	case policyAddr == "" && credentials != "":
		return errors.New("--credentials needs --policy-addr: the registry calls only the policy service with it")
	case policyAddr == "":
		return nil
	case credentials == "":
		return errors.New("--policy-addr needs --credentials: the registry asks the policy service to admit updates as its own service identity (registry-service)")
	}
	cred, err := authn.LoadCredentialFile(credentials)
	if err != nil {
		return fmt.Errorf("--credentials: %w", err)
	}
	if err := authn.CheckIssuerURL(cred.TokenURL); err != nil {
		return fmt.Errorf("--credentials %s: token_url: %w", credentials, err)
	}
	// Its token endpoint is verified against --ca too; tokens go over TLS unless every peer is loopback.
	tokenCtx := service.WithHTTPClient(ctx, env.ClientTLS)
	deps.PolicyPerRPC = authn.PerRPCCredentials(cred.TokenSource(tokenCtx), env.ClientTLS != nil)
	deps.PolicyTLS = env.ClientTLS
	return nil
}
