// Package detect runs the anomaly detectors over telemetry rows as they are stored: each row is
// compared with its agent's baseline (or its class's) and the registry's view of the agent, and a
// detector that fires raises a monitorv1.Alert with its evidence. docs/detection.md describes every
// detector, its statistic, thresholds, severity and blind spots.
package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/observability"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// Detector names (Alert.detector).
const (
	VolumeSpike              = "volume_spike"
	OffHours                 = "off_hours"
	NewResource              = "new_resource"
	NewScope                 = "new_scope"
	BulkExport               = "bulk_export"
	DenySpike                = "deny_spike"
	NewSourceNetwork         = "new_source_network"
	DelegationOutsidePattern = "delegation_outside_pattern"
	InactiveAgentActivity    = "inactive_agent_activity"
	UnknownAgent             = "unknown_agent"
	// AlertQuotaExceeded summarises the alerts of a tenant's hour held back by the quota.
	AlertQuotaExceeded = "alert_quota_exceeded"
)

// DefaultTenantHourlyQuota is the default of Config.TenantHourlyQuota.
const DefaultTenantHourlyQuota = 100

// MaxGhostSamples is the most unknown names an unknown_agent alert lists.
const MaxGhostSamples = 20

// Detectors lists every detector name.
var Detectors = []string{VolumeSpike, OffHours, NewResource, NewScope, BulkExport, DenySpike,
	NewSourceNetwork, DelegationOutsidePattern, InactiveAgentActivity, UnknownAgent}

// AgentInfo is the registry's view of an agent (or a client id): its facts as of detection time and
// its state as of the time of the row being judged.
type AgentInfo struct {
	// Tenant and Name (the agent's resource name) identify it.
	Tenant, Name string
	// Owner, Sponsor, Environment and RiskTier describe it; they go into the alert.
	Owner, Sponsor, Environment, RiskTier string
	// State is the lifecycle state at the row's time (ACTIVE, SUSPENDED, RETIRING, RETIRED,
	// REJECTED, ...; the AGENT_STATE_ prefix and case are ignored).
	State string
	// StateSince is when the agent entered State; zero when not known.
	StateSince time.Time
	// Known is false for a name or client id the registry does not know.
	Known bool
	// Scopes are the scopes granted to it.
	Scopes []string
}

// Lookup returns the registry's view of an agent name (or, for rows without one, a client id) of a
// tenant, with the agent's state as it was at time at (the row's time). ok is false for one the
// registry does not know.
type Lookup func(tenant, agentOrClientID string, at time.Time) (info AgentInfo, ok bool)

// inactive reports whether the state is one in which the agent must not act.
func (a AgentInfo) inactive() bool {
	switch strings.TrimPrefix(strings.ToUpper(a.State), "AGENT_STATE_") {
	case "SUSPENDED", "RETIRING", "RETIRED", "REJECTED":
		return true
	}
	return false
}

// Config holds the thresholds; zero values take the defaults in parentheses.
type Config struct {
	// VolumeZ is the robust z-score above which the hour's requests are a spike (6).
	VolumeZ float64
	// VolumeMinCount is the fewest requests in the hour for a spike (50).
	VolumeMinCount int64
	// VolumeMinRatio is the least multiple of the hour-of-week median for a spike (3).
	VolumeMinRatio float64
	// VolumeMaxRatio is the least multiple of the most requests seen in that hour of the week in
	// the window for a spike (2).
	VolumeMaxRatio float64
	// OffHoursMinRequests is how many requests in an off hour raise the alert (3).
	OffHoursMinRequests int64
	// OffHoursMargin is how many hours next to an active hour also count as usual (1).
	OffHoursMargin int
	// BulkZ is the robust z-score of rows or bytes of one access above which it is a bulk export (8).
	BulkZ float64
	// BulkRatio is the least multiple of the median for a bulk export (10).
	BulkRatio float64
	// BulkMinRows and BulkMinBytes are the absolute floors of a bulk export (10,000 rows; 50 MiB).
	BulkMinRows, BulkMinBytes int64
	// DenyZ is the binomial z-score of the hour's denies above which they are a spike (6).
	DenyZ float64
	// DenyMinCount is the fewest denies in the hour for a spike (10).
	DenyMinCount int64
	// DenyRateFloor is the least baseline deny rate assumed (0.01).
	DenyRateFloor float64
	// DelegationMinObs is how many of a user's delegations the engine must have observed before it
	// judges the resources they touch (50).
	DelegationMinObs int64
	// DedupeSize is how many alert ids are remembered to raise each once (100,000).
	DedupeSize int
	// TenantHourlyQuota is the most alerts raised for one tenant in one hour of detection time
	// (100); CRITICAL alerts are never held back. The excess is counted
	// (monitor_alerts_over_quota_total) and summarised in one alert_quota_exceeded alert per tenant
	// and hour.
	TenantHourlyQuota int
	// Registerer receives the engine's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Corroborate, if set, judges each access row a resource server reported by whether it is
	// corroborated: it names a token the issuer reported issuing to that agent (token.requested
	// rows seen by the engine, the newest MaxTokens) and was used before the token expired. Alerts
	// from uncorroborated rows are capped at MEDIUM (notify, never suspend), raised under an id of
	// their own (so a forged row cannot take the id of a real alert) and held to a quota of their
	// own, and their evidence says why; Learnable leaves such rows out of the baselines.
	Corroborate bool
	// MaxTokens bounds the issued tokens remembered for corroboration (DefaultMaxTokens).
	MaxTokens int
	// Now is the clock of Alert.detect_time (time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.VolumeZ, 6)
	defi(&c.VolumeMinCount, 50)
	def(&c.VolumeMinRatio, 3)
	def(&c.VolumeMaxRatio, 2)
	defi(&c.OffHoursMinRequests, 3)
	if c.OffHoursMargin < 0 {
		c.OffHoursMargin = 0
	} else if c.OffHoursMargin == 0 {
		c.OffHoursMargin = 1
	}
	def(&c.BulkZ, 8)
	def(&c.BulkRatio, 10)
	defi(&c.BulkMinRows, 10_000)
	defi(&c.BulkMinBytes, 50<<20)
	def(&c.DenyZ, 6)
	defi(&c.DenyMinCount, 10)
	def(&c.DenyRateFloor, 0.01)
	defi(&c.DelegationMinObs, 50)
	if c.DedupeSize <= 0 {
		c.DedupeSize = 100_000
	}
	if c.TenantHourlyQuota <= 0 {
		c.TenantHourlyQuota = DefaultTenantHourlyQuota
	}
	if c.MaxTokens <= 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Engine runs the detectors. It is safe for concurrent use; Process calls are serialised.
type Engine struct {
	cfg       Config
	baselines *baseline.Manager

	mu      sync.Mutex
	hours   map[agentKey]*hourState
	maxHour int64
	seen    map[string]struct{}
	ring    []string
	next    int
	quota   map[quotaKey]*tenantQuota
	tokens  *tokenIndex

	overQuota *prometheus.CounterVec
}

// quotaKey is a tenant's quota: one for alerts of corroborated rows, one for the others.
type quotaKey struct {
	tenant         string
	uncorroborated bool
}

// tenantQuota counts a tenant's alerts in one hour of detection time.
type tenantQuota struct {
	hour   int64
	raised int
}

// ghosts gathers the unknown agents of one tenant and hour seen in one Process call.
type ghosts struct {
	tenant, bucket string
	first          *store.Event
	last           *store.Event // a corroborated row when there is one
	names          map[string]bool
	samples        []string
}

type agentKey struct{ tenant, agent string }

// hourState counts an agent's requests in the current hour.
type hourState struct {
	hour             int64
	requests, denied int64
	first            time.Time
}

// NewEngine returns an Engine judging agents by the baselines of baselines.
func NewEngine(cfg Config, baselines *baseline.Manager) *Engine {
	cfg.defaults()
	e := &Engine{cfg: cfg, baselines: baselines, hours: map[agentKey]*hourState{},
		seen: make(map[string]struct{}), ring: make([]string, cfg.DedupeSize), quota: map[quotaKey]*tenantQuota{}}
	if cfg.Corroborate {
		e.tokens = newTokenIndex(cfg.MaxTokens)
	}
	e.overQuota = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "monitor_alerts_over_quota_total",
		Help: "Alerts not raised because their tenant had reached its hourly alert quota, by detector (each tenant's hour is summarised in one alert_quota_exceeded alert).",
	}, []string{"detector"})
	if cfg.Registerer != nil {
		e.overQuota = observability.Register(cfg.Registerer, e.overQuota)
	}
	return e
}

// OverQuota is the counter of alerts held back by the tenant quota, by detector
// (monitor_alerts_over_quota_total).
func (e *Engine) OverQuota() *prometheus.CounterVec { return e.overQuota }

// Refused reports whether an activity row records an attempt the platform refused: a token request
// answered with an OAuth error, a denied access, a denying policy decision. Any other outcome,
// including one it does not recognise or none, counts as activity that succeeded (fail closed:
// a suspended agent's success is CRITICAL).
func Refused(kind, outcome string) bool {
	switch kind {
	case store.KindTokenRequested:
		return outcome != "" && outcome != "issued" && outcome != "unspecified"
	case store.KindAccess:
		return outcome == "denied"
	case "policy.decided":
		return outcome == "deny"
	}
	return false
}

// IsActivity reports whether a row of this kind is something the agent did (a token request, a
// resource access) rather than something about it: a policy decision is about the agent (an
// admission, a dry run anyone with the auditor role may ask for), so it is never the agent's
// activity and raises neither an unknown-agent nor an inactive-agent alert.
func IsActivity(kind string) bool {
	return kind == store.KindAccess || kind == store.KindTokenRequested
}

// Process runs the detectors over rows (in the order given, normally time order) and returns the
// alerts raised, each at most once per (tenant, agent, detector, bucket) while the id is remembered.
// lookup returns the registry's view of an agent as of each row's time. It does not update the
// baselines: call the Manager's Observe with the same rows afterwards.
func (e *Engine) Process(rows []store.Event, lookup Lookup) []*monitorv1.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*monitorv1.Alert
	var gs []*ghosts
	if e.tokens != nil {
		for i := range rows {
			e.tokens.learn(&rows[i])
		}
	}
	for i := range rows {
		out, gs = e.row(out, gs, &rows[i], lookup)
	}
	for _, g := range gs {
		out = e.fireGhosts(out, g)
	}
	return out
}

// ghost adds an unknown agent's activity row to the gathering of its tenant and hour, unless that
// hour's alert was raised already.
func (e *Engine) ghost(gs []*ghosts, r *store.Event, id string) []*ghosts {
	bucket := hourBucket(r.Time)
	if _, dup := e.seen[AlertID(r.Tenant, "", UnknownAgent, bucket)]; dup {
		return gs
	}
	var g *ghosts
	for _, x := range gs {
		if x.tenant == r.Tenant && x.bucket == bucket {
			g = x
			break
		}
	}
	if g == nil {
		g = &ghosts{tenant: r.Tenant, bucket: bucket, first: r, last: r, names: map[string]bool{}}
		gs = append(gs, g)
	}
	if ok, _ := e.corroborated(g.last); !ok {
		g.last = r
	}
	if !g.names[id] {
		g.names[id] = true
		if len(g.samples) < MaxGhostSamples {
			g.samples = append(g.samples, id)
		}
	}
	return gs
}

// fireGhosts raises the one unknown_agent alert of a tenant's hour: the first unknown name is its
// agent, the evidence counts the distinct unknown names and lists up to MaxGhostSamples of them.
func (e *Engine) fireGhosts(out []*monitorv1.Alert, g *ghosts) []*monitorv1.Alert {
	info := AgentInfo{Tenant: g.tenant, Name: g.samples[0]}
	n := len(g.names)
	summary := "activity of an agent the registry does not know: " + g.samples[0]
	if n > 1 {
		summary = fmt.Sprintf("activity of %d agents the registry does not know: %s, ...", n, g.samples[0])
	}
	quoted := make([]string, len(g.samples))
	for i, s := range g.samples {
		quoted[i] = strconv.Quote(s)
	}
	more := ""
	if n > len(g.samples) {
		more = fmt.Sprintf(" (the first %d listed)", len(g.samples))
	}
	return e.fireID(out, AlertID(g.tenant, "", UnknownAgent, g.bucket), info, g.last, UnknownAgent, monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH,
		summary, g.first.Time, &monitorv1.AlertEvidence{
			Metric: "unknown_agents", Baseline: 0, Observed: float64(n), Value: strings.Join(g.samples, ","),
			Explanation: fmt.Sprintf("%d name(s) or client id(s) no registered agent has acted in the hour from %s UTC: %s%s (ghost agents; one alert per tenant and hour)",
				n, g.first.Time.UTC().Truncate(time.Hour).Format("2006-01-02 15:04"), strings.Join(quoted, ", "), more),
		})
}

func (e *Engine) row(out []*monitorv1.Alert, gs []*ghosts, r *store.Event, lookup Lookup) ([]*monitorv1.Alert, []*ghosts) {
	id := r.Agent
	if id == "" {
		if r.AgentKnown || r.ClientID == "" {
			return out, gs
		}
		id = r.ClientID
	}
	info, ok := lookup(r.Tenant, id, r.Time)
	if !ok || !info.Known {
		if !IsActivity(r.Kind) {
			return out, gs
		}
		return out, e.ghost(gs, r, id)
	}
	return e.known(out, info, id, r), gs
}

// known judges a row of an agent the registry knows.
func (e *Engine) known(out []*monitorv1.Alert, info AgentInfo, id string, r *store.Event) []*monitorv1.Alert {
	if info.Name == "" {
		info.Name = id
	}
	if info.Tenant == "" {
		info.Tenant = r.Tenant
	}
	if info.inactive() {
		if !IsActivity(r.Kind) {
			return out
		}
		return e.inactive(out, info, r)
	}
	if !baseline.IsRequest(r.Kind) {
		return out
	}
	hs := e.count(r)
	b, fromClass := e.baselines.Get(info.Tenant, info.Name, baseline.AgentClass{Owner: info.Owner, Environment: info.Environment, Scopes: info.Scopes})
	if b == nil {
		return out
	}
	c := check{e: e, info: info, r: r, b: b, hs: hs, fromClass: fromClass}
	out = c.volume(out)
	out = c.offHours(out)
	out = c.newValues(out)
	out = c.bulk(out)
	out = c.deny(out)
	out = c.delegation(out)
	return out
}

// inactive judges an activity row of an agent that was SUSPENDED, RETIRING, RETIRED or REJECTED at
// the row's time. What succeeded is CRITICAL, one alert per state and hour; attempts the platform
// refused (the platform working as intended) are LOW, one alert per hour, so that they are
// recorded without starting an incident.
func (e *Engine) inactive(out []*monitorv1.Alert, info AgentInfo, r *store.Event) []*monitorv1.Alert {
	state := strings.TrimPrefix(strings.ToUpper(info.State), "AGENT_STATE_")
	lower := strings.ToLower(state)
	since := ""
	if !info.StateSince.IsZero() {
		since = " since " + info.StateSince.UTC().Format(time.RFC3339Nano)
	}
	outcome := r.Outcome
	if outcome == "" {
		outcome = "no outcome"
	}
	at := r.Time.UTC().Format(time.RFC3339Nano)
	if Refused(r.Kind, r.Outcome) {
		return e.fire(out, info, r, InactiveAgentActivity, "refused/"+hourBucket(r.Time), monitorv1.AlertSeverity_ALERT_SEVERITY_LOW,
			"refused attempts while "+lower+": "+r.Kind+" ("+outcome+")", r.Time, &monitorv1.AlertEvidence{
				Metric: "agent_state", Value: state, Observed: 1,
				Explanation: "refused attempts while " + lower + ": " + r.Kind + " (" + outcome + ") by " + info.Name + " at " + at +
					", whose state was " + state + since + "; the platform refused it (first refused attempt of the hour)",
			})
	}
	return e.fire(out, info, r, InactiveAgentActivity, state+"/"+hourBucket(r.Time), monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL,
		"activity of a "+lower+" agent: "+r.Kind+" ("+outcome+")", r.Time, &monitorv1.AlertEvidence{
			Metric: "agent_state", Value: state, Observed: 1,
			Explanation: r.Kind + " (" + outcome + ") by " + info.Name + " at " + at + ", whose state was " + state + since +
				": it must not act at all, and this was not refused",
		})
}

// count adds r to its agent's running hourly counters and returns them.
func (e *Engine) count(r *store.Event) *hourState {
	h := r.Time.Unix() / 3600
	if h > e.maxHour {
		if e.maxHour != 0 {
			for k, s := range e.hours {
				if s.hour < h-1 {
					delete(e.hours, k)
				}
			}
		}
		e.maxHour = h
	}
	k := agentKey{r.Tenant, r.Agent}
	s := e.hours[k]
	if s == nil || s.hour < h {
		s = &hourState{hour: h, first: r.Time}
		e.hours[k] = s
	}
	if s.hour > h {
		// A late row of an earlier hour: judged alone, not added to the current hour.
		s = &hourState{hour: h, first: r.Time}
	}
	s.requests++
	if baseline.Denied(r.Outcome) {
		s.denied++
	}
	return s
}

func hourBucket(t time.Time) string { return t.UTC().Format("2006-01-02T15") }

// dayBucket is the UTC day of t: value-based alerts (a new resource, scope, network or user) are
// raised again on a later day, so a second occurrence weeks later is not taken for the first.
func dayBucket(t time.Time) string { return t.UTC().Format("2006-01-02") }

// AlertID is the deterministic id of the alert of one detector about one agent in one bucket (an
// hour, a day or a value).
func AlertID(tenant, agent, detector, bucket string) string {
	h := sha256.New()
	for _, s := range []string{tenant, agent, detector, bucket} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// fire raises an alert unless its id was raised already.
func (e *Engine) fire(out []*monitorv1.Alert, info AgentInfo, r *store.Event, detector, bucket string,
	sev monitorv1.AlertSeverity, summary string, start time.Time, ev ...*monitorv1.AlertEvidence) []*monitorv1.Alert {
	return e.fireID(out, AlertID(info.Tenant, info.Name, detector, bucket), info, r, detector, sev, summary, start, ev...)
}

// remember records an alert id as raised.
func (e *Engine) remember(id string) {
	if old := e.ring[e.next]; old != "" {
		delete(e.seen, old)
	}
	e.ring[e.next] = id
	e.next = (e.next + 1) % len(e.ring)
	e.seen[id] = struct{}{}
}

// corroborated reports whether a row is backed by the platform (always, without Config.Corroborate).
func (e *Engine) corroborated(r *store.Event) (bool, string) {
	if e.tokens == nil {
		return true, ""
	}
	return e.tokens.corroborated(r)
}

// Learnable returns the rows the baselines may learn: with Config.Corroborate, every row but the
// uncorroborated access rows (which a resource server could have forged); call it after Process
// has seen the rows (it learns the batch's issued tokens).
func (e *Engine) Learnable(rows []store.Event) []store.Event {
	if e.tokens == nil {
		return rows
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := rows[:0:0]
	for i := range rows {
		if ok, _ := e.tokens.corroborated(&rows[i]); ok {
			out = append(out, rows[i])
		}
	}
	return out
}

// admit applies the tenant's hourly quota to an alert about to be raised: it reports whether the
// alert may be raised, and returns out with the tenant's alert_quota_exceeded alert of the hour
// added when this is the first alert held back. CRITICAL alerts are always admitted. The quota
// alert names the agent of the first alert held back (the incident pipeline needs one) and says
// that it is about the tenant.
func (e *Engine) admit(out []*monitorv1.Alert, info AgentInfo, detector string, sev monitorv1.AlertSeverity, r *store.Event, uncorroborated bool) ([]*monitorv1.Alert, bool) {
	tenant := info.Tenant
	now := e.cfg.Now().UTC()
	hour := now.Unix() / 3600
	qk := quotaKey{tenant, uncorroborated}
	q := e.quota[qk]
	if q == nil || q.hour != hour {
		if q == nil && len(e.quota) > 0 {
			for k, old := range e.quota {
				if old.hour < hour {
					delete(e.quota, k)
				}
			}
		}
		q = &tenantQuota{hour: hour}
		e.quota[qk] = q
	}
	if sev == monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL || q.raised < e.cfg.TenantHourlyQuota {
		q.raised++
		return out, true
	}
	e.overQuota.WithLabelValues(detector).Inc()
	bucket := now.Truncate(time.Hour).Format("2006-01-02T15")
	id := AlertID(tenant, "", AlertQuotaExceeded, bucket)
	if uncorroborated {
		id = AlertID(tenant, "", AlertQuotaExceeded, "uncorroborated/"+bucket)
	}
	if _, dup := e.seen[id]; dup {
		return out, false
	}
	e.remember(id)
	return append(out, &monitorv1.Alert{
		Name: "tenants/" + tenant + "/alerts/" + id, AlertId: id, Tenant: tenant, Agent: info.Name, Detector: AlertQuotaExceeded,
		Owner: info.Owner, Sponsor: info.Sponsor, RiskTier: info.RiskTier, Environment: info.Environment,
		Severity:    monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM,
		Summary:     fmt.Sprintf("more than %d alerts in the hour from %s UTC; further alerts of the hour are held back", e.cfg.TenantHourlyQuota, now.Truncate(time.Hour).Format("2006-01-02 15:04")),
		DetectTime:  timestamppb.New(now),
		WindowStart: timestamppb.New(r.Time.UTC()),
		WindowEnd:   timestamppb.New(r.Time.UTC()),
		EventIds:    []string{r.EventID},
		Evidence: []*monitorv1.AlertEvidence{{
			Metric: "alerts_per_hour", Threshold: float64(e.cfg.TenantHourlyQuota), Observed: float64(q.raised + 1), Value: detector,
			Explanation: fmt.Sprintf("the tenant reached its quota of %d alerts in the hour (CRITICAL alerts excepted); the first alert held back was a %s alert about %s; the alerts held back are counted in monitor_alerts_over_quota_total by detector and can be found again in the telemetry",
				e.cfg.TenantHourlyQuota, detector, info.Name),
		}},
		AgentKnown: info.Known,
	}), false
}

// fireID raises the alert id unless it was raised already or the tenant's quota holds it back.
// An alert from an uncorroborated row gets an id of its own, at most MEDIUM severity and evidence
// saying why; the reporter of an access row is named in the evidence.
func (e *Engine) fireID(out []*monitorv1.Alert, id string, info AgentInfo, r *store.Event, detector string,
	sev monitorv1.AlertSeverity, summary string, start time.Time, ev ...*monitorv1.AlertEvidence) []*monitorv1.Alert {
	corroborated, why := e.corroborated(r)
	if !corroborated {
		id = AlertID(id, "", "uncorroborated", "")
		sev = min(sev, monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM)
		summary += " (uncorroborated report)"
	}
	if _, dup := e.seen[id]; dup {
		return out
	}
	out, ok := e.admit(out, info, detector, sev, r, !corroborated)
	if !ok {
		return out
	}
	if r.Kind == store.KindAccess && (r.Reporter != "" || e.tokens != nil) {
		rep := &monitorv1.AlertEvidence{Metric: "reporter", Value: r.Reporter, Observed: 1,
			Explanation: "access reported by " + strconv.Quote(r.Reporter) + "; token " + strconv.Quote(r.TokenID) + " corroborated by the issuer's telemetry"}
		switch {
		case !corroborated:
			rep.Observed = 0
			rep.Explanation = "access reported by " + strconv.Quote(r.Reporter) + " and not corroborated: " + why +
				"; the alert is capped at MEDIUM (notify, no automatic suspension)"
		case e.tokens == nil:
			rep.Explanation = "access reported by " + strconv.Quote(r.Reporter)
		}
		ev = append(ev, rep)
	}
	e.remember(id)
	return append(out, &monitorv1.Alert{
		Name:        "tenants/" + info.Tenant + "/alerts/" + id,
		AlertId:     id,
		Tenant:      info.Tenant,
		Agent:       info.Name,
		Detector:    detector,
		Severity:    sev,
		Summary:     summary,
		DetectTime:  timestamppb.New(e.cfg.Now().UTC()),
		WindowStart: timestamppb.New(start.UTC()),
		WindowEnd:   timestamppb.New(r.Time.UTC()),
		Evidence:    ev,
		EventIds:    []string{r.EventID},
		Owner:       info.Owner,
		Sponsor:     info.Sponsor,
		RiskTier:    info.RiskTier,
		Environment: info.Environment,
		AgentKnown:  info.Known,
	})
}
