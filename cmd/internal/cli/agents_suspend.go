package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Bounds of `agents register --ttl`.
const (
	minAgentTTL = time.Minute
	maxAgentTTL = 30 * 24 * time.Hour
)

// checkTTL validates `agents register --ttl` against `--expires-in`: 0 is no TTL; otherwise between
// minAgentTTL and maxAgentTTL, and never together with an explicit expiry.
func checkTTL(ttl, expiresIn time.Duration) error {
	switch {
	case ttl == 0:
		return nil
	case expiresIn != 0:
		return errors.New("--ttl and --expires-in are exclusive: give the agent's lifetime once")
	case ttl < minAgentTTL || ttl > maxAgentTTL:
		return fmt.Errorf("--ttl %s: want between %s and %s (30 days)", ttl, minAgentTTL, maxAgentTTL)
	}
	return nil
}

func newAgentsSuspendCmd(g *globals) *cobra.Command {
	var reason, cause, ticket, etag, requestID string
	cmd := &cobra.Command{
		Use:   "suspend AGENT",
		Short: "Suspend an ACTIVE agent: it gets no token and every token it holds is revoked",
		Long: `Suspend an ACTIVE agent. The issuer refuses its token requests and revokes every token it was
issued (verifiers subscribed to revocations refuse them within moments). Resume it with
'agentctl agents resume', or retire it. Suspending a suspended agent changes nothing.
Callers: platform-admin, tenant-admin or security-approver of the agent's tenant.`,
		Example: `  agentctl agents suspend agt_01j... --reason "bulk export at 3 a.m." --ticket INC-42`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return errors.New("--reason is required: say why the agent is suspended")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "suspend")
				res, err := registryv1.NewRegistryServiceClient(conn).SuspendAgent(cmd.Context(), &registryv1.SuspendAgentRequest{
					Name: name, Reason: reason, Cause: cause, Ticket: ticket, Etag: etag, RequestId: requestID,
				})
				if err != nil {
					return mutationError("the suspension", requestID, "", err)
				}
				return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why (required, at most 1024 characters)")
	f.StringVar(&cause, "cause", "", "what caused it: operator (default), policy, alert:<alert id> or review:<campaign>")
	f.StringVar(&ticket, "ticket", "", "change ticket or incident reference")
	f.StringVar(&etag, "etag", "", "suspend only if the agent is still at this etag")
	f.StringVar(&requestID, "request-id", "", "idempotency key (a retry with the same key suspends nothing new)")
	return cmd
}

func newAgentsResumeCmd(g *globals) *cobra.Command {
	var reason, ticket, etag, requestID string
	cmd := &cobra.Command{
		Use:   "resume AGENT",
		Short: "Return a SUSPENDED agent to ACTIVE (it asks for new tokens; the revoked ones stay revoked)",
		Long: `Return a SUSPENDED agent to ACTIVE. Tokens revoked by the suspension stay revoked: the agent asks
for new ones. The issuer refuses token requests until the suspension's revocation window (the
projection-lag allowance, 5 s by default, after the suspension) has passed.
Callers: platform-admin, tenant-admin or security-approver of the agent's tenant.`,
		Example: `  agentctl agents resume agt_01j... --reason "false positive" --ticket INC-42`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return errors.New("--reason is required: say why the agent is resumed")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "resume")
				res, err := registryv1.NewRegistryServiceClient(conn).ResumeAgent(cmd.Context(), &registryv1.ResumeAgentRequest{
					Name: name, Reason: reason, Ticket: ticket, Etag: etag, RequestId: requestID,
				})
				if err != nil {
					return mutationError("the resumption", requestID, "", err)
				}
				return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why (required, at most 1024 characters)")
	f.StringVar(&ticket, "ticket", "", "change ticket or incident reference")
	f.StringVar(&etag, "etag", "", "resume only if the agent is still at this etag")
	f.StringVar(&requestID, "request-id", "", "idempotency key (a retry with the same key resumes nothing new)")
	return cmd
}
