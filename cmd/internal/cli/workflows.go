package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

func newAgentsWorkflowsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "workflows AGENT",
		Short: "Show an agent's provisioning and deprovisioning runs and what they wait for",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				res, err := lifecyclev1.NewLifecycleServiceClient(conn).GetAgentWorkflows(cmd.Context(),
					&lifecyclev1.GetAgentWorkflowsRequest{Agent: name})
				if err != nil {
					return err
				}
				return g.printWorkflows(res.GetWorkflows(), true)
			})
		},
	}
}

func newAgentsApproveCmd(g *globals) *cobra.Command {
	var decision, comment, requestID string
	cmd := &cobra.Command{
		Use:   "approve AGENT",
		Short: "Approve or reject the provisioning step that waits for you (approver, tenant-admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d lifecyclev1.ApprovalDecision
			switch strings.ToLower(decision) {
			case "approve":
				d = lifecyclev1.ApprovalDecision_APPROVAL_DECISION_APPROVE
			case "reject":
				d = lifecyclev1.ApprovalDecision_APPROVAL_DECISION_REJECT
			default:
				return fmt.Errorf("--decision %q: want approve or reject", decision)
			}
			if d == lifecyclev1.ApprovalDecision_APPROVAL_DECISION_REJECT && comment == "" {
				return errors.New("--comment is required when rejecting: say why")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "approval")
				res, err := lifecyclev1.NewLifecycleServiceClient(conn).SubmitApproval(cmd.Context(), &lifecyclev1.SubmitApprovalRequest{
					Agent: name, Decision: d, Comment: comment, RequestId: requestID,
				})
				if err != nil {
					return mutationError("the approval", requestID, "", err)
				}
				return g.printWorkflows([]*lifecyclev1.WorkflowStatus{res.GetWorkflow()}, false)
			})
		},
	}
	cmd.Flags().StringVar(&decision, "decision", "approve", "approve or reject")
	cmd.Flags().StringVar(&comment, "comment", "", "recorded with the decision (required to reject)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry is taken once)")
	return cmd
}

func (g *globals) printWorkflows(ws []*lifecyclev1.WorkflowStatus, list bool) error {
	msgs := make([]proto.Message, len(ws))
	for i, w := range ws {
		msgs[i] = w
	}
	return g.printResult(msgs, list, func() table {
		t := table{header: []string{"WORKFLOW", "KIND", "STAGE", "WAITING FOR", "DONE", "RESULT"}}
		for _, w := range ws {
			t.rows = append(t.rows, []string{w.GetWorkflowId(), enumName(w.GetKind().String(), "WORKFLOW_KIND_"),
				w.GetStage(), w.GetWaitingFor(), fmt.Sprint(w.GetCompleted()), w.GetResult()})
		}
		return t
	})
}
