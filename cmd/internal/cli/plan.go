package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentid/agentid/cmd/internal/manifest"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Plan actions.
const (
	actionCreate = "create"
	actionUpdate = "update"
	actionNoop   = "no-op"
	actionPrune  = "prune"
	// actionRefuse is a manifest the run cannot apply (the agent is retired, or managed elsewhere).
	actionRefuse = "refuse"
)

// exitPlanRefused is plan's exit code when the registry or policy would refuse a change.
const exitPlanRefused = 2

// exitError carries its own process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process exit code of the error.
func (e *exitError) ExitCode() int { return e.code }

// serverVerdict is the registry's answer to a change decided with validate_only.
type serverVerdict struct {
	// OK is true when the registry would accept the change.
	OK bool `json:"ok"`
	// Error is the registry's refusal, as agentctl prints errors.
	Error string `json:"error,omitempty"`
	// RiskTier is the risk tier the agent would have.
	RiskTier string `json:"riskTier,omitempty"`
}

// policyVerdict is the policy admission decision on the would-be agent (a dry run).
type policyVerdict struct {
	// Outcome is allow, require_approval or deny.
	Outcome string `json:"outcome"`
	// Reasons are the rules that fired.
	Reasons []string `json:"reasons,omitempty"`
	// RequiredApprovals are the approver roles needed, in order.
	RequiredApprovals []string `json:"requiredApprovals,omitempty"`
	// BundleVersion is the version of the policy bundle that decided.
	BundleVersion string `json:"bundleVersion,omitempty"`
	// Error is why the policy could not be asked.
	Error string `json:"error,omitempty"`
}

// planEntry is what a run does for one manifest (or one agent to prune).
type planEntry struct {
	Action   string                 `json:"action"`
	Name     string                 `json:"name"`
	Tenant   string                 `json:"tenant"`
	Agent    string                 `json:"agent"`
	Source   string                 `json:"source,omitempty"`
	State    string                 `json:"state,omitempty"`
	Changes  []manifest.FieldChange `json:"changes,omitempty"`
	Warnings []string               `json:"warnings,omitempty"`
	Reason   string                 `json:"reason,omitempty"`
	Server   *serverVerdict         `json:"server,omitempty"`
	Policy   *policyVerdict         `json:"policy,omitempty"`
	Result   string                 `json:"result,omitempty"`

	desired *registryv1.Agent
	etag    string
}

// refused reports whether the registry or policy would refuse the entry, or the run cannot apply it.
func (e *planEntry) refused() bool {
	if e.Action == actionRefuse || (e.Server != nil && !e.Server.OK) {
		return true
	}
	return e.Policy != nil && (e.Policy.Error != "" || (e.Policy.Outcome != "allow" && e.Policy.Outcome != "require_approval"))
}

// planReport is the plan of a manifest set.
type planReport struct {
	Set     string       `json:"set"`
	Entries []*planEntry `json:"entries"`
	Summary planSummary  `json:"summary"`
}

// planSummary counts a plan's entries.
type planSummary struct {
	Create  int `json:"create"`
	Update  int `json:"update"`
	Noop    int `json:"noop"`
	Prune   int `json:"prune"`
	Refused int `json:"refused"`
	Failed  int `json:"failed,omitempty"`
}

func (r *planReport) count() {
	r.Summary = planSummary{Failed: r.Summary.Failed}
	for _, e := range r.Entries {
		switch e.Action {
		case actionCreate:
			r.Summary.Create++
		case actionUpdate:
			r.Summary.Update++
		case actionNoop:
			r.Summary.Noop++
		case actionPrune:
			r.Summary.Prune++
		}
		if e.refused() {
			r.Summary.Refused++
		}
	}
}

// planner decides what applying a manifest set changes.
type planner struct {
	reg           registryv1.RegistryServiceClient
	pol           policyv1.PolicyServiceClient // nil: no policy dry run
	set           string
	defaultTenant string
	reason        string
	now           time.Time
}

// plan reads every manifest's agent, diffs it and asks the registry (validate_only) and, with a
// policy client, the admission policy about each change; with prune also the managed agents of the
// set that no manifest declares.
func (p *planner) plan(ctx context.Context, set *manifest.Set, prune bool) (*planReport, error) {
	rep := &planReport{Set: p.set}
	tenants := []string{p.defaultTenant}
	declared := map[string]bool{}
	for _, m := range set.Manifests {
		tenant := m.TenantOr(p.defaultTenant)
		if !slices.Contains(tenants, tenant) {
			tenants = append(tenants, tenant)
		}
		declared[manifest.AgentName(tenant, m.Metadata.Name)] = true
		e, err := p.planOne(ctx, m, tenant)
		if err != nil {
			return nil, err
		}
		rep.Entries = append(rep.Entries, e)
	}
	if prune {
		for _, tenant := range tenants {
			es, err := p.pruneCandidates(ctx, tenant, declared)
			if err != nil {
				return nil, err
			}
			rep.Entries = append(rep.Entries, es...)
		}
	}
	rep.count()
	return rep, nil
}

// planOne plans one manifest.
func (p *planner) planOne(ctx context.Context, m *manifest.Manifest, tenant string) (*planEntry, error) {
	name := manifest.AgentName(tenant, m.Metadata.Name)
	e := &planEntry{Name: m.Metadata.Name, Tenant: tenant, Agent: name, Source: fmt.Sprintf("%s:%d", m.File, m.Line)}
	got, err := p.reg.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
	switch {
	case status.Code(err) == codes.NotFound:
		e.Action = actionCreate
		e.desired = m.Agent(tenant, p.set, nil, p.now)
		res, err := p.reg.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
			Parent: "tenants/" + tenant, Agent: e.desired, RequestId: manifest.CreateRequestID(m.Metadata.Name), ValidateOnly: true,
		})
		if err := p.verdict(ctx, e, res.GetAgent(), err); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("read %s (%s): %s", m.Metadata.Name, name, describe(err))
	default:
		cur := got.GetAgent()
		e.State = enumName(cur.GetState().String(), "AGENT_STATE_")
		if set, ok := manifest.Managed(cur); !ok || set != p.set {
			e.Action, e.Reason = actionRefuse, "the agent exists and is not managed by this set"
			if ok {
				e.Reason = fmt.Sprintf("the agent is managed by the manifest set %q, not %q", set, p.set)
			}
			return e, nil
		}
		switch cur.GetState() {
		case registryv1.AgentState_AGENT_STATE_RETIRING, registryv1.AgentState_AGENT_STATE_RETIRED,
			registryv1.AgentState_AGENT_STATE_REJECTED, registryv1.AgentState_AGENT_STATE_EXPIRED:
			e.Action = actionRefuse
			e.Reason = fmt.Sprintf("the agent is %s and is not brought back; declare a new agent under another metadata.name", e.State)
			return e, nil
		}
		e.desired = m.Agent(tenant, p.set, cur, p.now)
		e.etag = cur.GetEtag()
		e.Changes = manifest.Diff(e.desired, cur)
		if manifest.KeysDiffer(e.desired, cur) {
			e.Action = actionRefuse
			e.Reason = "the agent's public keys in the registry differ from the manifest's (a key held that the manifest does not declare, or one declared that it does not hold); " +
				"keys change only by rotation (agentctl agents rotate or agents keys add|remove): make the manifest's publicKeys match the agent's, or find out who added a key"
			return e, nil
		}
		if slices.ContainsFunc(e.Changes, func(c manifest.FieldChange) bool { return c.Path == "owner" || c.Path == "sponsor" }) {
			e.Action = actionRefuse
			e.Reason = "the owner or sponsor differs from the registry's; they change only by a transfer with a reason (agentctl agents transfer), not by apply: transfer the agent, then apply"
			return e, nil
		}
		if len(e.Changes) == 0 {
			e.Action = actionNoop
			return e, nil
		}
		e.Action = actionUpdate
		res, err := p.reg.UpdateAgent(ctx, p.updateRequest(e, true))
		if err := p.verdict(ctx, e, res.GetAgent(), err); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// updateRequest is the UpdateAgent of an update entry, with the etag read in this run.
func (p *planner) updateRequest(e *planEntry, validateOnly bool) *registryv1.UpdateAgentRequest {
	return &registryv1.UpdateAgentRequest{
		Agent:        e.desired,
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: manifest.Paths(e.Changes)},
		Etag:         e.etag,
		RequestId:    manifest.UpdateRequestID(e.Name, e.desired, e.etag),
		ValidateOnly: validateOnly,
		Reason:       p.reason,
	}
}

// verdict records the registry's validate_only answer on e and, with a policy client, the policy's
// dry-run decision on the agent as it would be. Only a transport failure is returned as an error.
func (p *planner) verdict(ctx context.Context, e *planEntry, would *registryv1.Agent, err error) error {
	if err != nil {
		if outcomeUnknown(err) {
			return fmt.Errorf("ask the registry about %s: %s", e.Name, describe(err))
		}
		e.Server = &serverVerdict{Error: describe(err)}
		would = e.desired
	} else {
		e.Server = &serverVerdict{OK: true, RiskTier: enumName(would.GetRiskTier().String(), "RISK_TIER_")}
	}
	if p.pol == nil {
		return nil
	}
	e.Policy = p.admission(ctx, e.Tenant, would)
	return nil
}

// admission asks the policy service for a dry-run admission decision on agent (no request id:
// nothing is recorded).
func (p *planner) admission(ctx context.Context, tenant string, agent *registryv1.Agent) *policyVerdict {
	b, err := protojson.Marshal(agent)
	if err != nil {
		return &policyVerdict{Error: err.Error()}
	}
	var s structpb.Struct
	if err := protojson.Unmarshal(b, &s); err != nil {
		return &policyVerdict{Error: err.Error()}
	}
	res, err := p.pol.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{Tenant: tenant, Agent: &s})
	if err != nil {
		return &policyVerdict{Error: describe(err)}
	}
	d := res.GetDecision()
	return &policyVerdict{
		Outcome: enumName(d.GetOutcome().String(), "OUTCOME_"), Reasons: d.GetReasons(),
		RequiredApprovals: d.GetRequiredApprovals(), BundleVersion: d.GetBundleVersion(),
	}
}

// pruneCandidates lists the agents of tenant that this set manages and no manifest declares, in
// a state they can be retired from.
func (p *planner) pruneCandidates(ctx context.Context, tenant string, declared map[string]bool) ([]*planEntry, error) {
	var out []*planEntry
	token := ""
	for {
		res, err := p.reg.ListAgents(ctx, &registryv1.ListAgentsRequest{
			Parent: "tenants/" + tenant, PageSize: 1000, PageToken: token,
			LabelSelectors: []string{manifest.LabelManagedBy + "=" + manifest.ManagedByAgentctl, manifest.LabelSource + "=" + p.set},
		})
		if err != nil {
			return nil, fmt.Errorf("list the agents of tenant %s: %s", tenant, describe(err))
		}
		for _, a := range res.GetAgents() {
			if set, ok := manifest.Managed(a); !ok || set != p.set || declared[a.GetName()] {
				continue // the label filter is the registry's; this is ours
			}
			switch a.GetState() {
			case registryv1.AgentState_AGENT_STATE_PROPOSED, registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_ACTIVE,
				registryv1.AgentState_AGENT_STATE_SUSPENDED, registryv1.AgentState_AGENT_STATE_EXPIRED:
			default:
				continue // retiring, retired or rejected already
			}
			out = append(out, &planEntry{
				Action: actionPrune, Name: a.GetLabels()[manifest.LabelName], Tenant: tenant, Agent: a.GetName(),
				State: enumName(a.GetState().String(), "AGENT_STATE_"), etag: a.GetEtag(),
				Reason: "no manifest of the set declares it any more",
			})
		}
		if token = res.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// printPlan writes the plan as a table with the details of each change, or as JSON/YAML.
func (g *globals) printPlan(rep *planReport, withResult bool) error {
	if g.output != "table" {
		return g.printDoc(rep)
	}
	header := []string{"ACTION", "NAME", "AGENT", "STATE", "CHANGES", "SERVER", "POLICY"}
	if withResult {
		header = []string{"ACTION", "NAME", "AGENT", "CHANGES", "RESULT"}
	}
	t := table{header: header}
	for _, e := range rep.Entries {
		changes := strings.Join(manifest.Paths(e.Changes), ",")
		if changes == "" {
			changes = "-"
		}
		if withResult {
			t.rows = append(t.rows, []string{e.Action, e.Name, e.Agent, changes, e.Result})
			continue
		}
		server, pol := "-", "-"
		if e.Server != nil {
			server = "ok"
			if !e.Server.OK {
				server = "refused"
			}
		}
		if e.Policy != nil {
			pol = e.Policy.Outcome
			if e.Policy.Error != "" {
				pol = "unavailable"
			}
		}
		state := e.State
		if state == "" {
			state = "-"
		}
		t.rows = append(t.rows, []string{e.Action, e.Name, e.Agent, state, changes, server, pol})
	}
	if err := writeTable(g.stdout, t); err != nil {
		return err
	}
	for _, e := range rep.Entries {
		var lines []string
		for _, c := range e.Changes {
			lines = append(lines, fmt.Sprintf("  %s: %s → %s", c.Path, orNone(c.From), orNone(c.To)))
		}
		if e.Reason != "" && e.Action != actionPrune {
			lines = append(lines, "  refused: "+e.Reason)
		}
		for _, w := range e.Warnings {
			lines = append(lines, "  warning: "+w)
		}
		if e.Server != nil && !e.Server.OK {
			lines = append(lines, "  registry: "+e.Server.Error)
		}
		if pv := e.Policy; pv != nil {
			switch {
			case pv.Error != "":
				lines = append(lines, "  policy: cannot be asked: "+pv.Error)
			case pv.Outcome != "allow":
				msg := "  policy: " + pv.Outcome
				if len(pv.RequiredApprovals) > 0 {
					msg += " (approvals: " + strings.Join(pv.RequiredApprovals, ", ") + ")"
				}
				lines = append(lines, msg)
				for _, r := range pv.Reasons {
					lines = append(lines, "    - "+r)
				}
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(g.stdout, "\n%s (%s):\n%s\n", e.Name, e.Agent, strings.Join(lines, "\n"))
		}
	}
	if withResult {
		return nil
	}
	s := rep.Summary
	_, err := fmt.Fprintf(g.stdout, "\nset %s: %d to create, %d to update, %d unchanged, %d to prune; %d refused\n",
		rep.Set, s.Create, s.Update, s.Noop, s.Prune, s.Refused)
	return err
}

func orNone(v string) string {
	if v == "" || v == "[]" || v == "{}" {
		return "(none)"
	}
	return v
}

// newPlanner connects and builds the planner of a run.
func (g *globals) newPlanner(ctx context.Context, mf *manifestFlags, reason string, withPolicy bool) (*planner, *grpc.ClientConn, *manifest.Set, error) {
	setName, err := mf.setName()
	if err != nil {
		return nil, nil, nil, err
	}
	// Offline first: a set with a problem is refused before anything is asked.
	offline, err := mf.load(g.tenant)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, s, err := g.connect(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	tenant := g.tenantOr(s)
	set := offline
	if g.tenant == "" && tenant != "" {
		// Duplicates are judged per tenant: read again with the session's tenant as the default.
		if set, err = mf.load(tenant); err != nil {
			conn.Close()
			return nil, nil, nil, err
		}
	}
	if reason == "" {
		reason = "agentctl apply of the manifest set " + setName
	}
	p := &planner{reg: registryv1.NewRegistryServiceClient(conn), set: setName, defaultTenant: tenant, reason: reason, now: time.Now()}
	if withPolicy {
		p.pol = policyv1.NewPolicyServiceClient(conn)
	}
	return p, conn, set, nil
}

func newPlanCmd(g *globals) *cobra.Command {
	var (
		mf    manifestFlags
		prune bool
	)
	cmd := &cobra.Command{
		Use:   "plan -f DIR",
		Short: "Show what apply would change, with the registry's and the admission policy's verdict on each change",
		Long: `plan compares the manifests with the registry: each agent is created, updated (the fields that
differ), left as it is, or (with --prune) retired because no manifest declares it any more. Each change is
decided by the registry with validate_only and by the admission policy (a dry run on the agent as it would
be); nothing is written. plan exits 2 when the registry or the policy would refuse any change (a policy
DENY), so a pipeline step can block the merge; 1 on any other error; 0 otherwise.`,
		Example: `  agentctl plan -f agents/ --set payments
  agentctl plan -f agents/ --prune -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, conn, set, err := g.newPlanner(cmd.Context(), &mf, "", true)
			if err != nil {
				return err
			}
			defer conn.Close()
			rep, err := p.plan(cmd.Context(), set, prune)
			if err != nil {
				return err
			}
			if err := g.printPlan(rep, false); err != nil {
				return err
			}
			if rep.Summary.Refused > 0 {
				return &exitError{code: exitPlanRefused, err: fmt.Errorf("%d change(s) of set %s would be refused", rep.Summary.Refused, rep.Set)}
			}
			return nil
		},
	}
	mf.register(cmd, true)
	cmd.Flags().BoolVar(&prune, "prune", false, "also show the agents of the set that no manifest declares (apply --prune retires them)")
	return cmd
}

// errNothingApplied marks an apply stopped before it changed anything.
var errNothingApplied = errors.New("nothing was applied")
