// Package app wires the policy service: it compiles the policy bundle and serves
// agentid.policy.v1.PolicyService. The service's own binary and the all-in-one `agentid dev` both
// build it with New.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/policy/bundle"
	"github.com/agentid/agentid/services/policy/internal/admission"
	"github.com/agentid/agentid/services/policy/internal/engine"
	"github.com/agentid/agentid/services/policy/internal/server"
)

var _ service.Component = (*App)(nil)

// Name is the service's name in logs, health and the event source ("agentid/policy").
const Name = "policy"

// Config configures the policy service.
type Config struct {
	// BundleDir, if set, is a directory of .rego files used instead of the built-in bundle.
	BundleDir string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.BundleDir == "" {
		return nil
	}
	info, err := os.Stat(c.BundleDir)
	if err != nil {
		return fmt.Errorf("policy: bundle dir: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("policy: bundle dir %s is not a directory", c.BundleDir)
	}
	return nil
}

// Deps are the policy service's collaborators.
type Deps struct {
	// Store records the decision made under each request id (stream POLICY) and publishes the
	// decision log (telemetry.<tenant>.policy.decided); required.
	Store *eventstore.Store
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the policy's clock; defaults to time.Now.
	Now func() time.Time
}

// App is the policy service.
type App struct {
	engine *engine.Engine
	server *server.Server
}

// New loads and compiles the bundle (the built-in one unless cfg.BundleDir is set); a bundle that
// does not compile is an error.
func New(cfg Config, deps Deps) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("policy: Deps.Store is required")
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	var (
		b   engine.Bundle
		err error
	)
	if cfg.BundleDir != "" {
		b, err = engine.LoadDir(cfg.BundleDir)
	} else {
		b, err = engine.LoadFS(bundle.FS)
	}
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(context.Background(), b, logger)
	if err != nil {
		return nil, err
	}
	logger.Info("policy bundle loaded", "bundle_version", eng.BundleVersion(), "bundle_dir", cfg.BundleDir)
	svc := admission.New(eng, deps.Store, deps.Now, logger)
	return &App{engine: eng, server: server.New(svc)}, nil
}

// Name implements service.Component.
func (a *App) Name() string { return Name }

// RegisterGRPC registers PolicyService on s.
func (a *App) RegisterGRPC(s *grpc.Server) { policyv1.RegisterPolicyServiceServer(s, a.server) }

// Tasks implements service.Component; the policy service has no long-running tasks.
func (a *App) Tasks() []service.Task { return nil }

// BundleVersion is the version of the loaded policy bundle.
func (a *App) BundleVersion() string { return a.engine.BundleVersion() }
