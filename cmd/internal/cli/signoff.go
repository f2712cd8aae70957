package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

// newApprovalsSignOffCmd signs off a verified deprovisioning with the caller's approval token.
func newApprovalsSignOffCmd(g *globals) *cobra.Command {
	var comment, requestID string
	cmd := &cobra.Command{
		Use:   "sign-off AGENT",
		Short: "Sign off the verified deprovisioning of an agent at the step (owner, security) its run waits for",
		Long: "Sign off a deprovisioning: finds the agent's deprovisioning run and the sign-off step it waits for, gets your " +
			"approval token for that run, step and decision sign_off from the issuer, and sends the sign-off. The run " +
			"refuses, saying why, a step you may not sign or a second sign-off by the same person; once every step has " +
			"signed, it records the evidence (lifecycle.deprovisioning_completed).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				lc := lifecyclev1.NewLifecycleServiceClient(conn)
				res, err := lc.GetAgentWorkflows(cmd.Context(), &lifecyclev1.GetAgentWorkflowsRequest{Agent: name})
				if err != nil {
					return err
				}
				var run *lifecyclev1.WorkflowStatus
				for _, w := range res.GetWorkflows() {
					if w.GetKind() == lifecyclev1.WorkflowKind_WORKFLOW_KIND_DEPROVISION {
						run = w
					}
				}
				switch {
				case run == nil:
					return fmt.Errorf("%s has no deprovisioning run", name)
				case run.GetCompleted():
					return fmt.Errorf("the deprovisioning run of %s has finished (%s): there is nothing to sign off", name, run.GetResult())
				case run.GetApprovalStep() == "" || run.GetRunId() == "":
					return fmt.Errorf("the deprovisioning run of %s is not waiting for a sign-off (stage %s)", name, run.GetStage())
				}
				tok, err := issuerv1.NewIssuerServiceClient(conn).IssueApprovalToken(cmd.Context(), &issuerv1.IssueApprovalTokenRequest{
					Agent: name, Step: run.GetApprovalStep(), WorkflowRunId: run.GetRunId(),
					Decision: issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_SIGN_OFF,
				})
				if err != nil {
					return err
				}
				rid := requestIDOr(requestID, "sign-off")
				out, err := lc.SignOffDeprovisioning(cmd.Context(), &lifecyclev1.SignOffDeprovisioningRequest{
					Agent: name, Comment: comment, RequestId: rid, ApprovalToken: tok.GetToken(),
				})
				if err != nil {
					return mutationError("the sign-off", rid, "", err)
				}
				if g.output != "table" {
					b, err := protojson.Marshal(out.GetWorkflow())
					if err != nil {
						return err
					}
					return g.printDoc(json.RawMessage(b))
				}
				next := "every sign-off is in; the evidence is recorded"
				if w := out.GetWorkflow(); !w.GetCompleted() && w.GetWaitingFor() != "" {
					next = "now waiting for " + w.GetWaitingFor()
				}
				_, err = fmt.Fprintf(g.stdout, "signed off the deprovisioning of %s at the %s step; %s\n", name, run.GetApprovalStep(), next)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "recorded with the sign-off")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry is taken once)")
	return cmd
}
