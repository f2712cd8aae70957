// Package ingest turns telemetry events from the TELEMETRY stream into telemetry store rows.
package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"

	// Linked so that events of these packages decode into their JSON detail.
	_ "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Event types with a dedicated mapping.
const (
	// TypeTokenRequested is the issuer's token request telemetry (issuerv1.TokenRequested).
	TypeTokenRequested = "token.requested"
	// TypePolicyDecided is the policy decision log (policyv1.DecisionRecorded).
	TypePolicyDecided = "policy.decided"
	// TypeAccessRecorded is a resource server's batch of access decisions
	// (monitorv1.RecordAccessRequest).
	TypeAccessRecorded = "access.recorded"
)

// Kinds of the rows a recorded access batch becomes.
const (
	// KindAccess is one access decision of a resource server.
	KindAccess = "access"
	// KindAccessDropped counts the access events of a batch that were lost: dropped by the reporter
	// (its buffer was full) or skipped because they name another tenant than the batch.
	KindAccessDropped = "access.dropped"
)

// ErrNoTenant marks an event that cannot be attributed to a tenant.
var ErrNoTenant = errors.New("ingest: event has no tenant")

// ErrNoID marks an event without a CloudEvents id.
var ErrNoID = errors.New("ingest: event has no id")

// Map turns an event into its telemetry rows. Token requests and policy decisions get their own
// columns; a recorded access batch becomes one row per access event (kind KindAccess) plus, when
// the reporter dropped events or the batch holds events of another tenant, one KindAccessDropped
// row counting them; any other event is one row with its type as kind and its payload as JSON
// detail. A payload that does not decode is still stored, as one row with the decode error in the
// detail.
func Map(e eventstore.Event) ([]store.Event, error) {
	rows, _, err := mapEvent(e)
	return rows, err
}

// loss counts the access events a batch lost: dropped by the reporter, skipped by the mapping.
type loss struct {
	dropped, skipped int64
}

func mapEvent(e eventstore.Event) ([]store.Event, loss, error) {
	var lost loss
	if e.ID == "" {
		return nil, lost, ErrNoID
	}
	row := store.Event{
		EventID:    e.ID,
		Time:       e.Time,
		Tenant:     e.Metadata.Tenant,
		Kind:       e.Type,
		Actor:      e.Metadata.Actor.ID,
		OnBehalfOf: e.Metadata.OnBehalfOf,
		RequestID:  e.Metadata.CorrelationID,
		StreamSeq:  e.Sequence,
	}
	if isAgentName(e.Subject) {
		row.Agent = e.Subject
	}
	var (
		rows []store.Event
		err  error
	)
	switch e.Type {
	case TypeTokenRequested:
		err = mapTokenRequested(e, &row)
	case TypeTokenRequestedBatch:
		if row.Tenant == "" {
			break
		}
		rows, err = mapTokenRequestedBatch(e, row)
	case TypePolicyDecided:
		err = mapPolicyDecided(e, &row)
	case TypeAccessRecorded:
		if row.Tenant == "" {
			break
		}
		rows, lost, err = mapAccessRecorded(e, row)
	default:
		err = mapOther(e, &row)
	}
	if err != nil {
		rows, lost = nil, loss{}
		row.Detail = detail(map[string]any{"data_schema": e.DataSchema, "decode_error": err.Error()})
	}
	if row.Tenant == "" {
		return nil, loss{}, fmt.Errorf("%w: %s (%s)", ErrNoTenant, e.ID, e.Type)
	}
	if rows != nil {
		return rows, lost, nil
	}
	return []store.Event{row}, lost, nil
}

func mapTokenRequested(e eventstore.Event, row *store.Event) error {
	m, err := eventstore.DecodeAs[*issuerv1.TokenRequested](e)
	if err != nil {
		return err
	}
	fillTokenRequested(m, row, nil)
	return nil
}

// fillTokenRequested sets the columns and detail of a token request's row; the detail is built in
// *scratch when set (see newObject).
func fillTokenRequested(m *issuerv1.TokenRequested, row *store.Event, scratch *[]byte) {
	row.Tenant = first(row.Tenant, m.GetTenant())
	row.Agent = first(m.GetAgent(), row.Agent)
	row.Actor = first(m.GetClientId(), row.Actor)
	row.ClientID = m.GetClientId()
	row.Environment = m.GetEnvironment()
	row.Scopes = m.GetScopes()
	row.RequestID = first(m.GetRequestId(), row.RequestID)
	if aud := m.GetAudiences(); len(aud) > 0 {
		row.Resource = aud[0]
	}
	row.SourceAddress = sourceAddress(m.GetRemoteAddr())
	switch m.GetOutcome() {
	case issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED:
		row.Outcome = "issued"
	case issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED:
		// The OAuth error says why (invalid_scope, invalid_client ...): it counts as denied.
		row.Outcome = first(m.GetError(), "denied")
	}
	if v := m.GetTokenId(); v != "" {
		row.TokenID = v
	}
	// Members in key order (see object).
	d := newObject(scratch)
	if v := m.GetAudiences(); len(v) > 0 {
		d.strs("audiences", v)
	}
	optional(&d, "error", m.GetError())
	if m.GetExpireTime() != nil {
		t := m.GetExpireTime().AsTime().UTC()
		d.time("expire_time", t)
		row.TokenExpires = t
	}
	d.str("grant_type", m.GetGrantType())
	optional(&d, "remote_addr", m.GetRemoteAddr())
	optional(&d, "token_id", m.GetTokenId())
	row.Detail = d.done()
}

func mapPolicyDecided(e eventstore.Event, row *store.Event) error {
	m, err := eventstore.DecodeAs[*policyv1.DecisionRecorded](e)
	if err != nil {
		return err
	}
	row.Tenant = first(row.Tenant, m.GetTenant())
	if isAgentName(m.GetSubject()) {
		row.Agent = m.GetSubject()
	}
	row.RequestID = first(m.GetRequestId(), row.RequestID)
	dec := m.GetDecision()
	switch dec.GetOutcome() {
	case policyv1.Outcome_OUTCOME_ALLOW:
		row.Outcome = "allow"
	case policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL:
		row.Outcome = "require_approval"
	default: // anything else is a deny (fail closed)
		row.Outcome = "deny"
	}
	if agent, ok := m.GetInput().AsMap()["agent"].(map[string]any); ok {
		if env, ok := agent["environment"].(string); ok {
			row.Environment = environmentTag(env)
		}
		if scopes, ok := agent["scopes"].([]any); ok {
			for _, s := range scopes {
				if s, ok := s.(string); ok {
					row.Scopes = append(row.Scopes, s)
				}
			}
		}
	}
	// Members in key order (see object).
	d := newObject(nil)
	d.str("bundle_version", dec.GetBundleVersion())
	d.str("decision_id", dec.GetDecisionId())
	d.str("decision_point", m.GetDecisionPoint())
	if m.GetDryRun() { // binds nothing: analysts must be able to tell it from a real decision
		d.bool("dry_run", true)
	}
	d.strs("reasons", nonNil(dec.GetReasons()))
	if v := dec.GetRequiredApprovals(); len(v) > 0 {
		d.strs("required_approvals", v)
	}
	row.Detail = d.done()
	return nil
}

func mapOther(e eventstore.Event, row *store.Event) error {
	m, err := e.Decode()
	if err != nil {
		return err
	}
	row.Detail, err = payloadJSON(m)
	return err
}

// payloadJSON renders a payload as a JSON object (protojson, enum names); a payload whose JSON
// form is not an object (a wrapper type, say) is kept as {"payload": ...}.
func payloadJSON(m proto.Message) (string, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return "", err
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) == nil {
		return string(b), nil
	}
	return detail(map[string]any{"payload": json.RawMessage(b)}), nil
}

// sourceAddress is the IP address of a reported caller address: an address with a port loses
// the port, and anything that is not an IP address is left out ("") — the original stays in the
// row's detail.
func sourceAddress(addr string) string {
	if addr == "" {
		return ""
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return ip.String()
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().String()
	}
	return ""
}

// environmentTag turns the registry's enum name into the tag tokens carry: ENVIRONMENT_PROD → prod.
func environmentTag(enum string) string {
	if enum == "ENVIRONMENT_UNSPECIFIED" {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(enum, "ENVIRONMENT_"))
}

// isAgentName reports whether s is an agent resource name, tenants/{tenant}/agents/{agent}.
func isAgentName(s string) bool {
	parts := strings.Split(s, "/")
	return len(parts) == 4 && parts[0] == "tenants" && parts[1] != "" && parts[2] == "agents" && parts[3] != ""
}

func detail(m map[string]any) string {
	b, err := json.Marshal(m)
	if err != nil {
		return store.EmptyDetail
	}
	return string(b)
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
