package workflows

import (
	"context"

	"github.com/agentid/agentid/pkg/assetgraph"
)

// cleanupDependencies reads the agent's declared dependencies (its registry record's
// `dependencies`, through its asset graph) for a cleanup request: never nil, so the cleanup's
// payload always says what the agent declared, even when that is nothing. An agent the registry
// cannot return fails the cleanup (retried as getAgent says): a cleanup is never told "nothing" for
// want of an answer.
func (a *Activities) cleanupDependencies(ctx context.Context, agent string) ([]assetgraph.Dependency, error) {
	rec, err := a.getAgent(ctx, agent)
	if err != nil {
		return nil, err
	}
	return assetgraph.FromAgent(rec).Dependencies(), nil
}
