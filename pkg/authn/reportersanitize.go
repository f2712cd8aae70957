package authn

import (
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// Limits of an access event as MonitorService.RecordAccess accepts it
// (services/monitor/internal/access/access.go); the reporter cleans every event to fit them, since
// the monitor refuses a whole batch for one malformed event.
const (
	// MaxAccessResourceLen bounds AccessEvent.Resource, in bytes.
	MaxAccessResourceLen = 1024
	// MaxAccessFieldLen bounds every other string of an AccessEvent, in bytes.
	MaxAccessFieldLen = 256
	// MaxAccessRequestIDLen bounds AccessEvent.RequestID, in bytes.
	MaxAccessRequestIDLen = 128
	// MaxAccessScopes is the most scopes one AccessEvent reports.
	MaxAccessScopes = 64
	// MaxAccessScopeLen bounds one scope, in bytes.
	MaxAccessScopeLen = 128
	// MaxAccessBatchBytes bounds the encoded RecordAccess request; larger batches are split.
	MaxAccessBatchBytes = 900 << 10
)

// sanitize makes ev acceptable to the monitor without changing what is already acceptable: strings
// are cut to their limits on a rune boundary, control characters and invalid UTF-8 become U+FFFD,
// the resource is never empty, scopes are non-empty, without spaces and at most MaxAccessScopes, the
// time is set and not in the future, and numbers are within range. An event of a tenant the
// reporter may not report for goes to its own tenant with reason TENANT_NOT_ALLOWED and no foreign
// identifiers. Strings that cannot be cleaned
// (an agent that is not of the event's tenant) are dropped. ev.Scopes is replaced, never changed in
// place, since it may be shared with the caller.
func (r *AccessReporter) sanitize(ev *AccessEvent, now time.Time) {
	switch {
	case !ValidTenant(ev.Tenant):
		ev.Tenant = r.tenant
	case ev.Tenant != r.tenant && !slices.Contains(r.others, ev.Tenant):
		// A verified token of a tenant this reporter may not report for: recorded in the reporter's
		// own tenant, without the foreign token's identifiers.
		ev.Tenant, ev.Reason = r.tenant, ReasonTenantNotAllowed
		ev.Agent, ev.ClientID, ev.Subject, ev.OnBehalfOf, ev.Environment, ev.TokenID = "", "", "", "", "", ""
		ev.Scopes = nil
	}
	if ev.Time.IsZero() || ev.Time.After(now) {
		ev.Time = now
	}
	if a := ev.Agent; a != "" {
		id, ok := cutAgentPrefix(a, ev.Tenant)
		if !ok || id == "" || strings.Contains(id, "/") || len(a) > MaxAccessFieldLen || !isPrintable(a) {
			ev.Agent = ""
		}
	}
	ev.Resource = cleanField(ev.Resource, MaxAccessResourceLen, false)
	if ev.Resource == "" {
		ev.Resource = "/"
	}
	for _, f := range []*string{&ev.ClientID, &ev.Subject, &ev.OnBehalfOf, &ev.Environment, &ev.Action,
		&ev.Reason, &ev.TraceID, &ev.SourceAddress, &ev.TokenID, &ev.Audience} {
		*f = cleanField(*f, MaxAccessFieldLen, false)
	}
	ev.RequestID = cleanField(ev.RequestID, MaxAccessRequestIDLen, false)
	ev.Scopes = cleanScopes(ev.Scopes)
	switch ev.Binding {
	case "", BindingBearer, BindingDPoP, BindingMTLS:
	default:
		ev.Binding = ""
	}
	if ev.Status < 0 || ev.Status > 999 {
		ev.Status = 0
	}
	ev.ResponseBytes, ev.Rows, ev.Latency = max(ev.ResponseBytes, 0), max(ev.Rows, 0), max(ev.Latency, 0)
}

// cutAgentPrefix cuts "tenants/{tenant}/agents/" from name without building that string.
func cutAgentPrefix(name, tenant string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "tenants/")
	if !ok {
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, tenant); !ok {
		return "", false
	}
	return strings.CutPrefix(rest, "/agents/")
}

// cleanScopes returns scopes when they are acceptable, else a cleaned copy.
func cleanScopes(scopes []string) []string {
	ok := len(scopes) <= MaxAccessScopes
	for _, s := range scopes {
		if !ok {
			break
		}
		ok = s != "" && cleanField(s, MaxAccessScopeLen, true) == s
	}
	if ok {
		return scopes
	}
	out := make([]string, 0, min(len(scopes), MaxAccessScopes))
	for _, s := range scopes {
		if len(out) == MaxAccessScopes {
			break
		}
		if s = cleanField(s, MaxAccessScopeLen, true); s != "" {
			out = append(out, s)
		}
	}
	return slices.Clip(out)
}

// cleanField returns s when it is printable valid UTF-8 of at most max bytes (and, with noSpace,
// without spaces); otherwise a copy with every invalid byte, control or non-printable character (and
// space) replaced by U+FFFD, cut to max bytes on a rune boundary.
func cleanField(s string, max int, noSpace bool) string {
	if len(s) <= max && printableASCII(s, noSpace) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) || (noSpace && r == ' ') {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

// printableASCII reports whether s holds only printable ASCII (space included unless noSpace).
func printableASCII(s string, noSpace bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || (noSpace && c == ' ') {
			return false
		}
	}
	return true
}

// isPrintable reports whether s is valid UTF-8 of printable characters, as the monitor checks.
func isPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// splitBySize cuts events into consecutive parts whose request, with overhead bytes besides the
// events, encodes to at most limit bytes; every part holds at least one event.
func splitBySize(events []*monitorv1.AccessEvent, overhead, limit int) [][]*monitorv1.AccessEvent {
	var parts [][]*monitorv1.AccessEvent
	start, size := 0, overhead
	for i, ev := range events {
		n := proto.Size(ev)
		n += protowire.SizeTag(3) + protowire.SizeVarint(uint64(n))
		if i > start && size+n > limit {
			parts = append(parts, events[start:i])
			start, size = i, overhead
		}
		size += n
	}
	if start < len(events) {
		parts = append(parts, events[start:])
	}
	return parts
}
