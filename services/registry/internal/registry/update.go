package registry

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// checkPrincipals checks an owner and a sponsor against the tenant's directory, when one is
// configured (empty values are not checked).
func (s *Service) checkPrincipals(tenant, owner, sponsor string) error {
	if s.directory == nil {
		return nil
	}
	if owner != "" {
		if err := s.directory.CheckPrincipal(tenant, "agent.owner", owner); err != nil {
			return err
		}
	}
	if sponsor != "" {
		if err := s.directory.CheckPrincipal(tenant, "agent.sponsor", sponsor); err != nil {
			return err
		}
	}
	return nil
}

// previewAgent decides a command without writing: it returns the agent as the command would leave
// it (as it is, when the command was handled before or changes nothing). The etag of an agent that
// does not exist yet is empty.
func (s *Service) previewAgent(ctx context.Context, tenant, agentID, key string, decide func(*Agent) (*Change, error)) (*Agent, error) {
	events, _, err := s.store.Load(ctx, tenant, AggregateAgent, agentID)
	if err != nil {
		return nil, storeError(err)
	}
	a, err := LoadAgent(tenant, agentID, events)
	if err != nil {
		return nil, errs.Internal(err)
	}
	if a.Handled(key) {
		return a, nil
	}
	ch, err := decide(a)
	if err != nil || ch == nil {
		return a, err
	}
	data, err := proto.Marshal(ch.Data)
	if err != nil {
		return nil, errs.Internal(err)
	}
	version := a.Version
	if err := a.Apply(eventstore.Event{
		ID: "validate-only", Type: ch.Type, Subject: a.Name(), Time: s.now().UTC(),
		Metadata:      eventstore.Metadata{Tenant: tenant},
		AggregateType: AggregateAgent, AggregateID: agentID, Sequence: version,
		DataSchema: string(ch.Data.ProtoReflect().Descriptor().FullName()), Data: data,
	}); err != nil {
		return nil, errs.Internal(err)
	}
	if version == 0 {
		a.view.Etag = ""
	}
	return a, nil
}

// UpdateAgent changes an agent's declared fields (c.Paths) if its etag is c.Etag, and returns the
// agent and the fields that changed. Nothing is written when nothing changes. A change of a
// classification input reclassifies the agent. On a PENDING, ACTIVE or SUSPENDED agent an update
// that escalates it (escalation: more scopes or roles, a higher risk tier, another credential type,
// a later or no expiry, any other policy input) must be admitted by the configured Admission (none
// configured: FailedPrecondition ADMISSION_UNAVAILABLE). With c.ValidateOnly nothing is written and
// the admission is a dry run (DryRun: no policy decision recorded).
func (s *Service) UpdateAgent(ctx context.Context, c UpdateAgent, md eventstore.Metadata) (*registryv1.Agent, []string, error) {
	if err := c.validate(); err != nil {
		return nil, nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, nil, err
	}
	key := commandKey(cmdUpdateAgent, c.Tenant, c.AgentID, c.RequestID)
	ctx = WithUpdateRequestID(ctx, c.RequestID)
	if c.ValidateOnly {
		ctx = WithDryRun(ctx)
	}
	var changed []string
	decide := func(a *Agent) (*Change, error) {
		after, ch, err := a.planUpdate(c, s.now())
		changed = ch
		if err != nil || len(ch) == 0 {
			return nil, err
		}
		if c.RequireOwner != "" {
			if err := checkReservedLabels(a.view.GetLabels(), after.GetLabels()); err != nil {
				return nil, err
			}
		}
		return s.decideUpdate(ctx, a, after, ch, c.Reason)
	}
	if c.ValidateOnly {
		a, err := s.previewAgent(ctx, c.Tenant, c.AgentID, key, decide)
		if err != nil {
			return nil, nil, err
		}
		if a.Handled(key) {
			changed = a.ChangedBy(key)
		}
		return a.View(), changed, nil
	}
	a, err := s.runAgentAggregate(ctx, c.Tenant, c.AgentID, key, md, decide)
	if err != nil {
		return nil, nil, err
	}
	return a.View(), a.ChangedBy(key), nil
}

// decideUpdate checks an update planned on a (after, changing the paths changed) and, when it
// escalates a PENDING, ACTIVE or SUSPENDED agent, asks admission; it returns the agent.updated to
// record. A PENDING agent counts: its provisioning evaluated the agent as registered, and the
// activation takes the version the policy saw (ActivateAgent's etag), so an escalation while it
// waits must be admitted like one after it. When admission is asked, its answer replaces any earlier
// policy override (none in the answer: the derived tier stands).
func (s *Service) decideUpdate(ctx context.Context, a *Agent, after *registryv1.Agent, changed []string, reason string) (*Change, error) {
	before := a.view
	if st := a.State(); st == stPending || st == stActive || st == stSuspended {
		if why := escalation(before, after, changed); why != "" {
			if s.admission == nil {
				return nil, errs.FailedPrecondition(ReasonAdmissionUnavailable,
					fmt.Sprintf("this update %s of a %s agent and needs a policy admission, but none is configured: it is refused", why, stateName(st)))
			}
			cls, err := s.admission.AdmitUpdate(ctx, a.Tenant, proto.CloneOf(before), proto.CloneOf(after))
			if err != nil {
				var e *errs.Error
				if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
					return nil, err
				}
				return nil, errs.Unavailable("ADMISSION_FAILED", "the policy admission of the update could not be decided; retry", err)
			}
			if cls == nil {
				cls = Classify(after)
			}
			after.Classification = cls
			after.RiskTier = EffectiveRiskTier(cls)
		}
	}
	var cls *registryv1.Classification
	if !sameClassification(after.GetClassification(), before.GetClassification()) {
		cls = after.GetClassification()
	}
	ch := AgentUpdated(a.Name(), changed, declared(after), reason, cls)
	return &ch, nil
}

// SubmitAgent submits a PROPOSED agent: it becomes PENDING (agent.submitted) and its provisioning
// starts. Its owner and sponsor are checked against the directory again.
func (s *Service) SubmitAgent(ctx context.Context, c SubmitAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := checkRequestID(c.RequestID); err != nil {
		return nil, err
	}
	if err := s.checkCaller(c.Tenant, c.RequireOwner); err != nil {
		return nil, err
	}
	key := commandKey(cmdSubmitAgent, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) {
		ch, err := a.Submit(c)
		if err != nil {
			return nil, err
		}
		if err := s.checkPrincipals(a.Tenant, a.view.GetOwner(), a.view.GetSponsor()); err != nil {
			return nil, err
		}
		return ch, nil
	})
}

// ExpireAgent records that an agent reached its expire_time: it becomes EXPIRED (agent.expired).
// Before its expire_time, or without one, it is FailedPrecondition NOT_EXPIRED.
func (s *Service) ExpireAgent(ctx context.Context, c ExpireAgent, md eventstore.Metadata) (*registryv1.Agent, error) {
	if err := checkRequestID(c.RequestID); err != nil {
		return nil, err
	}
	key := commandKey(cmdExpireAgent, c.Tenant, c.AgentID, c.RequestID)
	return s.runAgent(ctx, c.Tenant, c.AgentID, key, md, func(a *Agent) (*Change, error) { return a.Expire(s.now()) })
}
