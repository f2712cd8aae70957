package cli

import (
	"errors"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

func newAgentsTransferCmd(g *globals) *cobra.Command {
	var owner, sponsor, reason, etag, requestID string
	cmd := &cobra.Command{
		Use:   "transfer AGENT",
		Short: "Give an agent a new owner and/or sponsor (clears its orphaned mark)",
		Long: `Give an agent a new owner and/or sponsor. Once the tenant has a directory ('agentctl directory
sync'), the owner and sponsor after the transfer must both be ACTIVE principals of it: transferring
an agent whose sponsor departed names a new sponsor too. A transfer clears the agent's orphaned mark.
Allowed in every state but RETIRED and REJECTED. A transfer that changes nothing writes nothing.
Callers: platform-admin, tenant-admin, the agent's current owner.`,
		Example: `  agentctl agents transfer agt_01j... --owner team:payments --reason "support team dissolved"
  agentctl agents transfer agt_01j... --owner bob@corp.example --sponsor carol@corp.example --reason "alice left"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if owner == "" && sponsor == "" {
				return errors.New("--owner or --sponsor is required: name the new owner, the new sponsor or both")
			}
			if reason == "" {
				return errors.New("--reason is required: say why the ownership changes")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "transfer")
				res, err := registryv1.NewRegistryServiceClient(conn).TransferAgentOwnership(cmd.Context(), &registryv1.TransferAgentOwnershipRequest{
					Name: name, NewOwner: owner, NewSponsor: sponsor, Reason: reason, Etag: etag, RequestId: requestID,
				})
				if err != nil {
					return mutationError("the transfer", requestID, "", err)
				}
				return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&owner, "owner", "", "the new owner (a person or team:<name>); empty keeps the current one")
	f.StringVar(&sponsor, "sponsor", "", "the new sponsor; empty keeps the current one")
	f.StringVar(&reason, "reason", "", "why (required, at most 1024 characters)")
	f.StringVar(&etag, "etag", "", "transfer only if the agent is still at this etag")
	f.StringVar(&requestID, "request-id", "", "idempotency key (a retry with the same key transfers nothing new)")
	return cmd
}
