package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/workflows"
)

// EventAlertRaised is the type of the monitor's alert events on stream ALERTS.
const EventAlertRaised = "alert.raised"

// AlertsConsumer is the durable consumer on stream ALERTS shared by every replica.
const AlertsConsumer = "lifecycle-incident-alerts"

// AlertConcurrency bounds how many alerts the consumer handles at once: each is one start of an
// independent run (a round trip to Temporal), so a burst of alerts starts its runs in parallel.
const AlertConcurrency = 16

// AlertSubjects are the subjects of the events HandleAlert handles.
var AlertSubjects = []string{"alerts.>"}

// KindIncident is the kind of an incident run.
const KindIncident Kind = 3

// Escalation says how long each decider of an incident may take before the run hands the decision on.
type Escalation struct {
	// OwnerFor is the owner's time (default workflows.DefaultIncidentOwnerFor).
	OwnerFor time.Duration
	// SponsorFor is the sponsor's time (default workflows.DefaultIncidentSponsorFor).
	SponsorFor time.Duration
	// SecurityRemindEvery is how often security is reminded once the incident waits for it (default
	// workflows.DefaultIncidentSecurityRemindEvery).
	SecurityRemindEvery time.Duration
}

// IncidentTemporal is the part of the Temporal client incidents use (client.Client implements it).
type IncidentTemporal interface {
	Temporal
	ListWorkflow(ctx context.Context, request *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error)
}

// IncidentsConfig configures Incidents.
type IncidentsConfig struct {
	// Service starts the runs (its Temporal client and task queue). Required.
	Service *Service
	// Temporal lists and steers the runs (the same client as the Service's). Required.
	Temporal IncidentTemporal
	// Escalation is the default escalation of every tenant.
	Escalation Escalation
	// Tenants overrides Escalation per tenant.
	Tenants map[string]Escalation
	// Policy decides each alert's actions before its run starts (IncidentInput.Actions); nil is the
	// built-in table. The worker's Activities.IncidentPolicy must be the same.
	Policy *workflows.IncidentPolicy
}

// Incidents starts incident runs from alerts, lists them and forwards decisions to them.
type Incidents struct {
	svc      *Service
	temporal IncidentTemporal
	def      Escalation
	tenants  map[string]Escalation
	policy   *workflows.IncidentPolicy
}

// NewIncidents returns Incidents.
func NewIncidents(cfg IncidentsConfig) (*Incidents, error) {
	switch {
	case cfg.Service == nil:
		return nil, errors.New("lifecycle: IncidentsConfig.Service is required")
	case cfg.Temporal == nil:
		return nil, errors.New("lifecycle: IncidentsConfig.Temporal is required")
	}
	for t, e := range cfg.Tenants {
		if e.OwnerFor < 0 || e.SponsorFor < 0 || e.SecurityRemindEvery < 0 {
			return nil, fmt.Errorf("lifecycle: incident escalation of tenant %s: durations must not be negative", t)
		}
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("lifecycle: %w", err)
	}
	return &Incidents{svc: cfg.Service, temporal: cfg.Temporal, def: cfg.Escalation, tenants: cfg.Tenants, policy: cfg.Policy}, nil
}

// escalation is tenant's escalation: its override, else the default, else the workflow defaults.
func (i *Incidents) escalation(tenant string) Escalation {
	e := i.def
	if o, ok := i.tenants[tenant]; ok {
		if o.OwnerFor > 0 {
			e.OwnerFor = o.OwnerFor
		}
		if o.SponsorFor > 0 {
			e.SponsorFor = o.SponsorFor
		}
		if o.SecurityRemindEvery > 0 {
			e.SecurityRemindEvery = o.SecurityRemindEvery
		}
	}
	return e
}

// validAlertID: an alert id is one workflow id token (the monitor's are UUIDs).
func validAlertID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' || r == '/' })
}

// HandleAlert starts the incident run of an alert.raised event, under workflow id
// incident/{tenant}/{alert_id}: a redelivered alert starts nothing new (an existing run is success).
// It decides the alert's actions with the incident policy and passes them in the run's input, so
// that the run suspends in its first step.
// Other event types are ignored. An alert that cannot be decoded, names another tenant than its
// envelope, or has no usable id is eventstore.Permanent.
func (i *Incidents) HandleAlert(ctx context.Context, ev eventstore.Event) error {
	if ev.Type != EventAlertRaised {
		return nil
	}
	msg, err := decode[*monitorv1.AlertRaised](ev)
	if err != nil {
		return err
	}
	a := msg.GetAlert()
	tenant := a.GetTenant()
	switch {
	case !authn.ValidTenant(tenant):
		return eventstore.Permanent(fmt.Errorf("alert %s: tenant %q is not valid", ev.ID, tenant))
	case ev.Metadata.Tenant != "" && ev.Metadata.Tenant != tenant:
		return eventstore.Permanent(fmt.Errorf("alert %s: tenant %s is not the event's tenant %s", ev.ID, tenant, ev.Metadata.Tenant))
	case !validAlertID(a.GetAlertId()):
		return eventstore.Permanent(fmt.Errorf("alert %s: alert id %q is not usable in a workflow id", ev.ID, a.GetAlertId()))
	case a.GetAgent() == "":
		return eventstore.Permanent(fmt.Errorf("alert %s: no agent", ev.ID))
	}
	known := a.GetAgentKnown()
	agentID := ""
	if known {
		t, id, ok := workflows.ParseAgentName(a.GetAgent())
		if !ok || t != tenant {
			return eventstore.Permanent(fmt.Errorf("alert %s: agent %q is not an agent of tenant %s", ev.ID, a.GetAgent(), tenant))
		}
		agentID = id
	}
	severity := strings.ToLower(strings.TrimPrefix(a.GetSeverity().String(), "ALERT_SEVERITY_"))
	esc := i.escalation(tenant)
	in := workflows.IncidentInput{
		Tenant: tenant, AlertID: a.GetAlertId(), Agent: a.GetAgent(), AgentID: agentID, AgentKnown: known,
		Detector: a.GetDetector(), Severity: severity, RiskTier: a.GetRiskTier(), Summary: a.GetSummary(),
		Owner: a.GetOwner(), Sponsor: a.GetSponsor(), EventID: ev.ID, OwnerFor: esc.OwnerFor, SponsorFor: esc.SponsorFor,
		SecurityRemindEvery: esc.SecurityRemindEvery,
	}
	in.Actions = i.policy.Decide(workflows.IncidentPolicyRequest{
		Tenant: tenant, Severity: severity, RiskTier: in.RiskTier, Detector: in.Detector, AgentKnown: known,
	})
	spec := runSpec{
		id: workflows.IncidentWorkflowID(tenant, a.GetAlertId()), name: workflows.IncidentWorkflowName,
		tenant: tenant, agentID: agentID, tier: a.GetRiskTier(), stage: workflows.StageIncidentPolicy, eventID: ev.ID,
		in: in, event: ev.Type, md: ev.Metadata, eager: true,
		memo: map[string]string{"agent": a.GetAgent(), "alert_id": a.GetAlertId(), "detector": a.GetDetector(), "severity": severity},
	}
	return i.svc.startFromEvent(ctx, spec)
}

// Incident is one incident run as the API shows it.
type Incident struct {
	// Run is the run.
	Run Run
	// Agent is the agent's resource name (or the unknown agent as seen).
	Agent string
	// Alert is the alert's resource name.
	Alert string
	// Detector and Severity describe the alert.
	Detector, Severity string
	// Actions are the actions taken so far.
	Actions []string
	// Decider is who is asked to decide now, while open.
	Decider string
	// Outcome is restored, retired or notified once closed.
	Outcome string
}

// List returns a page of the tenant's incident runs, newest first, only running ones with openOnly.
func (i *Incidents) List(ctx context.Context, tenant string, openOnly bool, pageSize int, pageToken string) ([]Incident, string, error) {
	if !authn.ValidTenant(tenant) {
		return nil, "", errs.InvalidArgument("parent", "must be tenants/{tenant}")
	}
	resp, err := listRuns(ctx, i.temporal, workflows.IncidentWorkflowName, tenant, openOnly, "", pageSize, pageToken, "incident runs")
	if err != nil {
		return nil, "", err
	}
	out := make([]Incident, 0, len(resp.GetExecutions()))
	for _, e := range resp.GetExecutions() {
		inc := Incident{Run: Run{
			WorkflowID: e.GetExecution().GetWorkflowId(), RunID: e.GetExecution().GetRunId(), Kind: KindIncident,
			StartTime: e.GetStartTime().AsTime(),
		}}
		fromMemo(e.GetMemo(), &inc)
		if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			if st, err := i.status(ctx, inc.Run.WorkflowID, inc.Run.RunID); err == nil {
				inc.apply(st)
			}
		} else {
			inc.Run.Completed = true
			if e.GetCloseTime() != nil {
				inc.Run.CloseTime = e.GetCloseTime().AsTime()
			}
			inc.Run.Stage = workflows.StageDone
			i.closed(ctx, e.GetStatus(), &inc)
		}
		out = append(out, inc)
	}
	return out, nextPageToken(resp), nil
}

// fromMemo fills the alert's description from the run's memo.
func fromMemo(m *commonpb.Memo, inc *Incident) {
	get := func(k string) string {
		var v string
		if p := m.GetFields()[k]; p != nil {
			_ = converter.GetDefaultDataConverter().FromPayload(p, &v)
		}
		return v
	}
	inc.Agent, inc.Detector, inc.Severity = get("agent"), get("detector"), get("severity")
	if t, _, ok := strings.Cut(strings.TrimPrefix(inc.Run.WorkflowID, "incident/"), "/"); ok {
		inc.Alert = workflows.AlertName(t, get("alert_id"))
	}
}

// apply takes a running run's status.
func (inc *Incident) apply(st workflows.IncidentStatus) {
	inc.Run.Stage, inc.Run.WaitingFor, inc.Run.ApprovalStep = st.Stage, st.WaitingFor, st.Decider
	inc.Actions, inc.Decider, inc.Outcome = st.Taken, st.Decider, st.Outcome
	if inc.Agent == "" {
		inc.Agent, inc.Detector, inc.Severity = st.Agent, st.Detector, st.Severity
	}
}

// closed fills a closed run's outcome from its result.
func (i *Incidents) closed(ctx context.Context, status enumspb.WorkflowExecutionStatus, inc *Incident) {
	if status != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		inc.Run.Result = i.svc.result(ctx, status, inc.Run.WorkflowID, inc.Run.RunID)
		return
	}
	var res workflows.IncidentResult
	if err := i.temporal.GetWorkflow(ctx, inc.Run.WorkflowID, inc.Run.RunID).Get(ctx, &res); err != nil {
		inc.Run.Result = "completed"
		return
	}
	inc.Run.Result, inc.Outcome, inc.Actions = res.Result, res.Result, res.Taken
}

func (i *Incidents) status(ctx context.Context, id, runID string) (workflows.IncidentStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	v, err := i.temporal.QueryWorkflow(ctx, id, runID, workflows.StatusQuery)
	if err != nil {
		return workflows.IncidentStatus{}, err
	}
	var st workflows.IncidentStatus
	return st, v.Get(&st)
}

// Decision is one decision on an incident submitted through the API.
type Decision struct {
	// Agent is the agent's resource name.
	Agent string
	// AlertID is the incident's alert id.
	AlertID string
	// Restore is true to restore, false to retire.
	Restore bool
	// Comment is recorded.
	Comment string
	// Token is the caller's approval token for the run, its current step and the decision. Required.
	Token string
	// RequestID identifies the submission (the update id); empty makes up a fresh one.
	RequestID string
}

// Decide forwards p's decision to the incident run (update "decide") and returns the incident after
// it. NotFound for an unknown incident (or one of another agent); FailedPrecondition when the run is
// not waiting for a decision or refuses it (reason APPROVAL_REFUSED, saying why).
func (i *Incidents) Decide(ctx context.Context, p *authn.Principal, d Decision) (Incident, error) {
	tenant, _, err := ParseAgent("agent", d.Agent)
	if err != nil {
		return Incident{}, err
	}
	if !validAlertID(d.AlertID) {
		return Incident{}, errs.InvalidArgument("alert_id", "must be the alert's id")
	}
	if d.Token == "" {
		return Incident{}, errs.InvalidArgument("approval_token", "is required: get one with IssuerService.IssueApprovalToken for the incident run, its step and the decision")
	}
	updateID, err := callerUpdateID(p, d.RequestID)
	if err != nil {
		return Incident{}, err
	}
	if err := checkDecider(ctx, i.svc.registry, p, d.Agent); err != nil {
		return Incident{}, err
	}
	id := workflows.IncidentWorkflowID(tenant, d.AlertID)
	notFound := errs.NotFound("INCIDENT_NOT_FOUND", "no incident of this agent for this alert").WithMetadata("alert_id", d.AlertID)
	st, err := i.status(ctx, id, "")
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return Incident{}, notFound
	case err != nil:
		return Incident{}, temporalError("query incident", err)
	case st.Agent != d.Agent:
		return Incident{}, notFound
	case st.Stage != workflows.StageIncidentDecide || st.Decision != nil:
		return Incident{}, errs.FailedPrecondition("NOT_WAITING_FOR_DECISION", "the incident run is not waiting for a decision (stage "+st.Stage+")")
	}
	decision := workflows.DecisionRetire
	if d.Restore {
		decision = workflows.DecisionRestore
	}
	var after workflows.IncidentStatus
	err = updateRun(ctx, i.temporal, updateID, id, workflows.DecideUpdate,
		workflows.IncidentDecision{Token: d.Token, Decision: decision, Comment: d.Comment, SubmittedBy: p.ID}, &after)
	if err != nil {
		if workflows.IsApprovalRefused(err) {
			return Incident{}, errs.FailedPrecondition("APPROVAL_REFUSED", approvalMessage(err))
		}
		if errors.As(err, &nf) {
			return Incident{}, errs.FailedPrecondition("NOT_WAITING_FOR_DECISION", "the incident run has finished")
		}
		return Incident{}, temporalError("decide incident", err)
	}
	inc := Incident{Run: Run{WorkflowID: id, Kind: KindIncident}, Alert: workflows.AlertName(tenant, d.AlertID)}
	inc.apply(after)
	if r, ok, err := i.svc.describe(ctx, KindIncident, id); err == nil && ok {
		inc.Run.RunID, inc.Run.StartTime, inc.Run.Completed, inc.Run.CloseTime = r.RunID, r.StartTime, r.Completed, r.CloseTime
	}
	inc.Run.Stage = after.Stage
	return inc, nil
}
