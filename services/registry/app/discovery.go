package app

import (
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/services/registry/internal/discovery"
	"github.com/agentid/agentid/services/registry/internal/registry"
	"github.com/agentid/agentid/services/registry/internal/server"
)

// discoveryPart is the DiscoveryService with the runner of its issuer clients read model.
type discoveryPart struct {
	srv    *discovery.Server
	runner *eventstore.Runner
}

// newDiscovery builds the DiscoveryService over the registry's RPCs (srv, so each call is
// authorized as the caller) and a read model of the issuer's clients (the client events of the
// CREDENTIALS stream).
func newDiscovery(store *eventstore.Store, svc *registry.Service, srv *server.Server) (*discoveryPart, error) {
	clients := discovery.NewClientProjection()
	runner := store.NewRunner(clients, eventstore.StreamCredentials, []string{eventstore.AggregateTypeSubject(eventstore.AggregateClient)})
	d, err := discovery.New(discovery.Config{Registry: srv, Keys: svc.Agents().KeyHolder, Clients: clients,
		Index: registry.PlatformIndex{Agents: svc.Agents(), Directories: svc.Directories()}})
	if err != nil {
		return nil, err
	}
	return &discoveryPart{srv: d, runner: runner}, nil
}
