package detect

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// check is one request row being judged against one baseline.
type check struct {
	e         *Engine
	info      AgentInfo
	r         *store.Event
	b         *baseline.Baseline
	hs        *hourState
	fromClass bool
}

const (
	low      = monitorv1.AlertSeverity_ALERT_SEVERITY_LOW
	medium   = monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM
	high     = monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH
	madToSD  = 0.6745 // robust z = 0.6745 * (x - median) / MAD
	minScale = 1.0
)

func (c *check) fire(out []*monitorv1.Alert, detector, bucket string, sev monitorv1.AlertSeverity, summary string, ev ...*monitorv1.AlertEvidence) []*monitorv1.Alert {
	start := c.r.Time
	if detector == VolumeSpike || detector == OffHours || detector == DenySpike {
		start = c.hs.first
	}
	if c.fromClass {
		for _, e := range ev {
			e.Explanation += " (baseline of the agent's class " + c.b.ClassKey + ": too little history of its own)"
		}
	}
	return c.e.fire(out, c.info, c.r, detector, bucket, sev, summary, start, ev...)
}

// robustZ is 0.6745*(x-median)/scale with scale = max(mad, floor).
func robustZ(x, median, mad, floor float64) (z, scale float64) {
	scale = math.Max(mad, floor)
	return madToSD * (x - median) / scale, scale
}

// volume: the hour's running request count against the same hour of the week.
func (c *check) volume(out []*monitorv1.Alert) []*monitorv1.Alert {
	cfg := &c.e.cfg
	how := baseline.HourOfWeek(c.r.Time)
	st := c.b.HourOfWeek[how]
	x := float64(c.hs.requests)
	// Counts are Poisson-like: the spread is at least that of a Poisson count with the median as mean.
	z, scale := robustZ(x, st.Median, st.MAD, math.Max(madToSD*math.Sqrt(st.Median), minScale))
	if z <= cfg.VolumeZ || c.hs.requests < cfg.VolumeMinCount || x < cfg.VolumeMinRatio*st.Median || x < cfg.VolumeMaxRatio*st.Max {
		return out
	}
	hour := c.r.Time.UTC().Truncate(3600e9)
	return c.fire(out, VolumeSpike, hourBucket(c.r.Time), medium,
		fmt.Sprintf("%d requests in the hour from %s, %.0f usual", c.hs.requests, hour.Format("Mon 15:04 UTC"), st.Median),
		&monitorv1.AlertEvidence{
			Metric: "requests_per_hour", Baseline: st.Median, Observed: x, Score: z, Threshold: scale,
			Value: strconv.Itoa(how),
			Explanation: fmt.Sprintf("%d requests so far in the hour from %s; baseline for that hour of the week median %.1f, MAD %.1f, most %.0f over %d samples (robust z %.1f > %.0f)",
				c.hs.requests, hour.Format("Mon 15:04 UTC"), st.Median, st.MAD, st.Max, st.Samples, z, cfg.VolumeZ),
		})
}

// offHours: requests in an hour of the day the agent is never active in (nor next to one).
func (c *check) offHours(out []*monitorv1.Alert) []*monitorv1.Alert {
	cfg := &c.e.cfg
	h := c.r.Time.UTC().Hour()
	if c.hs.requests < cfg.OffHoursMinRequests {
		return out
	}
	for d := -cfg.OffHoursMargin; d <= cfg.OffHoursMargin; d++ {
		if c.b.ActiveHour((h + d + 24) % 24) {
			return out
		}
	}
	var active []string
	for i := range 24 {
		if c.b.ActiveHour(i) {
			active = append(active, strconv.Itoa(i))
		}
	}
	return c.fire(out, OffHours, hourBucket(c.r.Time), medium,
		fmt.Sprintf("activity at %02d:00 UTC, outside the agent's hours", h),
		&monitorv1.AlertEvidence{
			Metric: "hour_of_day", Baseline: float64(c.b.HourOfDay[h]), Observed: float64(c.hs.requests),
			Threshold: float64(cfg.OffHoursMargin), Value: fmt.Sprintf("%02d", h),
			Explanation: fmt.Sprintf("%d requests in the hour from %02d:00 UTC; in the baseline window the agent made none within %d hour(s) of it (active hours UTC: %v)",
				c.hs.requests, h, cfg.OffHoursMargin, active),
		})
}

// newValues: a resource, scope or source network never seen for the agent.
func (c *check) newValues(out []*monitorv1.Alert) []*monitorv1.Alert {
	novel := func(dim store.Dimension, v string) bool {
		if v == "" {
			return false
		}
		known, saturated := c.b.Known(dim, v)
		return !known && !saturated
	}
	if c.r.Kind == store.KindAccess && novel(store.DimResource, c.r.Resource) {
		out = c.fire(out, NewResource, dayBucket(c.r.Time)+"/resource/"+c.r.Resource, low, "first access to "+c.r.Resource,
			&monitorv1.AlertEvidence{Metric: "resource", Observed: 1, Value: c.r.Resource, Threshold: float64(c.b.Len(store.DimResource)),
				Explanation: fmt.Sprintf("%s %s was never accessed in the baseline window (%d resources known)", c.r.Action, c.r.Resource, c.b.Len(store.DimResource))})
	}
	for _, s := range c.r.Scopes {
		if !novel(store.DimScope, s) {
			continue
		}
		sev, why := medium, "granted but never used before"
		if len(c.info.Scopes) > 0 && !slices.Contains(c.info.Scopes, s) {
			sev, why = high, "not granted to the agent"
		}
		out = c.fire(out, NewScope, dayBucket(c.r.Time)+"/scope/"+s, sev, "first use of scope "+s+" ("+why+")",
			&monitorv1.AlertEvidence{Metric: "scope", Observed: 1, Value: s, Threshold: float64(c.b.Len(store.DimScope)),
				Explanation: fmt.Sprintf("scope %s on a %s (%s) was never used in the baseline window; it is %s", s, c.r.Kind, c.r.Outcome, why)})
	}
	if novel(store.DimSourceNetwork, c.r.SourceNetwork) {
		out = c.fire(out, NewSourceNetwork, dayBucket(c.r.Time)+"/network/"+c.r.SourceNetwork, medium, "request from new network "+c.r.SourceNetwork,
			&monitorv1.AlertEvidence{Metric: "source_network", Observed: 1, Value: c.r.SourceNetwork, Threshold: float64(c.b.Len(store.DimSourceNetwork)),
				Explanation: fmt.Sprintf("%s from %s: the agent's credential was never used from %s in the baseline window (%d networks known)",
					c.r.Kind, c.r.SourceAddress, c.r.SourceNetwork, c.b.Len(store.DimSourceNetwork))})
	}
	return out
}

// bulk: rows or bytes of one access far above the agent's usual.
func (c *check) bulk(out []*monitorv1.Alert) []*monitorv1.Alert {
	if c.r.Kind != store.KindAccess {
		return out
	}
	cfg := &c.e.cfg
	var ev []*monitorv1.AlertEvidence
	judge := func(metric string, x int64, median, mad float64, floor, maxHour int64, unit string) {
		z, scale := robustZ(float64(x), median, mad, minScale)
		if z <= cfg.BulkZ || float64(x) < cfg.BulkRatio*median || x < floor || x <= maxHour {
			return
		}
		ev = append(ev, &monitorv1.AlertEvidence{
			Metric: metric, Baseline: median, Observed: float64(x), Score: z, Threshold: scale,
			Explanation: fmt.Sprintf("%d %s in one request; baseline median %.0f, MAD %.0f (robust z %.0f > %.0f, %.0fx the median); the most in any hour of the window was %d",
				x, unit, median, mad, z, cfg.BulkZ, float64(x)/math.Max(median, 1), maxHour),
		})
	}
	judge("rows_per_request", c.r.Rows, c.b.RowsMedian, c.b.RowsMAD, cfg.BulkMinRows, c.b.MaxHourRows, "rows")
	judge("bytes_per_request", c.r.Bytes, c.b.BytesMedian, c.b.BytesMAD, cfg.BulkMinBytes, c.b.MaxHourBytes, "bytes")
	if len(ev) == 0 {
		return out
	}
	return c.fire(out, BulkExport, hourBucket(c.r.Time), high,
		fmt.Sprintf("bulk export from %s: %d rows, %d bytes in one request", c.r.Resource, c.r.Rows, c.r.Bytes), ev...)
}

// deny: the hour's denies against the agent's deny rate (binomial z-score).
func (c *check) deny(out []*monitorv1.Alert) []*monitorv1.Alert {
	cfg := &c.e.cfg
	d, n := float64(c.hs.denied), float64(c.hs.requests)
	if c.hs.denied < cfg.DenyMinCount {
		return out
	}
	p := math.Max(c.b.DenyRate(), cfg.DenyRateFloor)
	p = math.Min(p, 0.99)
	z := (d - n*p) / math.Sqrt(n*p*(1-p))
	if z <= cfg.DenyZ {
		return out
	}
	return c.fire(out, DenySpike, hourBucket(c.r.Time), medium,
		fmt.Sprintf("%d of %d requests denied in the hour", c.hs.denied, c.hs.requests),
		&monitorv1.AlertEvidence{
			Metric: "denied_per_hour", Baseline: n * p, Observed: d, Score: z, Threshold: p,
			Explanation: fmt.Sprintf("%d of %d requests refused so far in the hour; the agent's deny rate is %.2f%% (assumed at least %.0f%%), so %.1f were expected (binomial z %.1f > %.0f)",
				c.hs.denied, c.hs.requests, 100*c.b.DenyRate(), 100*cfg.DenyRateFloor, n*p, z, cfg.DenyZ),
		})
}

// delegation: an on-behalf-of user the agent never acted for, or a resource that user's observed
// delegations never touched.
func (c *check) delegation(out []*monitorv1.Alert) []*monitorv1.Alert {
	u := c.r.OnBehalfOf
	if u == "" {
		return out
	}
	known, saturated := c.b.Known(store.DimOnBehalfOf, u)
	if !known {
		if saturated {
			return out
		}
		return c.fire(out, DelegationOutsidePattern, dayBucket(c.r.Time)+"/user/"+u, medium, "acting for "+u+", a user it never acted for",
			&monitorv1.AlertEvidence{Metric: "on_behalf_of", Observed: 1, Value: u, Threshold: float64(c.b.Len(store.DimOnBehalfOf)),
				Explanation: fmt.Sprintf("%s on %s on behalf of %s; the agent acted for %d users in the baseline window, never for this one",
					c.r.Kind, c.r.Resource, u, c.b.Len(store.DimOnBehalfOf))})
	}
	if c.r.Kind != store.KindAccess || c.r.Resource == "" || c.fromClass {
		return out
	}
	touched, judged := c.b.UserTouched(u, c.r.Resource, c.e.cfg.DelegationMinObs)
	if !judged || touched {
		return out
	}
	return c.fire(out, DelegationOutsidePattern, dayBucket(c.r.Time)+"/user/"+u+"/resource/"+c.r.Resource, medium,
		"acting for "+u+" on "+c.r.Resource+", outside that user's pattern",
		&monitorv1.AlertEvidence{Metric: "delegated_resource", Observed: 1, Value: u + " -> " + c.r.Resource,
			Explanation: fmt.Sprintf("%s %s on behalf of %s: the agent's delegations for this user never touched it", c.r.Action, c.r.Resource, u)})
}
