package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/assetgraph"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// newAgentsGraphCmd is `agents graph`: an agent's asset graph as JSON, Graphviz DOT or Mermaid.
func newAgentsGraphCmd(g *globals) *cobra.Command {
	var format, since string
	var noUsage bool
	cmd := &cobra.Command{
		Use:   "graph AGENT",
		Short: "Show an agent's asset graph: owner, sponsor, client, keys, scopes, roles, dependencies, resources seen",
		Long: `Show an agent's asset graph: its tenant, owner and sponsor, its issuer client and the keys it
authenticates with (kid and thumbprint only), its scopes, roles and token audiences, the resources it
declared it depends on (queues, webhooks, storage, …) and, from telemetry, the scopes it used and the
resources it accessed (--since, default 30d). JSON follows the schema in docs/asset-graph.md; dot
renders with Graphviz (agentctl agents graph X --format dot | dot -Tsvg > x.svg); mermaid pastes into
Markdown. A part the caller may not read or a service that does not answer is left out with a note
(on stderr, and in the JSON's "notes"); only the agent itself is required.
Callers: who may read the agent (GetAgent); the client part needs GetClient (platform-admin,
tenant-admin), the usage part GetAgentUsage.`,
		Example: `  agentctl agents graph agt_01j... --format mermaid
  agentctl agents graph tenants/acme/agents/agt_01j... --format dot --no-usage | dot -Tsvg > graph.svg`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "json", "dot", "mermaid":
			default:
				return fmt.Errorf("--format %q: want json, dot or mermaid", format)
			}
			now := time.Now()
			start, err := parseWindowStart(since, now)
			if err != nil {
				return fmt.Errorf("--since %q: %w", since, err)
			}
			if !start.Before(now) {
				return fmt.Errorf("--since %q: want a time in the past", since)
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				b := assetgraph.Builder{
					Agents:      assetgraph.RegistryAgents(registryv1.NewRegistryServiceClient(conn)),
					Clients:     assetgraph.IssuerClients(issuerv1.NewIssuerServiceClient(conn)),
					UsageWindow: now.Sub(start),
					Now:         func() time.Time { return now },
				}
				if !noUsage {
					b.Usage = assetgraph.MonitorUsage(monitorv1.NewMonitorServiceClient(conn))
				}
				graph, err := b.Build(cmd.Context(), name)
				if err != nil {
					return err
				}
				var out []byte
				switch format {
				case "json":
					if out, err = graph.JSON(); err != nil {
						return err
					}
				case "dot":
					out = []byte(graph.DOT())
				case "mermaid":
					out = []byte(graph.Mermaid())
				}
				if _, err := g.stdout.Write(out); err != nil {
					return err
				}
				for _, n := range graph.Notes {
					fmt.Fprintln(g.stderr, "note:", n)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "json", "output format: json, dot (Graphviz) or mermaid")
	f.StringVar(&since, "since", "30d", "telemetry window of the resources seen: an RFC 3339 time, a duration such as 12h, or days such as 7d")
	f.BoolVar(&noUsage, "no-usage", false, "leave out what telemetry saw (do not ask the monitor)")
	return cmd
}
