package registry

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Command names of the record's commands, the first part of their idempotency keys.
const (
	cmdUpdateAgent = "UpdateAgent"
	cmdSubmitAgent = "SubmitAgent"
	cmdExpireAgent = "ExpireAgent"
)

// Reasons of the record's refusals.
const (
	// ReasonAdmissionUnavailable is the FailedPrecondition of an escalating update of an ACTIVE or
	// SUSPENDED agent when no admission (policy) is configured: such updates fail closed.
	ReasonAdmissionUnavailable = "ADMISSION_UNAVAILABLE"
	// ReasonEnvironmentImmutable is the FailedPrecondition of a change of environment after PENDING.
	ReasonEnvironmentImmutable = "ENVIRONMENT_IMMUTABLE"
	// ReasonNotExpired is the FailedPrecondition of ExpireAgent before the agent's expire_time.
	ReasonNotExpired = "NOT_EXPIRED"
	// ReasonEtagMismatch is the Aborted reason of a stale etag.
	ReasonEtagMismatch = "ETAG_MISMATCH"
)

// UpdatablePaths are the update_mask paths UpdateAgent accepts (snake_case fields of Agent). The
// owner and sponsor are not among them: they change only with TransferAgentOwnership, which
// records the transfer and its reason and clears an orphaned mark.
var UpdatablePaths = []string{
	"display_name", "purpose", "environment", "autonomy", "identity_model",
	"trust_boundary", "data_sensitivity", "scopes", "roles", "credential_type", "function",
	"decommission_criteria", "labels", "dependencies", "expire_time",
}

// declaredPaths are the caller-declared fields of an agent: UpdatablePaths and the owner and
// sponsor. agent.updated events recorded before the owner and sponsor left UpdatablePaths may
// name them among their changed fields: the fold applies them as recorded.
var declaredPaths = append([]string{"owner", "sponsor"}, UpdatablePaths...)

// neutralPaths are the updatable fields that are no input of the admission policy (descriptions,
// labels, declared dependencies): a change of only these never needs admission.
var neutralPaths = []string{"display_name", "purpose", "decommission_criteria", "labels", "dependencies"}

// setPaths are the repeated fields compared as sets: a change of order only is no change.
var setPaths = []string{"scopes", "roles"}

// HistoryName is the resource name of an agent's history, its audit_ref.
func HistoryName(tenant, agentID string) string { return AgentName(tenant, agentID) + "/history" }

// agentField is the descriptor of Agent's field path.
func agentField(path string) protoreflect.FieldDescriptor {
	return (&registryv1.Agent{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(path))
}

// copyField sets dst's field path to a copy of src's (clearing it when src has none).
func copyField(dst, src *registryv1.Agent, path string) {
	fd := agentField(path)
	if fd == nil {
		return
	}
	d, s := dst.ProtoReflect(), proto.CloneOf(src).ProtoReflect()
	if s.Has(fd) {
		d.Set(fd, s.Get(fd))
	} else {
		d.Clear(fd)
	}
}

// declared returns the caller-settable fields of in (its keys excepted), copied.
func declared(in *registryv1.Agent) *registryv1.Agent {
	out := &registryv1.Agent{}
	for _, p := range declaredPaths {
		copyField(out, in, p)
	}
	return out
}

// sameField reports whether a and b have the same value at path (scopes and roles as sets).
func sameField(a, b *registryv1.Agent, path string) bool {
	if slices.Contains(setPaths, path) {
		x, y := listField(a, path), listField(b, path)
		slices.Sort(x)
		slices.Sort(y)
		return slices.Equal(x, y)
	}
	x, y := &registryv1.Agent{}, &registryv1.Agent{}
	copyField(x, a, path)
	copyField(y, b, path)
	return proto.Equal(x, y)
}

// listField returns a copy of the scopes or roles of a.
func listField(a *registryv1.Agent, path string) []string {
	if path == "roles" {
		return slices.Clone(a.GetRoles())
	}
	return slices.Clone(a.GetScopes())
}

// foldRecord applies agent.updated, agent.submitted or agent.expired to next (a copy the caller
// owns).
func foldRecord(next *registryv1.Agent, e eventstore.Event) error {
	switch e.Type {
	case EventAgentUpdated:
		d, err := eventstore.DecodeAs[*registryv1.AgentUpdated](e)
		if err != nil {
			return err
		}
		for _, p := range d.GetChangedFields() {
			if slices.Contains(declaredPaths, p) {
				copyField(next, d.GetAgent(), p)
			}
		}
		if c := d.GetClassification(); c != nil {
			next.Classification = c
			next.RiskTier = EffectiveRiskTier(c)
		}
	case EventAgentSubmitted:
		if _, err := eventstore.DecodeAs[*registryv1.AgentSubmitted](e); err != nil {
			return err
		}
		next.State = registryv1.AgentState_AGENT_STATE_PENDING
		next.StateReason = ""
	case EventAgentExpired:
		d, err := eventstore.DecodeAs[*registryv1.AgentExpired](e)
		if err != nil {
			return err
		}
		next.State = registryv1.AgentState_AGENT_STATE_EXPIRED
		next.StateReason = "expired"
		if t := d.GetExpireTime(); t.IsValid() {
			next.StateReason = "expired at " + t.AsTime().UTC().Format(time.RFC3339)
		}
	}
	return nil
}

// UpdateAgent changes an agent's declared fields.
type UpdateAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Agent carries the new values; only the fields named by Paths are read.
	Agent *registryv1.Agent
	// Paths are the update_mask paths, each one of UpdatablePaths.
	Paths []string
	// Etag must equal the agent's current etag (required).
	Etag string
	// RequestID is the idempotency key.
	RequestID string
	// ValidateOnly decides without writing.
	ValidateOnly bool
	// Reason says why (optional), recorded with the change.
	Reason string
	// RequireOwner, when set, is the owner the agent must have for the caller to update it.
	RequireOwner string
}

func (c *UpdateAgent) validate() error {
	if c.Agent == nil {
		return invalid("agent", "is required")
	}
	if len(c.Paths) == 0 {
		return invalid("update_mask", "is required: name the fields to change (one or more of "+strings.Join(UpdatablePaths, ", ")+")")
	}
	var paths []string
	for _, p := range c.Paths {
		if !slices.Contains(UpdatablePaths, p) {
			return invalid("update_mask", fmt.Sprintf("path %s cannot be updated (updatable: %s; keys change with AddAgentKey/RemoveAgentKey, owner and sponsor with TransferAgentOwnership, the state with its own commands)",
				clip(p), strings.Join(UpdatablePaths, ", ")))
		}
		if !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	c.Paths = paths
	if c.Etag == "" {
		return invalid("etag", "is required: pass the etag of the agent as last read")
	}
	if err := checkText("reason", c.Reason, false, maxUpdateReason); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

// escalation says why an update of before into after needs admission ("" when it does not): it
// adds scopes or roles, raises the risk tier, changes the credential type, or changes any other
// input of the admission policy (environment, autonomy, identity model, trust boundary, data
// sensitivity, function), or extends or clears the expiry. Only removals of scopes or roles, an
// earlier expiry and the neutralPaths need none.
func escalation(before, after *registryv1.Agent, changed []string) string {
	var why []string
	if added := addedTo(before.GetScopes(), after.GetScopes()); len(added) > 0 {
		why = append(why, "adds scopes "+strings.Join(added, ", "))
	}
	if added := addedTo(before.GetRoles(), after.GetRoles()); len(added) > 0 {
		why = append(why, "adds roles "+strings.Join(added, ", "))
	}
	if after.GetRiskTier() > before.GetRiskTier() {
		why = append(why, fmt.Sprintf("raises the risk tier from %s to %s",
			enumShort(before.GetRiskTier().String(), "RISK_TIER_"), enumShort(after.GetRiskTier().String(), "RISK_TIER_")))
	}
	if after.GetCredentialType() != before.GetCredentialType() {
		why = append(why, "changes the credential type")
	}
	if expiryExtended(before, after) {
		why = append(why, "extends or clears the expiry")
	}
	var inputs []string
	for _, p := range changed {
		switch {
		case slices.Contains(neutralPaths, p), p == "scopes", p == "roles", p == "credential_type", p == "expire_time":
			// judged above (removals and an earlier expiry need no admission)
		default:
			inputs = append(inputs, p)
		}
	}
	if len(inputs) > 0 {
		why = append(why, "changes "+strings.Join(inputs, ", "))
	}
	return strings.Join(why, "; ")
}

// expiryExtended reports whether after expires later than before, or not at all while before did.
func expiryExtended(before, after *registryv1.Agent) bool {
	b, a := before.GetExpireTime(), after.GetExpireTime()
	if b == nil || !b.IsValid() {
		return false
	}
	return a == nil || !a.IsValid() || a.AsTime().After(b.AsTime())
}

// addedTo returns the values of after that are not in before.
func addedTo(before, after []string) []string {
	var out []string
	for _, v := range after {
		if !slices.Contains(before, v) {
			out = append(out, v)
		}
	}
	return out
}

// planUpdate decides what an update changes: the agent after it (classified again) and the paths
// that changed, in UpdatablePaths order (none: nothing to write). It checks the caller's ownership,
// the etag, the state machine, the new values and the immutability of the environment after
// PENDING; admission and the directory are the service's.
func (a *Agent) planUpdate(c UpdateAgent, now time.Time) (*registryv1.Agent, []string, error) {
	if !a.Exists() {
		return nil, nil, a.notFound()
	}
	if c.RequireOwner != "" && a.view.GetOwner() != c.RequireOwner {
		return nil, nil, errs.PermissionDenied("NOT_OWNER", "only the agent's owner, a tenant-admin or a platform-admin may update it")
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, nil, err
	}
	if err := a.allow(CmdUpdate); err != nil {
		return nil, nil, err
	}
	if err := validateFields(c.Agent, c.Paths, now); err != nil {
		return nil, nil, err
	}
	before := a.view
	after := proto.CloneOf(before)
	var changed []string
	for _, p := range UpdatablePaths {
		if !slices.Contains(c.Paths, p) || sameField(before, c.Agent, p) {
			continue
		}
		copyField(after, c.Agent, p)
		changed = append(changed, p)
	}
	if slices.Contains(changed, "environment") && a.State() != stProposed && a.State() != stPending {
		return nil, nil, errs.FailedPrecondition(ReasonEnvironmentImmutable,
			fmt.Sprintf("the environment of an agent in state %s cannot change: each environment has its own identity (register a new agent for %s)",
				stateName(a.State()), enumShort(c.Agent.GetEnvironment().String(), "ENVIRONMENT_"))).
			WithMetadata("state", stateName(a.State()))
	}
	cls := reclassify(after, before.GetClassification())
	after.Classification = cls
	after.RiskTier = EffectiveRiskTier(cls)
	return after, changed, nil
}

// Submit decides the submission of a PROPOSED agent: it becomes PENDING.
func (a *Agent) Submit(c SubmitAgent) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if c.RequireOwner != "" && a.view.GetOwner() != c.RequireOwner {
		return nil, errs.PermissionDenied("NOT_OWNER", "only the agent's owner, a tenant-admin or a platform-admin may submit it")
	}
	if err := a.checkEtag(c.Etag); err != nil {
		return nil, err
	}
	if err := a.allow(CmdSubmit); err != nil {
		return nil, err
	}
	ch := AgentSubmitted(a.Name())
	return &ch, nil
}

// Expire decides an expiry at time now: the agent must have an expire_time at or before now.
func (a *Agent) Expire(now time.Time) (*Change, error) {
	if !a.Exists() {
		return nil, a.notFound()
	}
	if err := a.allow(CmdExpire); err != nil {
		return nil, err
	}
	et := a.view.GetExpireTime()
	if et == nil || !et.IsValid() {
		return nil, errs.FailedPrecondition(ReasonNotExpired, "the agent has no expire_time: it does not expire")
	}
	if now.Before(et.AsTime()) {
		return nil, errs.FailedPrecondition(ReasonNotExpired,
			fmt.Sprintf("the agent expires at %s, not yet", et.AsTime().UTC().Format(time.RFC3339))).
			WithMetadata("expire_time", et.AsTime().UTC().Format(time.RFC3339))
	}
	ch := AgentExpired(a.Name(), et)
	return &ch, nil
}

// SubmitAgent submits a PROPOSED agent.
type SubmitAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// Etag, if set, must equal the agent's current etag.
	Etag string
	// RequestID is the idempotency key.
	RequestID string
	// RequireOwner, when set, is the owner the agent must have for the caller to submit it.
	RequireOwner string
}

// ExpireAgent records that an agent reached its expire_time.
type ExpireAgent struct {
	// Tenant and AgentID name the agent.
	Tenant, AgentID string
	// RequestID is the idempotency key.
	RequestID string
}
