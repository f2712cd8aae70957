// Command registry runs the registry service on its own: the agent and tenant registry over NATS
// JetStream, served as agentid.registry.v1.RegistryService.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/services/registry/app"
)

func main() {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	flags := service.DefaultFlags("127.0.0.1:7071", "127.0.0.1:8071")
	flags.Register(fs)
	var cfg app.Config
	os.Exit(service.Main(app.Name, fs, &flags, func(_ context.Context, env *service.Env) (service.Component, error) {
		return app.New(cfg, app.Deps{Store: env.Store, Logger: env.Logger})
	}))
}
