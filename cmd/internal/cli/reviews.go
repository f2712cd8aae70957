package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

func newReviewsCmd(g *globals) *cobra.Command {
	cmd := group("reviews", "Access reviews: start a campaign, list reviews, certify or revoke an agent's access")
	cmd.AddCommand(newReviewsStartCmd(g), newReviewsListCmd(g), newReviewsDecideCmd(g))
	return cmd
}

func newReviewsStartCmd(g *globals) *cobra.Command {
	var usageDays, answerDays int
	var requestID string
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start an access review campaign in the tenant now: one review per ACTIVE agent",
		Long: "Start an access review campaign in the tenant (--tenant, else the session's): every ACTIVE agent gets a review of its " +
			"scopes, those unused in the usage window proposed for removal. The same --request-id starts nothing new.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case usageDays < 0 || usageDays > 400:
				return fmt.Errorf("--usage-days %d: want 1 to 400 (0: the service's default)", usageDays)
			case answerDays < 0 || answerDays > 90:
				return fmt.Errorf("--answer-days %d: want 1 to 90 (0: the service's default)", answerDays)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			tenant := g.tenantOr(s)
			rid := requestIDOr(requestID, "review-campaign")
			res, err := lifecyclev1.NewLifecycleServiceClient(conn).StartReviewCampaign(cmd.Context(), &lifecyclev1.StartReviewCampaignRequest{
				Parent: "tenants/" + tenant, UsageDays: int32(usageDays), AnswerDays: int32(answerDays), RequestId: rid,
			})
			if err != nil {
				return mutationError("the campaign", rid, "", err)
			}
			if g.output != "table" {
				return g.printReviewDoc(res)
			}
			_, err = fmt.Fprintf(g.stdout, "campaign %s started in tenant %s (run %s)\n", res.GetCampaign(), tenant, res.GetWorkflowId())
			return err
		},
	}
	cmd.Flags().IntVar(&usageDays, "usage-days", 0, "usage window in days: a scope not used in it is proposed for removal (default: the service's, 90)")
	cmd.Flags().IntVar(&answerDays, "answer-days", 0, "days the owner, then the sponsor, may take to answer (default: the service's, 14)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: the campaign id derives from it, a retry starts nothing new")
	return cmd
}

func newReviewsListCmd(g *globals) *cobra.Command {
	var open bool
	var campaign string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's access reviews, newest first: agent, campaign, unused scopes, who decides by when, outcome",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit <= 0 {
				return fmt.Errorf("--limit %d: want a positive number of reviews", limit)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			list, err := listReviews(cmd.Context(), lifecyclev1.NewLifecycleServiceClient(conn), g.tenantOr(s), open, campaign, limit, nil)
			if err != nil {
				return err
			}
			if g.output != "table" {
				docs := make([]any, 0, len(list))
				for _, rv := range list {
					b, err := protojson.Marshal(rv)
					if err != nil {
						return err
					}
					docs = append(docs, json.RawMessage(b))
				}
				return g.printDoc(docs)
			}
			t := table{header: []string{"AGENT", "CAMPAIGN", "STAGE", "DECIDER", "DUE", "UNUSED", "OUTCOME", "DECIDED BY", "REMOVED"}}
			for _, rv := range list {
				due := ""
				if rv.GetDueTime() != nil {
					due = rv.GetDueTime().AsTime().UTC().Format(time.RFC3339)
				}
				t.rows = append(t.rows, []string{rv.GetAgent(), rv.GetCampaign(), rv.GetWorkflow().GetStage(), rv.GetDecider(), due,
					strings.Join(unusedScopes(rv), ","), rv.GetOutcome(), rv.GetDecidedBy(), strings.Join(rv.GetRemovedScopes(), ",")})
			}
			return writeTable(g.stdout, t)
		},
	}
	cmd.Flags().BoolVar(&open, "open", false, "only reviews that are still open")
	cmd.Flags().StringVar(&campaign, "campaign", "", "only the reviews of this campaign")
	cmd.Flags().IntVar(&limit, "limit", 100, "maximum number of reviews to show")
	return cmd
}

// listReviews pages through the tenant's reviews until limit, or until stop says it found what it
// looks for.
func listReviews(ctx context.Context, lc lifecyclev1.LifecycleServiceClient, tenant string, open bool, campaign string, limit int,
	stop func(*lifecyclev1.Review) bool) ([]*lifecyclev1.Review, error) {
	var out []*lifecyclev1.Review
	token := ""
	for len(out) < limit {
		res, err := lc.ListReviews(ctx, &lifecyclev1.ListReviewsRequest{
			Parent: "tenants/" + tenant, OpenOnly: open, Campaign: campaign, PageSize: int32(min(1000, limit-len(out))), PageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, rv := range res.GetReviews() {
			out = append(out, rv)
			if stop != nil && stop(rv) {
				return out, nil
			}
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	return out, nil
}

// unusedScopes lists the review's scopes not used in the usage window.
func unusedScopes(rv *lifecyclev1.Review) []string {
	var out []string
	for _, s := range rv.GetScopes() {
		if !s.GetUsed() {
			out = append(out, s.GetScope())
		}
	}
	return out
}

func newReviewsDecideCmd(g *globals) *cobra.Command {
	var certify, revoke bool
	var keep, remove []string
	var campaign, comment, requestID string
	cmd := &cobra.Command{
		Use:   "decide AGENT --certify|--revoke",
		Short: "Certify the agent's access (keeping unused scopes only with a reason) or revoke it, with your approval token for the step the review waits for",
		Long: "Decide the agent's open access review: finds the review run and the step (owner, sponsor) it waits for, gets your approval " +
			"token for that run, step and decision from the issuer (approve to certify, reject to revoke), and sends the decision. " +
			"With --certify every unused scope not kept with --keep SCOPE=REASON is removed when the review closes; --remove removes a " +
			"used scope too. --revoke suspends the agent. The run refuses, saying why, a step you may not decide.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if certify == revoke {
				return errors.New("say --certify or --revoke")
			}
			kept, err := parseReviewKeep(keep)
			if err != nil {
				return err
			}
			if revoke && (len(kept) > 0 || len(remove) > 0) {
				return errors.New("--keep and --remove go with --certify: a revoke suspends the agent")
			}
			tokDecision, decision := issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_APPROVE, lifecyclev1.ReviewDecision_REVIEW_DECISION_CERTIFY
			if revoke {
				tokDecision, decision = issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_REJECT, lifecyclev1.ReviewDecision_REVIEW_DECISION_REVOKE
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				lc := lifecyclev1.NewLifecycleServiceClient(conn)
				tenant := strings.Split(name, "/")[1]
				open, err := listReviews(cmd.Context(), lc, tenant, true, campaign, 100000, nil)
				if err != nil {
					return err
				}
				var mine []*lifecyclev1.Review
				for _, rv := range open {
					if rv.GetAgent() == name && !rv.GetWorkflow().GetCompleted() {
						mine = append(mine, rv)
					}
				}
				switch {
				case len(mine) == 0 && campaign != "":
					return fmt.Errorf("%s has no open review in campaign %s", name, campaign)
				case len(mine) == 0:
					return fmt.Errorf("%s has no open review", name)
				case len(mine) > 1:
					var cs []string
					for _, rv := range mine {
						cs = append(cs, rv.GetCampaign())
					}
					return fmt.Errorf("%s has open reviews in campaigns %s: say which with --campaign", name, strings.Join(cs, ", "))
				}
				rv := mine[0]
				if rv.GetDecider() == "" || rv.GetWorkflow().GetRunId() == "" {
					return fmt.Errorf("the review of %s in campaign %s is not waiting for a decision (stage %s)", name, rv.GetCampaign(), rv.GetWorkflow().GetStage())
				}
				for s := range kept {
					if !slices.ContainsFunc(rv.GetScopes(), func(x *lifecyclev1.ReviewScope) bool { return x.GetScope() == s }) {
						return fmt.Errorf("--keep %s: not a scope under review (%s)", s, strings.Join(reviewScopeNames(rv), ", "))
					}
				}
				tok, err := issuerv1.NewIssuerServiceClient(conn).IssueApprovalToken(cmd.Context(), &issuerv1.IssueApprovalTokenRequest{
					Agent: name, Step: rv.GetDecider(), Decision: tokDecision, WorkflowRunId: rv.GetWorkflow().GetRunId(),
				})
				if err != nil {
					return err
				}
				req := &lifecyclev1.DecideReviewRequest{Agent: name, Campaign: rv.GetCampaign(), Decision: decision, Remove: remove,
					Comment: comment, RequestId: requestIDOr(requestID, "review"), ApprovalToken: tok.GetToken()}
				for _, s := range reviewKeepOrder(kept) {
					req.Keep = append(req.Keep, &lifecyclev1.KeepScope{Scope: s, Reason: kept[s]})
				}
				res, err := lc.DecideReview(cmd.Context(), req)
				if err != nil {
					return mutationError("the decision", req.GetRequestId(), "", err)
				}
				out := res.GetReview()
				if g.output != "table" {
					return g.printReviewDoc(out)
				}
				if out.GetOutcome() == "" {
					return errors.New("the review run took the decision but shows no outcome yet")
				}
				removed := "none"
				if len(out.GetRemovedScopes()) > 0 {
					removed = strings.Join(out.GetRemovedScopes(), ", ")
				}
				_, err = fmt.Fprintf(g.stdout, "review of %s in campaign %s: %s (decided by you at the %s step); scopes removed: %s\n",
					name, rv.GetCampaign(), out.GetOutcome(), rv.GetDecider(), removed)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&certify, "certify", false, "certify the agent's access")
	cmd.Flags().BoolVar(&revoke, "revoke", false, "revoke the agent's access: it is suspended")
	cmd.Flags().StringArrayVar(&keep, "keep", nil, "keep an unused scope: SCOPE=REASON (repeatable; the reason is required)")
	cmd.Flags().StringArrayVar(&remove, "remove", nil, "remove a scope now, used or not (repeatable)")
	cmd.Flags().StringVar(&campaign, "campaign", "", "the review's campaign (needed only when the agent has open reviews in several)")
	cmd.Flags().StringVar(&comment, "comment", "", "recorded with the decision")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry is taken once)")
	return cmd
}

// parseReviewKeep turns --keep SCOPE=REASON values into a map, refusing empty scopes or reasons and a
// scope kept twice.
func parseReviewKeep(values []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range values {
		scope, reason, ok := strings.Cut(v, "=")
		scope, reason = strings.TrimSpace(scope), strings.TrimSpace(reason)
		switch {
		case !ok || scope == "" || reason == "":
			return nil, fmt.Errorf("--keep %q: want SCOPE=REASON (an unused scope is kept only with a reason)", v)
		case out[scope] != "":
			return nil, fmt.Errorf("--keep %s is given twice", scope)
		}
		out[scope] = reason
	}
	return out, nil
}

func reviewScopeNames(rv *lifecyclev1.Review) []string {
	var out []string
	for _, s := range rv.GetScopes() {
		out = append(out, s.GetScope())
	}
	return out
}

func reviewKeepOrder(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// printReviewDoc prints one message as JSON or YAML.
func (g *globals) printReviewDoc(m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	return g.printDoc(json.RawMessage(b))
}
