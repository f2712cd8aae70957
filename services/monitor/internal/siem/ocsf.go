// Package siem exports alerts and audit-relevant events to a SIEM as OCSF 1.1 JSON: every event
// goes to the NATS subject siem.ocsf.<tenant> and, when configured, to a webhook that receives it
// signed (HMAC-SHA256), retried with exponential backoff and jitter, and dead-lettered to the
// SIEM_DLQ stream when it cannot be delivered. docs/siem.md describes the mapping and the receiver
// side.
package siem

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// OCSF constants of the events the export produces.
const (
	// SchemaVersion is the OCSF schema version the events follow (metadata.version).
	SchemaVersion = "1.1.0"
	// ProductName is metadata.product.name and metadata.product.vendor_name.
	ProductName = "agentid"

	// ClassDetectionFinding is the OCSF class of alerts (Findings category).
	ClassDetectionFinding = 2004
	// ClassAccountChange is the OCSF class of agent lifecycle events and token revocations (IAM category).
	ClassAccountChange = 3001

	categoryFindings = 2
	categoryIAM      = 3
)

// OCSF severity_id values.
const (
	SeverityUnknown       = 0
	SeverityInformational = 1
	SeverityLow           = 2
	SeverityMedium        = 3
	SeverityHigh          = 4
	SeverityCritical      = 5
)

// Account Change activity_id values used here.
const (
	ActivityCreate  = 1
	ActivityEnable  = 2
	ActivityDisable = 5
	ActivityDelete  = 6
	ActivityOther   = 99
)

// Event is one OCSF event as exported: the base attributes plus those of the Detection Finding and
// Account Change classes the export fills.
type Event struct {
	// ActivityID, CategoryUID, ClassUID and TypeUID (class_uid*100+activity_id) classify the event.
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	TypeUID      int    `json:"type_uid"`
	TypeName     string `json:"type_name"`
	// Time is when it happened, Unix milliseconds.
	Time int64 `json:"time"`
	// SeverityID and Severity rank the event.
	SeverityID int    `json:"severity_id"`
	Severity   string `json:"severity"`
	// StatusID and Status: a finding's status (1 New), an account change's outcome (1 Success).
	StatusID int    `json:"status_id"`
	Status   string `json:"status"`
	// Message is a one-line summary.
	Message string `json:"message,omitempty"`
	// Metadata names the product, schema version, event uid and tenant.
	Metadata Metadata `json:"metadata"`
	// FindingInfo describes an alert (Detection Finding).
	FindingInfo *FindingInfo `json:"finding_info,omitempty"`
	// Evidences are an alert's measurements (Detection Finding).
	Evidences []Evidence `json:"evidences,omitempty"`
	// Resources is the agent an alert is about (Detection Finding).
	Resources []Resource `json:"resources,omitempty"`
	// User is the account that changed (Account Change): the agent or OAuth client.
	User *User `json:"user,omitempty"`
	// Actor is who made the change (Account Change).
	Actor *Actor `json:"actor,omitempty"`
	// Unmapped carries agentid facts OCSF has no attribute for.
	Unmapped map[string]any `json:"unmapped,omitempty"`
}

// Metadata is the OCSF metadata object.
type Metadata struct {
	// UID is the source event's CloudEvents id (an alert's alert_id): receivers deduplicate on it.
	UID string `json:"uid"`
	// Version is SchemaVersion.
	Version string `json:"version"`
	// Product is agentid.
	Product Product `json:"product"`
	// TenantUID is the agentid tenant.
	TenantUID string `json:"tenant_uid"`
	// EventCode is the agentid event type (alert.raised, agent.suspended ...).
	EventCode string `json:"event_code"`
	// CorrelationUID is the originating request id, if any.
	CorrelationUID string `json:"correlation_uid,omitempty"`
	// LoggedTime is when agentid recorded the event, Unix milliseconds.
	LoggedTime int64 `json:"logged_time"`
}

// Product is the OCSF product object.
type Product struct {
	// Name and VendorName are ProductName.
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	// Feature is the agentid service that produced the event.
	Feature *Feature `json:"feature,omitempty"`
}

// Feature is the OCSF feature object.
type Feature struct {
	// Name is the service, e.g. "agentid/monitor".
	Name string `json:"name"`
}

// FindingInfo is the OCSF finding_info object of a Detection Finding.
type FindingInfo struct {
	// UID is the alert id.
	UID string `json:"uid"`
	// Title is the alert's summary.
	Title string `json:"title"`
	// Desc is the evidence explanations, one per line.
	Desc string `json:"desc,omitempty"`
	// Types holds the detector name.
	Types []string `json:"types"`
	// CreatedTime is when the detector fired; FirstSeenTime and LastSeenTime bound the events it is
	// about (Unix milliseconds, 0 when unknown).
	CreatedTime   int64 `json:"created_time,omitempty"`
	FirstSeenTime int64 `json:"first_seen_time,omitempty"`
	LastSeenTime  int64 `json:"last_seen_time,omitempty"`
	// Analytic is the detector.
	Analytic Analytic `json:"analytic"`
	// RelatedEvents are the telemetry events that triggered the alert.
	RelatedEvents []RelatedEvent `json:"related_events,omitempty"`
	// DataSources names where the observations come from.
	DataSources []string `json:"data_sources,omitempty"`
}

// Analytic is the OCSF analytic object: the detector.
type Analytic struct {
	// Name is the detector's name.
	Name string `json:"name"`
	// TypeID is 1 Rule, 2 Behavioral or 3 Statistical; Type its caption.
	TypeID int    `json:"type_id"`
	Type   string `json:"type"`
}

// RelatedEvent is the OCSF related_event object: one telemetry event id.
type RelatedEvent struct {
	// UID is the telemetry event's id.
	UID string `json:"uid"`
}

// Evidence is one OCSF evidence artifact; Data holds an alert's measurement.
type Evidence struct {
	// Data is the measurement: metric, baseline, observed, score, threshold, value, explanation.
	Data map[string]any `json:"data"`
}

// Resource is the OCSF resource_details object: the agent.
type Resource struct {
	// UID is the agent's resource name; Name the same; Type "ai_agent".
	UID  string `json:"uid"`
	Name string `json:"name"`
	Type string `json:"type"`
	// Owner is the agent's owner.
	Owner *User `json:"owner,omitempty"`
	// Labels are environment:<env> and risk_tier:<tier>.
	Labels []string `json:"labels,omitempty"`
	// Data holds sponsor, risk tier, environment and whether the registry knows the agent.
	Data map[string]any `json:"data,omitempty"`
}

// User is the OCSF user object: a person, an agent or an OAuth client.
type User struct {
	// UID is the principal's id (an agent's resource name, a client id, a user id).
	UID string `json:"uid"`
	// Name is a display name, if known.
	Name string `json:"name,omitempty"`
	// TypeID is 1 User, 3 System or 99 Other; Type its caption ("AI Agent", "OAuth Client" ...).
	TypeID int    `json:"type_id"`
	Type   string `json:"type"`
}

// Actor is the OCSF actor object.
type Actor struct {
	// User is who acted.
	User *User `json:"user"`
}

// errSkip marks an event the export does not send (an event type it has no mapping for).
var errSkip = errors.New("siem: event not exported")

// Map converts a stored event into its OCSF event; ok is false for events the export does not
// send (other agent events, revocations of a single token by its client ...). An event whose
// payload cannot be decoded, or whose tenant is not a subject token, is an error.
func Map(ev eventstore.Event) (out *Event, ok bool, err error) {
	if err := checkTenant(ev.Metadata.Tenant); err != nil {
		return nil, false, fmt.Errorf("siem: event %s (%s): %w", ev.ID, ev.Type, err)
	}
	switch {
	case ev.Type == "alert.raised":
		out, err = mapAlert(ev)
	case strings.HasPrefix(ev.Type, "agent."):
		out, err = mapAgent(ev)
	case ev.Type == eventstore.TypeTokensRevoked:
		out, err = mapRevocation(ev)
	default:
		err = errSkip
	}
	switch {
	case errors.Is(err, errSkip):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("siem: event %s (%s): %w", ev.ID, ev.Type, err)
	}
	return out, true, nil
}

// checkTenant refuses a tenant that cannot be one NATS subject token.
func checkTenant(t string) error {
	if t == "" || strings.ContainsAny(t, ".*> \t\r\n") || len(t) > 63 {
		return fmt.Errorf("tenant %q is not a valid subject token", t)
	}
	return nil
}

// base fills the attributes every exported event has.
func base(ev eventstore.Event, class, activity int, activityName string) *Event {
	e := &Event{
		ActivityID:   activity,
		ActivityName: activityName,
		ClassUID:     class,
		TypeUID:      class*100 + activity,
		Time:         ev.Time.UnixMilli(),
		Metadata: Metadata{
			UID: ev.ID, Version: SchemaVersion,
			Product:        Product{Name: ProductName, VendorName: ProductName},
			TenantUID:      ev.Metadata.Tenant,
			EventCode:      ev.Type,
			CorrelationUID: ev.Metadata.CorrelationID,
			LoggedTime:     ev.Time.UnixMilli(),
		},
	}
	if ev.Source != "" {
		e.Metadata.Product.Feature = &Feature{Name: ev.Source}
	}
	switch class {
	case ClassDetectionFinding:
		e.CategoryUID, e.CategoryName, e.ClassName = categoryFindings, "Findings", "Detection Finding"
	case ClassAccountChange:
		e.CategoryUID, e.CategoryName, e.ClassName = categoryIAM, "Identity & Access Management", "Account Change"
	}
	e.TypeName = e.ClassName + ": " + activityName
	return e
}

// severityName is the caption of an OCSF severity_id.
func severityName(id int) string {
	switch id {
	case SeverityInformational:
		return "Informational"
	case SeverityLow:
		return "Low"
	case SeverityMedium:
		return "Medium"
	case SeverityHigh:
		return "High"
	case SeverityCritical:
		return "Critical"
	default:
		return "Unknown"
	}
}

func setSeverity(e *Event, id int) { e.SeverityID, e.Severity = id, severityName(id) }

// alertSeverity maps an alert severity to OCSF.
func alertSeverity(s monitorv1.AlertSeverity) int {
	switch s {
	case monitorv1.AlertSeverity_ALERT_SEVERITY_LOW:
		return SeverityLow
	case monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM:
		return SeverityMedium
	case monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH:
		return SeverityHigh
	case monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL:
		return SeverityCritical
	default:
		return SeverityUnknown
	}
}

// analytic describes a detector: statistical ones compare numbers with a baseline, behavioural
// ones a never-seen value, rules need no baseline.
func analytic(detector string) Analytic {
	switch detector {
	case "volume_spike", "bulk_export", "deny_spike":
		return Analytic{Name: detector, TypeID: 3, Type: "Statistical"}
	case "inactive_agent_activity", "unknown_agent":
		return Analytic{Name: detector, TypeID: 1, Type: "Rule"}
	default:
		return Analytic{Name: detector, TypeID: 2, Type: "Behavioral"}
	}
}

func millis(ts *timestamppb.Timestamp) int64 {
	if ts == nil {
		return 0
	}
	return ts.AsTime().UnixMilli()
}

// mapAlert maps alert.raised to a Detection Finding.
func mapAlert(ev eventstore.Event) (*Event, error) {
	m, err := eventstore.DecodeAs[*monitorv1.AlertRaised](ev)
	if err != nil {
		return nil, err
	}
	a := m.GetAlert()
	switch {
	case a == nil:
		return nil, errors.New("alert is missing")
	case a.GetAlertId() == "":
		return nil, errors.New("alert.alert_id is missing")
	case a.GetTenant() != ev.Metadata.Tenant:
		return nil, fmt.Errorf("alert.tenant %q differs from the event's tenant %q", a.GetTenant(), ev.Metadata.Tenant)
	}
	e := base(ev, ClassDetectionFinding, 1, "Create")
	e.Metadata.UID = a.GetAlertId()
	if t := millis(a.GetDetectTime()); t != 0 {
		e.Time = t
	}
	setSeverity(e, alertSeverity(a.GetSeverity()))
	e.StatusID, e.Status = 1, "New"
	e.Message = a.GetSummary()
	var desc []string
	for _, ev := range a.GetEvidence() {
		if ev.GetExplanation() != "" {
			desc = append(desc, ev.GetExplanation())
		}
		data := map[string]any{
			"metric": ev.GetMetric(), "baseline": ev.GetBaseline(), "observed": ev.GetObserved(),
			"score": ev.GetScore(), "threshold": ev.GetThreshold(),
		}
		if ev.GetValue() != "" {
			data["value"] = ev.GetValue()
		}
		if ev.GetExplanation() != "" {
			data["explanation"] = ev.GetExplanation()
		}
		e.Evidences = append(e.Evidences, Evidence{Data: data})
	}
	fi := &FindingInfo{
		UID: a.GetAlertId(), Title: a.GetSummary(), Desc: strings.Join(desc, "\n"),
		Types: []string{a.GetDetector()}, Analytic: analytic(a.GetDetector()),
		CreatedTime: millis(a.GetDetectTime()), FirstSeenTime: millis(a.GetWindowStart()), LastSeenTime: millis(a.GetWindowEnd()),
		DataSources: []string{"agentid telemetry"},
	}
	if fi.Title == "" {
		fi.Title = a.GetDetector() + " on " + a.GetAgent()
	}
	for _, id := range a.GetEventIds() {
		fi.RelatedEvents = append(fi.RelatedEvents, RelatedEvent{UID: id})
	}
	e.FindingInfo = fi
	res := Resource{
		UID: a.GetAgent(), Name: a.GetAgent(), Type: "ai_agent",
		Data: map[string]any{"agent_known": a.GetAgentKnown()},
	}
	if a.GetOwner() != "" {
		res.Owner = &User{UID: a.GetOwner(), TypeID: 1, Type: "User"}
	}
	if a.GetEnvironment() != "" {
		res.Labels = append(res.Labels, "environment:"+a.GetEnvironment())
		res.Data["environment"] = a.GetEnvironment()
	}
	if a.GetRiskTier() != "" {
		res.Labels = append(res.Labels, "risk_tier:"+a.GetRiskTier())
		res.Data["risk_tier"] = a.GetRiskTier()
	}
	if a.GetSponsor() != "" {
		res.Data["sponsor"] = a.GetSponsor()
	}
	e.Resources = []Resource{res}
	e.Unmapped = map[string]any{"alert_name": a.GetName()}
	return e, nil
}

// agentActivities maps the agent event types the export sends to their Account Change activity.
var agentActivities = map[string]struct {
	id       int
	name     string
	severity int
}{
	"agent.registered":            {ActivityCreate, "Create", SeverityInformational},
	"agent.activated":             {ActivityEnable, "Enable", SeverityInformational},
	"agent.resumed":               {ActivityEnable, "Enable", SeverityInformational},
	"agent.suspended":             {ActivityDisable, "Disable", SeverityMedium},
	"agent.retired":               {ActivityDelete, "Delete", SeverityLow},
	"agent.rejected":              {ActivityOther, "Reject", SeverityInformational},
	"agent.retirement_requested":  {ActivityOther, "Request Retirement", SeverityInformational},
	"agent.updated":               {ActivityOther, "Update", SeverityInformational},
	"agent.submitted":             {ActivityOther, "Submit", SeverityInformational},
	"agent.expired":               {ActivityDisable, "Disable", SeverityLow},
	"agent.ownership_transferred": {ActivityOther, "Transfer Ownership", SeverityMedium},
	"agent.orphaned":              {ActivityOther, "Orphan", SeverityMedium},
}

// agentUser is the account of an agent.
func agentUser(name, display string) *User {
	return &User{UID: name, Name: display, TypeID: 99, Type: "AI Agent"}
}

// actor is who caused an event.
func actor(md eventstore.Metadata) *Actor {
	if md.Actor.ID == "" {
		return nil
	}
	u := &User{UID: md.Actor.ID, TypeID: 99, Type: "Other"}
	switch md.Actor.Kind {
	case eventstore.ActorHuman:
		u.TypeID, u.Type = 1, "User"
	case eventstore.ActorService:
		u.TypeID, u.Type = 3, "System"
	case eventstore.ActorAgent:
		u.Type = "AI Agent"
	}
	return &Actor{User: u}
}

// mapAgent maps an agent lifecycle event to an Account Change.
func mapAgent(ev eventstore.Event) (*Event, error) {
	act, ok := agentActivities[ev.Type]
	if !ok {
		return nil, errSkip
	}
	msg, err := ev.Decode()
	if err != nil {
		return nil, err
	}
	e := base(ev, ClassAccountChange, act.id, act.name)
	setSeverity(e, act.severity)
	e.StatusID, e.Status = 1, "Success"
	e.Actor = actor(ev.Metadata)
	un := map[string]any{}
	var name, summary string
	switch m := msg.(type) {
	case *registryv1.AgentRegistered:
		a := m.GetAgent()
		if a == nil {
			return nil, errors.New("agent is missing")
		}
		name = a.GetName()
		e.User = agentUser(name, a.GetDisplayName())
		un["owner"], un["sponsor"] = a.GetOwner(), a.GetSponsor()
		un["environment"] = strings.ToLower(strings.TrimPrefix(a.GetEnvironment().String(), "ENVIRONMENT_"))
		un["risk_tier"] = strings.ToLower(strings.TrimPrefix(a.GetRiskTier().String(), "RISK_TIER_"))
		summary = "registered"
	case *registryv1.AgentActivated:
		name, summary = m.GetName(), "activated"
		un["decision_id"], un["approved_by"] = m.GetDecisionId(), m.GetApprovedBy()
	case *registryv1.AgentResumed:
		name, summary = m.GetName(), "resumed"
		un["reason"], un["ticket"] = m.GetReason(), m.GetTicket()
	case *registryv1.AgentSuspended:
		name, summary = m.GetName(), "suspended"
		un["reason"], un["cause"], un["ticket"] = m.GetReason(), m.GetCause(), m.GetTicket()
	case *registryv1.AgentRetired:
		name, summary = m.GetName(), "retired"
		if t := millis(m.GetVerifyTime()); t != 0 {
			un["verify_time"] = t
		}
	case *registryv1.AgentRejected:
		name, summary = m.GetName(), "rejected"
		un["decision_id"], un["reason"] = m.GetDecisionId(), m.GetReason()
	case *registryv1.AgentRetirementRequested:
		name, summary = m.GetName(), "retirement requested"
		un["reason"], un["ticket"], un["trigger"] = m.GetReason(), m.GetTicket(), m.GetTrigger()
	case *registryv1.AgentUpdated:
		name, summary = m.GetName(), "updated ("+strings.Join(m.GetChangedFields(), ", ")+")"
		un["reason"], un["changed_fields"] = m.GetReason(), strings.Join(m.GetChangedFields(), ",")
		if c := m.GetClassification(); c != nil {
			un["risk_tier"] = strings.ToLower(strings.TrimPrefix(c.GetDerivedRiskTier().String(), "RISK_TIER_"))
			if o := c.GetOverrideRiskTier(); o != registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
				un["risk_tier"] = strings.ToLower(strings.TrimPrefix(o.String(), "RISK_TIER_"))
			}
		}
	case *registryv1.AgentSubmitted:
		name, summary = m.GetName(), "submitted"
	case *registryv1.AgentExpired:
		name, summary = m.GetName(), "expired"
		if t := millis(m.GetExpireTime()); t != 0 {
			un["expire_time"] = t
		}
	case *registryv1.AgentOwnershipTransferred:
		name, summary = m.GetName(), "transferred from owner "+m.GetFromOwner()+" to "+m.GetToOwner()
		if m.GetFromSponsor() != m.GetToSponsor() {
			summary += ", sponsor " + m.GetFromSponsor() + " to " + m.GetToSponsor()
		}
		un["from_owner"], un["to_owner"] = m.GetFromOwner(), m.GetToOwner()
		un["from_sponsor"], un["to_sponsor"] = m.GetFromSponsor(), m.GetToSponsor()
		un["reason"] = m.GetReason()
	case *registryv1.AgentOrphaned:
		name, summary = m.GetName(), "orphaned"
		un["principal"], un["role"], un["reason"] = m.GetPrincipal(), m.GetRole(), m.GetReason()
	default:
		return nil, fmt.Errorf("unexpected payload %s for %s", ev.DataSchema, ev.Type)
	}
	if name == "" {
		name = ev.Subject
	}
	if e.User == nil {
		e.User = agentUser(name, "")
	}
	if ev.Metadata.OnBehalfOf != "" {
		un["on_behalf_of"] = ev.Metadata.OnBehalfOf
	}
	e.Message = "agent " + name + " " + summary
	if r, _ := un["reason"].(string); r != "" {
		e.Message += ": " + r
	}
	e.Unmapped = compact(un)
	return e, nil
}

// mapRevocation maps tokens.revoked to an Account Change: a disabled client is Disable of the
// client's account, any other revocation Other ("Revoke Tokens") of what it covers.
func mapRevocation(ev eventstore.Event) (*Event, error) {
	m, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](ev)
	if err != nil {
		return nil, err
	}
	if m.GetTenant() != "" && m.GetTenant() != ev.Metadata.Tenant {
		return nil, fmt.Errorf("tenant %q differs from the event's tenant %q", m.GetTenant(), ev.Metadata.Tenant)
	}
	var e *Event
	if m.GetCause() == issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_DISABLED && m.GetClientId() != "" {
		e = base(ev, ClassAccountChange, ActivityDisable, "Disable")
		setSeverity(e, SeverityLow)
		e.User = &User{UID: m.GetClientId(), TypeID: 99, Type: "OAuth Client"}
		e.Message = "client " + m.GetClientId() + " disabled; its tokens are revoked"
	} else {
		e = base(ev, ClassAccountChange, ActivityOther, "Revoke Tokens")
		setSeverity(e, SeverityInformational)
		switch m.GetTarget() {
		case issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT:
			e.User = agentUser(m.GetAgent(), "")
		case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT:
			e.User = &User{UID: m.GetClientId(), TypeID: 99, Type: "OAuth Client"}
		case issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT:
			e.User = &User{UID: m.GetSubject(), TypeID: 99, Type: "Subject"}
		case issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN:
			e.User = &User{UID: m.GetTokenId(), TypeID: 99, Type: "Token"}
		case issuerv1.RevocationTarget_REVOCATION_TARGET_KEY:
			e.User = &User{UID: m.GetKeyId(), TypeID: 99, Type: "Signing Key"}
		default:
			e.User = &User{UID: ev.Metadata.Tenant, TypeID: 99, Type: "Tenant"}
		}
		e.Message = "tokens of " + strings.ToLower(e.User.Type) + " " + e.User.UID + " revoked"
	}
	e.StatusID, e.Status = 1, "Success"
	e.Actor = actor(ev.Metadata)
	un := map[string]any{
		"target": strings.ToLower(strings.TrimPrefix(m.GetTarget().String(), "REVOCATION_TARGET_")),
		"cause":  strings.ToLower(strings.TrimPrefix(m.GetCause().String(), "REVOCATION_CAUSE_")),
		"reason": m.GetReason(), "source_event_id": m.GetSourceEventId(), "agent": m.GetAgent(), "client_id": m.GetClientId(),
	}
	if t := millis(m.GetNotBefore()); t != 0 {
		un["not_before"] = t
	}
	if m.GetReason() != "" {
		e.Message += ": " + m.GetReason()
	}
	e.Unmapped = compact(un)
	return e, nil
}

// compact drops empty strings from m; nil when nothing is left.
func compact(m map[string]any) map[string]any {
	for k, v := range m {
		if s, ok := v.(string); ok && s == "" {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
