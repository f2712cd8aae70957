package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

// newRotationsCmd returns `rotations show|decide`: the rotation run of an agent's new key and the
// owner's decision on the new key of a high-tier agent.
func newRotationsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotations",
		Short: "Show key rotation runs and approve or reject the new key of a high-tier agent",
	}
	cmd.AddCommand(newRotationsShowCmd(g), newRotationsDecideCmd(g))
	return cmd
}

// printRotation prints a rotation run.
func (g *globals) printRotation(name, thumbprint string, w *lifecyclev1.WorkflowStatus) error {
	if g.output != "table" {
		b, err := protojson.Marshal(w)
		if err != nil {
			return err
		}
		return g.printDoc(json.RawMessage(b))
	}
	state := "stage " + w.GetStage()
	switch {
	case w.GetCompleted():
		state = "finished: " + w.GetResult()
	case w.GetWaitingFor() != "":
		state += ", waiting for " + w.GetWaitingFor()
	}
	_, err := fmt.Fprintf(g.stdout, "rotation of %s to key %s (run %s): %s\n", name, thumbprint, w.GetRunId(), state)
	return err
}

// newRotationsShowCmd shows the rotation run of an agent's new key.
func newRotationsShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show AGENT THUMBPRINT",
		Short: "Show the rotation run of an agent's new key (its stage and what it waits for)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				res, err := lifecyclev1.NewLifecycleServiceClient(conn).GetRotation(cmd.Context(), &lifecyclev1.GetRotationRequest{Agent: name, Thumbprint: args[1]})
				if err != nil {
					return err
				}
				return g.printRotation(name, args[1], res.GetWorkflow())
			})
		},
	}
}

// newRotationsDecideCmd approves or rejects the new key of a high-tier agent with the caller's
// approval token.
func newRotationsDecideCmd(g *globals) *cobra.Command {
	var comment, requestID string
	cmd := &cobra.Command{
		Use:   "decide AGENT THUMBPRINT approve|reject",
		Short: "Approve or reject the new key of a high-tier agent whose rotation waits for its owner",
		Long: "Decide a new key: finds the rotation run of the key, gets your approval token for that run, step owner and " +
			"the decision from the issuer, and sends the decision. Approve adds the key to the agent's client (the rotation " +
			"then goes on); reject removes it from the registry. The run refuses, saying why, a decision by someone who " +
			"may not take it (approve: the owner or its sponsor; reject: also approver and tenant-admin).",
		Example: `  agentctl rotations decide agt_01j... 3q2x...Zk approve --comment "planned rotation"`,
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			approve, err := parseDecision(args[2])
			if err != nil {
				return err
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				lc := lifecyclev1.NewLifecycleServiceClient(conn)
				got, err := lc.GetRotation(cmd.Context(), &lifecyclev1.GetRotationRequest{Agent: name, Thumbprint: args[1]})
				if err != nil {
					return err
				}
				run := got.GetWorkflow()
				switch {
				case run.GetCompleted():
					return fmt.Errorf("the rotation of %s to key %s has finished (%s): there is nothing to decide", name, args[1], run.GetResult())
				case run.GetApprovalStep() == "" || run.GetRunId() == "":
					return fmt.Errorf("the rotation of %s to key %s is not waiting for an approval (stage %s)", name, args[1], run.GetStage())
				}
				tok, err := approvalToken(cmd.Context(), conn, name, run.GetApprovalStep(), run.GetRunId(), approve)
				if err != nil {
					return err
				}
				rid := requestIDOr(requestID, "rotation-decide")
				out, err := lc.DecideRotation(cmd.Context(), &lifecyclev1.DecideRotationRequest{
					Agent: name, Thumbprint: args[1], ApprovalToken: tok.GetToken(), Comment: comment, RequestId: rid,
				})
				if err != nil {
					return mutationError("the decision", rid, "", err)
				}
				return g.printRotation(name, args[1], out.GetWorkflow())
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "recorded with the decision")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry is taken once)")
	return cmd
}
