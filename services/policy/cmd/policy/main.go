// Command policy runs the policy service on its own: policy-as-code (OPA/Rego) decisions served as
// agentid.policy.v1.PolicyService, with every decision recorded on NATS JetStream.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/services/policy/app"
)

func main() {
	fs := flag.NewFlagSet("policy", flag.ContinueOnError)
	flags := service.DefaultFlags("127.0.0.1:7073", "127.0.0.1:8073")
	flags.Register(fs)
	var cfg app.Config
	fs.StringVar(&cfg.BundleDir, "bundle-dir", "", "directory of .rego files to use instead of the built-in policy bundle")
	os.Exit(service.Main(app.Name, fs, &flags, func(_ context.Context, env *service.Env) (service.Component, error) {
		return app.New(cfg, app.Deps{Store: env.Store, Logger: env.Logger})
	}))
}
