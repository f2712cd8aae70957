package workflows

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ListSweepTenants lists every tenant of the registry (paged), except the platform's own tenant
// system, which holds service identities and no agents.
func (a *Activities) ListSweepTenants(ctx context.Context) ([]string, error) {
	var out []string
	token := ""
	for {
		resp, err := a.Registry.ListTenants(ctx, &registryv1.ListTenantsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, classify("registry.ListTenants", err)
		}
		for _, t := range resp.GetTenants() {
			if id := t.GetTenantId(); id != "" && id != authn.SystemTenant {
				out = append(out, id)
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// SweepPageRequest asks a sweep to look at one page of a tenant's agents.
type SweepPageRequest struct {
	// Kind and Action of the sweep (normalized).
	Kind, Action string
	// Tenant whose agents are listed.
	Tenant string
	// PageToken is the registry's page token; empty for the first page.
	PageToken string
	// Now is the run's reference time.
	Now time.Time
	// InactiveDays is the inactivity threshold.
	InactiveDays int
	// ChangeRef is the run's change reference (the ticket of its retirements).
	ChangeRef string
	// RunID is the sweep's workflow id: retirement request ids are derived from it and the agent.
	RunID string
	// FindOnly finds the agents without retiring any: those a deprovisioning sweep would retire get
	// outcome SweepOutcomeCandidate, and the run retires them with RetireSweepAgents once its
	// breaker allows (runs recorded before the breaker retire on the page).
	FindOnly bool `json:",omitempty"`
}

// SweepPageResult is what one page held.
type SweepPageResult struct {
	// Scanned is how many agents the page held; Live how many of them were ACTIVE or SUSPENDED.
	Scanned int
	Live    int `json:",omitempty"`
	// Findings are the agents that matched, with what was done.
	Findings []SweepFinding
	// NextPageToken is the registry's token of the next page; empty on the last.
	NextPageToken string
	// NotEnoughTelemetry counts the agents not judged because the monitor's telemetry of the
	// tenant starts after the inactivity window does (or the monitor has none); CoverageStart is
	// that start (zero when it has none).
	NotEnoughTelemetry int       `json:",omitempty"`
	CoverageStart      time.Time `json:",omitzero"`
}

// SweepPage reads one page of a tenant's agents, finds those that match the sweep, and with
// SweepActionDeprovision retires each (request id <run>/<agent>, so a retried page asks for the same
// retirement again). For the inactivity sweep it asks the monitor when each ACTIVE agent was last
// active: a monitor that cannot answer fails the page (retried), and no agent is ever taken for
// inactive without an answer.
//
// A retried page (attempt > 1) also asks again for the retirement of each agent that is RETIRING or
// RETIRED by now: the registry answers a request id it has handled like the first time, so the
// retirements an earlier attempt made are listed, and refuses the others, which are left out.
func (a *Activities) SweepPage(ctx context.Context, in SweepPageRequest) (SweepPageResult, error) {
	resp, err := a.Registry.ListAgents(ctx, &registryv1.ListAgentsRequest{
		Parent: "tenants/" + in.Tenant, PageSize: SweepPageSize, PageToken: in.PageToken,
	})
	if err != nil {
		return SweepPageResult{}, classify("registry.ListAgents", err)
	}
	retried := activity.IsActivity(ctx) && activity.GetInfo(ctx).Attempt > 1
	out := SweepPageResult{Scanned: len(resp.GetAgents()), NextPageToken: resp.GetNextPageToken()}
	for _, agent := range resp.GetAgents() {
		st := agent.GetState()
		if st == registryv1.AgentState_AGENT_STATE_ACTIVE || st == registryv1.AgentState_AGENT_STATE_SUSPENDED {
			out.Live++
		}
		gone := st == registryv1.AgentState_AGENT_STATE_RETIRING || st == registryv1.AgentState_AGENT_STATE_RETIRED
		var reason string
		if gone {
			// Only a retried page looks at these: was it this run that retired them?
			if !retried || in.Action != SweepActionDeprovision {
				continue
			}
			reason = "retired by an earlier attempt of this run"
		} else {
			m, err := a.sweepMatch(ctx, in, agent)
			if err != nil {
				return SweepPageResult{}, err
			}
			if m.notEnoughTelemetry {
				out.NotEnoughTelemetry++
				out.CoverageStart = m.coverage
				continue
			}
			if !m.found {
				continue
			}
			reason = m.reason
			if m.reportOnly {
				// Reported, never retired (e.g. an agent whose owner is known but has no sponsor).
				out.Findings = append(out.Findings, SweepFinding{Tenant: in.Tenant, Agent: agent.GetName(), AgentID: agent.GetAgentId(),
					State: stateName(st), Reason: reason, Outcome: SweepOutcomeReview})
				continue
			}
		}
		f := SweepFinding{Tenant: in.Tenant, Agent: agent.GetName(), AgentID: agent.GetAgentId(), State: stateName(st), Reason: reason}
		if in.Action != SweepActionDeprovision {
			f.Outcome = SweepOutcomeReview
			out.Findings = append(out.Findings, f)
			continue
		}
		if in.FindOnly {
			if !gone {
				f.Outcome = SweepOutcomeCandidate
				out.Findings = append(out.Findings, f)
			}
			continue
		}
		f.Trigger, f.RequestID = SweepTrigger(in.Kind), requestID(in.RunID, agent.GetAgentId())
		_, err = a.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: agent.GetName(), Reason: clip("sweep "+in.Kind+": "+reason, 1000), Ticket: in.ChangeRef,
			Trigger: f.Trigger, RequestId: f.RequestID,
		})
		switch e := errs.FromStatus(err); {
		case err == nil:
			f.Outcome = SweepOutcomeRetired
		case e.Kind == errs.KindFailedPrecondition && gone:
			// Retired by someone else: not this run's.
			continue
		case e.Kind == errs.KindFailedPrecondition:
			// Retired or rejected since the page was read (e.g. by its TTL run): nothing left to do.
			f.Outcome = SweepOutcomeChanged
		default:
			return SweepPageResult{}, classify("registry.RetireAgent", err)
		}
		out.Findings = append(out.Findings, f)
	}
	return out, nil
}

// sweepMatch is whether an agent matches a sweep, and why.
type sweepMatch struct {
	// reason says why it matched.
	reason string
	// found: it matched.
	found bool
	// reportOnly: it is reported, never retired.
	reportOnly bool
	// notEnoughTelemetry: it was not judged, the monitor's telemetry starting at coverage (zero:
	// none) after the window does.
	notEnoughTelemetry bool
	coverage           time.Time
}

// sweepMatch says whether agent matches the sweep, and why.
func (a *Activities) sweepMatch(ctx context.Context, in SweepPageRequest, agent *registryv1.Agent) (sweepMatch, error) {
	st := agent.GetState()
	activeOrSuspended := st == registryv1.AgentState_AGENT_STATE_ACTIVE || st == registryv1.AgentState_AGENT_STATE_SUSPENDED
	switch in.Kind {
	case SweepExpired:
		// An EXPIRED agent is one whose TTL run recorded the expiry but did not get to its retirement.
		exp := agent.GetExpireTime()
		if (!activeOrSuspended && st != registryv1.AgentState_AGENT_STATE_EXPIRED) || !exp.IsValid() || exp.AsTime().IsZero() || exp.AsTime().After(in.Now) {
			return sweepMatch{}, nil
		}
		return sweepMatch{reason: "expired at " + exp.AsTime().UTC().Format(time.RFC3339), found: true}, nil
	case SweepOrphaned:
		if !activeOrSuspended {
			return sweepMatch{}, nil
		}
		return orphaned(agent), nil
	case SweepInactive:
		if st != registryv1.AgentState_AGENT_STATE_ACTIVE {
			return sweepMatch{}, nil
		}
		return a.inactive(ctx, in, agent)
	default:
		return sweepMatch{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("sweep kind %q is unknown", in.Kind), "INVALID_ARGUMENT", nil)
	}
}

// orphaned matches an agent nobody answers for: one the registry marked orphaned (its owner or
// sponsor departed the tenant's directory), or with no owner and no sponsor. An agent that lacks
// only one of them (the sponsor is optional) is reported, never retired.
func orphaned(agent *registryv1.Agent) sweepMatch {
	noOwner, noSponsor := strings.TrimSpace(agent.GetOwner()) == "", strings.TrimSpace(agent.GetSponsor()) == ""
	switch {
	case agent.GetOrphaned():
		return sweepMatch{reason: clip("orphaned: "+agent.GetOrphanReason(), 500), found: true}
	case noOwner && noSponsor:
		return sweepMatch{reason: "no owner, no sponsor", found: true}
	case noOwner:
		return sweepMatch{reason: "no owner (sponsor " + agent.GetSponsor() + " answers for it): reported only", found: true, reportOnly: true}
	case noSponsor:
		return sweepMatch{reason: "no sponsor (owner " + agent.GetOwner() + " answers for it): reported only", found: true, reportOnly: true}
	}
	return sweepMatch{}
}

// inactive asks the monitor when agent was last active: inactive when that is before the cutoff, or
// when it was never active and was created before the cutoff. An agent is judged only when the
// monitor's telemetry of the tenant covers the whole window (coverage_start_time at or before the
// cutoff): missing telemetry is never taken for inactivity.
func (a *Activities) inactive(ctx context.Context, in SweepPageRequest, agent *registryv1.Agent) (sweepMatch, error) {
	if a.Monitor == nil {
		// Fail closed: without telemetry nothing is known about activity.
		return sweepMatch{}, temporal.NewNonRetryableApplicationError(
			"inactivity sweep: the lifecycle worker has no monitor to ask for activity (configure its address)", "MONITOR_NOT_CONFIGURED", nil)
	}
	cutoff := in.Now.Add(-time.Duration(in.InactiveDays) * 24 * time.Hour)
	usage, err := a.Monitor.GetAgentUsage(ctx, &monitorv1.GetAgentUsageRequest{
		Agent: agent.GetName(), StartTime: timestamppb.New(cutoff), EndTime: timestamppb.New(in.Now),
	})
	if err != nil {
		// Unreachable or failing: retried (refusals fail the run), never taken for "no activity".
		return sweepMatch{}, classify("monitor.GetAgentUsage", err)
	}
	if last := usage.GetLastActiveTime(); last.IsValid() && !last.AsTime().IsZero() && !last.AsTime().Before(cutoff) {
		return sweepMatch{}, nil
	}
	if !covers(usage.GetCoverageStartTime(), cutoff) {
		var coverage time.Time
		if c := usage.GetCoverageStartTime(); c.IsValid() {
			coverage = c.AsTime().UTC()
		}
		return sweepMatch{notEnoughTelemetry: true, coverage: coverage}, nil
	}
	if last := usage.GetLastActiveTime(); last.IsValid() && !last.AsTime().IsZero() {
		return sweepMatch{reason: fmt.Sprintf("no activity since %s (%d days or more)", last.AsTime().UTC().Format(time.RFC3339), in.InactiveDays), found: true}, nil
	}
	created := agent.GetCreateTime()
	if !created.IsValid() || created.AsTime().IsZero() || !created.AsTime().Before(cutoff) {
		return sweepMatch{}, nil
	}
	return sweepMatch{reason: fmt.Sprintf("never active since it was created at %s (%d days or more)", created.AsTime().UTC().Format(time.RFC3339), in.InactiveDays), found: true}, nil
}

// covers says whether telemetry starting at coverage (the monitor's coverage_start_time; empty: no
// telemetry) covers a window starting at start.
func covers(coverage *timestamppb.Timestamp, start time.Time) bool {
	return coverage.IsValid() && !coverage.AsTime().IsZero() && !coverage.AsTime().After(start)
}

// RetireSweepRequest asks to retire the agents a sweep found in one tenant.
type RetireSweepRequest struct {
	// Kind of the sweep (its trigger).
	Kind string
	// ChangeRef is the run's change reference (the ticket of the retirements).
	ChangeRef string
	// RunID is the sweep's workflow id: request ids are derived from it and the agent.
	RunID string
	// Findings are the candidates (SweepOutcomeCandidate) to retire.
	Findings []SweepFinding
	// ExpireFirst has each agent of an expired sweep recorded EXPIRED (ExpireAgent) before its
	// retirement (since versionSweepExpireFirst).
	ExpireFirst bool `json:",omitempty"`
}

// RetireSweepAgents retires each candidate (request id <run>/<agent>, so a retried activity asks for
// the same retirements again and the registry answers those it handled like the first time) and
// returns the findings with their outcome: retired, or changed meanwhile when the agent left the
// state it was found in. With ExpireFirst each agent not found EXPIRED is first recorded EXPIRED
// (request id <run>/<agent>/expire); one the registry finds not expired (its expire_time moved later or was
// removed since the page was read) is changed meanwhile and not retired.
func (a *Activities) RetireSweepAgents(ctx context.Context, in RetireSweepRequest) ([]SweepFinding, error) {
	out := make([]SweepFinding, 0, len(in.Findings))
	for _, f := range in.Findings {
		f.Trigger, f.RequestID = SweepTrigger(in.Kind), requestID(in.RunID, f.AgentID)
		if in.ExpireFirst && f.State != stateName(registryv1.AgentState_AGENT_STATE_EXPIRED) {
			_, err := a.Registry.ExpireAgent(ctx, &registryv1.ExpireAgentRequest{Name: f.Agent, RequestId: requestID(f.RequestID, "expire")})
			switch e := errs.FromStatus(err); {
			case err == nil:
			case e.Kind == errs.KindFailedPrecondition && e.Reason == reasonNotExpired:
				f.Outcome = SweepOutcomeChanged
				out = append(out, f)
				continue
			case e.Kind == errs.KindFailedPrecondition:
				// Already EXPIRED, or no longer expirable: the retirement decides.
			default:
				return nil, classify("registry.ExpireAgent", err)
			}
		}
		_, err := a.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: f.Agent, Reason: clip("sweep "+in.Kind+": "+f.Reason, 1000), Ticket: in.ChangeRef,
			Trigger: f.Trigger, RequestId: f.RequestID,
		})
		switch e := errs.FromStatus(err); {
		case err == nil:
			f.Outcome = SweepOutcomeRetired
		case e.Kind == errs.KindFailedPrecondition:
			f.Outcome = SweepOutcomeChanged
		default:
			return nil, classify("registry.RetireAgent", err)
		}
		out = append(out, f)
	}
	return out, nil
}
