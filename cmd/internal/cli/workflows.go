package cli

import (
	"fmt"

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
