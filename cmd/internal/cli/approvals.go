package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// approvalSignal is the name of the provisioning workflow's approval signal (workflows.ApprovalSignal):
// its input in the Temporal UI is {"token":"<approval token>"}.
const approvalSignal = "approval"

func newApprovalsCmd(g *globals) *cobra.Command {
	cmd := group("approvals", "List and decide the provisioning approvals and deprovisioning sign-offs that wait for people")
	cmd.AddCommand(newApprovalsListCmd(g),
		newApprovalDecisionCmd(g, "approve AGENT", "Approve the step the agent's provisioning run waits for", "approve"),
		newApprovalDecisionCmd(g, "reject AGENT", "Reject the agent at the step its provisioning run waits for", "reject"),
		newApprovalsTokenCmd(g), newApprovalsSignOffCmd(g))
	return cmd
}

// pendingApproval is a provisioning run waiting for an approval step.
type pendingApproval struct {
	Agent       string `json:"agent"`
	DisplayName string `json:"displayName,omitempty"`
	Owner       string `json:"owner,omitempty"`
	WorkflowID  string `json:"workflowId"`
	RunID       string `json:"runId"`
	Step        string `json:"step"`
	WaitingFor  string `json:"waitingFor,omitempty"`
}

func newApprovalsListCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's provisioning runs waiting for an approval: agent, run id and step",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit <= 0 {
				return fmt.Errorf("--limit %d: want a positive number of agents", limit)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			rc := registryv1.NewRegistryServiceClient(conn)
			lc := lifecyclev1.NewLifecycleServiceClient(conn)
			pending := []pendingApproval{}
			seen, token := 0, ""
			for seen < limit {
				res, err := rc.ListAgents(cmd.Context(), &registryv1.ListAgentsRequest{
					Parent: "tenants/" + g.tenantOr(s), PageSize: int32(min(1000, limit-seen)), PageToken: token,
				})
				if err != nil {
					return err
				}
				for _, a := range res.GetAgents() {
					seen++
					if a.GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
						continue
					}
					w, err := provisioningRun(cmd.Context(), lc, a.GetName())
					if err != nil {
						return err
					}
					if w == nil || w.GetCompleted() || w.GetApprovalStep() == "" {
						continue
					}
					pending = append(pending, pendingApproval{
						Agent: a.GetName(), DisplayName: a.GetDisplayName(), Owner: a.GetOwner(), WorkflowID: w.GetWorkflowId(),
						RunID: w.GetRunId(), Step: w.GetApprovalStep(), WaitingFor: w.GetWaitingFor(),
					})
				}
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			if g.output != "table" {
				return g.printDoc(pending)
			}
			t := table{header: []string{"AGENT", "DISPLAY NAME", "OWNER", "STEP", "RUN ID"}}
			for _, p := range pending {
				t.rows = append(t.rows, []string{p.Agent, p.DisplayName, p.Owner, p.Step, p.RunID})
			}
			return writeTable(g.stdout, t)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 1000, "maximum number of agents to look at")
	return cmd
}

// provisioningRun returns the agent's provisioning run as the lifecycle service shows it, nil when it
// has none.
func provisioningRun(ctx context.Context, lc lifecyclev1.LifecycleServiceClient, agent string) (*lifecyclev1.WorkflowStatus, error) {
	res, err := lc.GetAgentWorkflows(ctx, &lifecyclev1.GetAgentWorkflowsRequest{Agent: agent})
	if err != nil {
		return nil, err
	}
	for _, w := range res.GetWorkflows() {
		if w.GetKind() == lifecyclev1.WorkflowKind_WORKFLOW_KIND_PROVISION {
			return w, nil
		}
	}
	return nil, nil
}

// waitingRun returns the agent's provisioning run and the approval step it waits for, checked against
// step when given; an error says what the run does instead.
func waitingRun(ctx context.Context, lc lifecyclev1.LifecycleServiceClient, agent, step string) (*lifecyclev1.WorkflowStatus, string, error) {
	w, err := provisioningRun(ctx, lc, agent)
	switch {
	case err != nil:
		return nil, "", err
	case w == nil:
		return nil, "", fmt.Errorf("%s has no provisioning run", agent)
	case w.GetCompleted():
		return nil, "", fmt.Errorf("the provisioning run of %s has finished (%s): there is nothing to approve", agent, w.GetResult())
	case w.GetApprovalStep() == "":
		what := w.GetStage()
		if w.GetWaitingFor() != "" {
			what += ", waiting for " + w.GetWaitingFor()
		}
		return nil, "", fmt.Errorf("the provisioning run of %s is not waiting for an approval (stage %s)", agent, what)
	case w.GetRunId() == "":
		return nil, "", fmt.Errorf("the lifecycle service shows no run id for the provisioning run of %s", agent)
	case step != "" && step != w.GetApprovalStep():
		return nil, "", fmt.Errorf("--step %s: the provisioning run of %s waits for the %s step", step, agent, w.GetApprovalStep())
	}
	return w, w.GetApprovalStep(), nil
}

// approvalToken asks the issuer for the caller's approval token for decision on step of run.
func approvalToken(ctx context.Context, conn *grpc.ClientConn, agent, step, runID string, approve bool) (*issuerv1.IssueApprovalTokenResponse, error) {
	d := issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_REJECT
	if approve {
		d = issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_APPROVE
	}
	return issuerv1.NewIssuerServiceClient(conn).IssueApprovalToken(ctx, &issuerv1.IssueApprovalTokenRequest{
		Agent: agent, Step: step, Decision: d, WorkflowRunId: runID,
	})
}

// parseDecision maps approve or reject onto whether it approves.
func parseDecision(decision string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(decision)) {
	case "approve":
		return true, nil
	case "reject":
		return false, nil
	}
	return false, fmt.Errorf("--decision %q: want approve or reject", decision)
}

// approvalFlags are the flags of a decision: approvals approve|reject and agents approve.
type approvalFlags struct {
	step, comment, requestID string
}

func (f *approvalFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.step, "step", "", "the step you decide (default: the step the run waits for; refused when the run waits for another)")
	cmd.Flags().StringVar(&f.comment, "comment", "", "recorded with the decision (required to reject)")
	cmd.Flags().StringVar(&f.requestID, "request-id", "", "idempotency key (a retry is taken once)")
}

// decide submits the caller's decision on the step the agent's provisioning run waits for: the run id
// and step from the lifecycle service, an approval token of the caller from the issuer, then
// SubmitApproval with it. The run's refusal says why.
func (g *globals) decide(ctx context.Context, agent string, approve bool, f approvalFlags) error {
	if !approve && strings.TrimSpace(f.comment) == "" {
		return errors.New("--comment is required when rejecting: say why")
	}
	return g.withAgent(ctx, agent, func(conn *grpc.ClientConn, name string) error {
		lc := lifecyclev1.NewLifecycleServiceClient(conn)
		w, step, err := waitingRun(ctx, lc, name, f.step)
		if err != nil {
			return err
		}
		tok, err := approvalToken(ctx, conn, name, step, w.GetRunId(), approve)
		if err != nil {
			return err
		}
		d := lifecyclev1.ApprovalDecision_APPROVAL_DECISION_REJECT
		if approve {
			d = lifecyclev1.ApprovalDecision_APPROVAL_DECISION_APPROVE
		}
		requestID := requestIDOr(f.requestID, "approval")
		res, err := lc.SubmitApproval(ctx, &lifecyclev1.SubmitApprovalRequest{
			Agent: name, Decision: d, Comment: f.comment, RequestId: requestID, ApprovalToken: tok.GetToken(),
		})
		if err != nil {
			return mutationError("the approval", requestID, "", err)
		}
		return g.printWorkflows([]*lifecyclev1.WorkflowStatus{res.GetWorkflow()}, false)
	})
}

func newApprovalDecisionCmd(g *globals, use, short, decision string) *cobra.Command {
	var f approvalFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + ". The decision carries your approval token (issued to you for this run, step and decision); " +
			"the run refuses, saying why, a step you may not decide.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.decide(cmd.Context(), args[0], decision == "approve", f)
		},
	}
	f.register(cmd)
	return cmd
}

// newAgentsApproveCmd is agents approve: approvals approve and approvals reject under --decision.
func newAgentsApproveCmd(g *globals) *cobra.Command {
	var f approvalFlags
	var decision string
	cmd := &cobra.Command{
		Use:   "approve AGENT",
		Short: "Approve or reject the provisioning step that waits for you (as agentctl approvals approve|reject)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			approve, err := parseDecision(decision)
			if err != nil {
				return err
			}
			return g.decide(cmd.Context(), args[0], approve, f)
		},
	}
	cmd.Flags().StringVar(&decision, "decision", "approve", "approve or reject")
	f.register(cmd)
	return cmd
}

func newApprovalsTokenCmd(g *globals) *cobra.Command {
	var step, decision, comment string
	cmd := &cobra.Command{
		Use:   "token AGENT",
		Short: "Print your approval token as the input of the approval signal in the Temporal UI",
		Long: `Print {"token":"..."}: your approval token for one decision on one step of the agent's
provisioning run, to paste as the input of signal "approval" in the Temporal UI's signal dialog of
workflow provision/{tenant}/{agent}. The token is good for that run, step and decision only, once, for
at most 5 minutes; the run refuses it, and records why, when you may not decide the step.`,
		Example: `  agentctl approvals token claims-bot --step security --decision approve`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			approve, err := parseDecision(decision)
			if err != nil {
				return err
			}
			if !approve && strings.TrimSpace(comment) == "" {
				return errors.New("--comment is required when rejecting: say why")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				w, step, err := waitingRun(cmd.Context(), lifecyclev1.NewLifecycleServiceClient(conn), name, step)
				if err != nil {
					return err
				}
				tok, err := approvalToken(cmd.Context(), conn, name, step, w.GetRunId(), approve)
				if err != nil {
					return err
				}
				input := struct {
					Token   string `json:"token"`
					Comment string `json:"comment,omitempty"`
				}{tok.GetToken(), comment}
				b, err := json.Marshal(input)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "send as signal %q to workflow %s (run %s), step %s; expires %s\n",
					approvalSignal, w.GetWorkflowId(), w.GetRunId(), step, tok.GetExpireTime().AsTime().Local().Format(time.TimeOnly))
				_, err = fmt.Fprintln(g.stdout, string(b))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&step, "step", "", "the step you decide (default: the step the run waits for; refused when the run waits for another)")
	cmd.Flags().StringVar(&decision, "decision", "approve", "approve or reject")
	cmd.Flags().StringVar(&comment, "comment", "", "recorded with the decision (required to reject)")
	return cmd
}
