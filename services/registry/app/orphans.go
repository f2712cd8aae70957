package app

import (
	"context"
	"log/slog"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// newOrphanReactor builds the reactor that marks the agents of departed directory principals
// orphaned (a durable consumer of the TENANTS stream shared by the registry's replicas).
func newOrphanReactor(svc *registry.Service, store *eventstore.Store, log *slog.Logger) (*registry.OrphanReactor, error) {
	return registry.NewOrphanReactor(registry.OrphanReactorConfig{
		Consumer: store, Service: svc, Logger: log,
		AgentsLastSequence: func(ctx context.Context) (uint64, error) {
			s, err := store.JetStream().Stream(ctx, eventstore.StreamAgents)
			if err != nil {
				return 0, err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return 0, err
			}
			return info.State.LastSeq, nil
		},
	})
}
