package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

func newIncidentsCmd(g *globals) *cobra.Command {
	cmd := group("incidents", "List the incident runs alerts started and decide them (restore or retire the agent)")
	cmd.AddCommand(newIncidentsListCmd(g), newIncidentsDecideCmd(g))
	return cmd
}

func newIncidentsListCmd(g *globals) *cobra.Command {
	var open bool
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's incidents, newest first: agent, alert, severity, actions, who decides now, outcome",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit <= 0 {
				return fmt.Errorf("--limit %d: want a positive number of incidents", limit)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			list, err := listIncidents(cmd.Context(), lifecyclev1.NewLifecycleServiceClient(conn), g.tenantOr(s), open, limit, nil)
			if err != nil {
				return err
			}
			if g.output != "table" {
				docs := make([]any, 0, len(list))
				for _, inc := range list {
					b, err := protojson.Marshal(inc)
					if err != nil {
						return err
					}
					docs = append(docs, json.RawMessage(b))
				}
				return g.printDoc(docs)
			}
			t := table{header: []string{"AGENT", "ALERT", "DETECTOR", "SEVERITY", "STAGE", "DECIDER", "OUTCOME", "ACTIONS"}}
			for _, inc := range list {
				t.rows = append(t.rows, []string{inc.GetAgent(), lastSegment(inc.GetAlert()), inc.GetDetector(), inc.GetSeverity(),
					inc.GetWorkflow().GetStage(), inc.GetDecider(), inc.GetOutcome(), strings.Join(inc.GetActions(), "; ")})
			}
			return writeTable(g.stdout, t)
		},
	}
	cmd.Flags().BoolVar(&open, "open", false, "only incidents that are still open")
	cmd.Flags().IntVar(&limit, "limit", 100, "maximum number of incidents to show")
	return cmd
}

// listIncidents pages through the tenant's incidents until limit, or until stop says it found what
// it looks for.
func listIncidents(ctx context.Context, lc lifecyclev1.LifecycleServiceClient, tenant string, open bool, limit int,
	stop func(*lifecyclev1.Incident) bool) ([]*lifecyclev1.Incident, error) {
	var out []*lifecyclev1.Incident
	token := ""
	for len(out) < limit {
		res, err := lc.ListIncidents(ctx, &lifecyclev1.ListIncidentsRequest{
			Parent: "tenants/" + tenant, OpenOnly: open, PageSize: int32(min(1000, limit-len(out))), PageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, inc := range res.GetIncidents() {
			out = append(out, inc)
			if stop != nil && stop(inc) {
				return out, nil
			}
		}
		if token = res.GetNextPageToken(); token == "" || len(res.GetIncidents()) == 0 {
			break
		}
	}
	return out, nil
}

func lastSegment(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[i+1:]
	}
	return name
}

func newIncidentsDecideCmd(g *globals) *cobra.Command {
	var comment, requestID string
	cmd := &cobra.Command{
		Use:   "decide AGENT ALERT_ID restore|retire",
		Short: "Restore (resume) or retire the agent of an open incident, with your approval token for the step the incident waits for",
		Long: "Decide an open incident: finds the incident run and the step (owner, sponsor, security) it waits for, gets your " +
			"approval token for that run, step and decision from the issuer, and sends the decision. The run refuses, saying why, " +
			"a step you may not decide.",
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var tokDecision issuerv1.ApprovalTokenDecision
			var decision lifecyclev1.IncidentDecision
			switch strings.ToLower(args[2]) {
			case "restore":
				tokDecision, decision = issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RESTORE, lifecyclev1.IncidentDecision_INCIDENT_DECISION_RESTORE
			case "retire":
				tokDecision, decision = issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RETIRE, lifecyclev1.IncidentDecision_INCIDENT_DECISION_RETIRE
			default:
				return fmt.Errorf("decision %q: want restore or retire", args[2])
			}
			alertID := lastSegment(args[1])
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				lc := lifecyclev1.NewLifecycleServiceClient(conn)
				tenant := strings.Split(name, "/")[1]
				found, err := listIncidents(cmd.Context(), lc, tenant, true, 100000, func(inc *lifecyclev1.Incident) bool {
					return lastSegment(inc.GetAlert()) == alertID && inc.GetAgent() == name
				})
				if err != nil {
					return err
				}
				var inc *lifecyclev1.Incident
				if n := len(found); n > 0 && lastSegment(found[n-1].GetAlert()) == alertID && found[n-1].GetAgent() == name {
					inc = found[n-1]
				}
				switch {
				case inc == nil:
					return fmt.Errorf("%s has no open incident for alert %s", name, alertID)
				case inc.GetDecider() == "" || inc.GetWorkflow().GetRunId() == "":
					return fmt.Errorf("the incident of alert %s is not waiting for a decision (stage %s)", alertID, inc.GetWorkflow().GetStage())
				}
				tok, err := issuerv1.NewIssuerServiceClient(conn).IssueApprovalToken(cmd.Context(), &issuerv1.IssueApprovalTokenRequest{
					Agent: name, Step: inc.GetDecider(), Decision: tokDecision, WorkflowRunId: inc.GetWorkflow().GetRunId(),
				})
				if err != nil {
					return err
				}
				rid := requestIDOr(requestID, "incident")
				res, err := lc.DecideIncident(cmd.Context(), &lifecyclev1.DecideIncidentRequest{
					Agent: name, AlertId: alertID, Decision: decision, Comment: comment, RequestId: rid, ApprovalToken: tok.GetToken(),
				})
				if err != nil {
					return mutationError("the decision", rid, "", err)
				}
				out := res.GetIncident()
				if g.output != "table" {
					b, err := protojson.Marshal(out)
					if err != nil {
						return err
					}
					return g.printDoc(json.RawMessage(b))
				}
				if out.GetOutcome() == "" {
					return errors.New("the incident run took the decision but shows no outcome yet")
				}
				_, err = fmt.Fprintf(g.stdout, "incident %s of %s: %s (decided by you at the %s step)\n", alertID, name, out.GetOutcome(), inc.GetDecider())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "recorded with the decision")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry is taken once)")
	return cmd
}
