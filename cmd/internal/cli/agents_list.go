package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// agentListFlags are the filters, order and total of `agentctl agents list` (ListAgentsRequest).
type agentListFlags struct {
	environments, tiers, states, sensitivities, labels []string
	owner, sponsor, scope, orderBy                     string
	expireBefore, inactiveSince, orphaned              string
	total                                              bool
}

func (f *agentListFlags) bind(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.environments, "environment", nil, "only agents of these environments, repeated or comma-separated: "+enumNames(registryv1.Environment_value, "ENVIRONMENT_"))
	fs.StringSliceVar(&f.tiers, "risk-tier", nil, "only agents of these risk tiers: "+enumNames(registryv1.RiskTier_value, "RISK_TIER_"))
	fs.StringSliceVar(&f.states, "state", nil, "only agents in these states: "+enumNames(registryv1.AgentState_value, "AGENT_STATE_"))
	fs.StringSliceVar(&f.sensitivities, "data-sensitivity", nil, "only agents handling data of these sensitivities: "+enumNames(registryv1.DataSensitivity_value, "DATA_SENSITIVITY_"))
	fs.StringArrayVarP(&f.labels, "selector", "l", nil, "label selector, all must hold: key=value, key!=value, key, !key (repeat)")
	fs.StringVar(&f.owner, "owner", "", "only agents this principal owns")
	fs.StringVar(&f.sponsor, "sponsor", "", "only agents this principal sponsors")
	fs.StringVar(&f.scope, "scope", "", "only agents granted this scope")
	fs.StringVar(&f.orphaned, "orphaned", "", "true: only orphaned agents (owner or sponsor departed); false: none of them")
	fs.StringVar(&f.expireBefore, "expire-before", "", "only agents expiring before this time: RFC 3339, or a duration from now (720h)")
	fs.StringVar(&f.inactiveSince, "inactive-since", "", "only agents without activity since this time: RFC 3339, or a duration before now (720h)")
	fs.StringVar(&f.orderBy, "order-by", "", "create_time (default), name, display_name, expire_time, last_active_time or risk_tier, optionally followed by \" desc\"")
	fs.BoolVar(&f.total, "total", false, "also print how many agents match")
}

// request is the ListAgentsRequest of the flags for parent; now resolves durations.
func (f *agentListFlags) request(parent string, now time.Time) (*registryv1.ListAgentsRequest, error) {
	req := &registryv1.ListAgentsRequest{Parent: parent, Owner: f.owner, Sponsor: f.sponsor, Scope: f.scope,
		LabelSelectors: f.labels, OrderBy: f.orderBy, ShowTotalSize: f.total}
	var err error
	if req.Environments, err = enumsFlag[registryv1.Environment]("--environment", f.environments, "ENVIRONMENT_", registryv1.Environment_value); err != nil {
		return nil, err
	}
	if req.RiskTiers, err = enumsFlag[registryv1.RiskTier]("--risk-tier", f.tiers, "RISK_TIER_", registryv1.RiskTier_value); err != nil {
		return nil, err
	}
	if req.States, err = enumsFlag[registryv1.AgentState]("--state", f.states, "AGENT_STATE_", registryv1.AgentState_value); err != nil {
		return nil, err
	}
	if req.DataSensitivities, err = enumsFlag[registryv1.DataSensitivity]("--data-sensitivity", f.sensitivities, "DATA_SENSITIVITY_", registryv1.DataSensitivity_value); err != nil {
		return nil, err
	}
	switch strings.ToLower(f.orphaned) {
	case "":
	case "true":
		req.Orphaned = new(true)
	case "false":
		req.Orphaned = new(false)
	default:
		return nil, fmt.Errorf("--orphaned %q: want true or false", f.orphaned)
	}
	if req.ExpireBefore, err = timeFlag("--expire-before", f.expireBefore, now, 1); err != nil {
		return nil, err
	}
	if req.InactiveSince, err = timeFlag("--inactive-since", f.inactiveSince, now, -1); err != nil {
		return nil, err
	}
	return req, nil
}

// enumsFlag parses enum values given by their short (prod) or full (ENVIRONMENT_PROD) names.
func enumsFlag[E ~int32](flag string, vals []string, prefix string, values map[string]int32) ([]E, error) {
	out := make([]E, 0, len(vals))
	for _, v := range vals {
		name := strings.ToUpper(strings.TrimSpace(v))
		if !strings.HasPrefix(name, prefix) {
			name = prefix + name
		}
		n, ok := values[name]
		if !ok || n == 0 {
			return nil, fmt.Errorf("%s %q: want one of %s", flag, v, enumNames(values, prefix))
		}
		out = append(out, E(n))
	}
	return out, nil
}

// enumNames lists an enum's values (UNSPECIFIED apart) by their short names, in value order.
func enumNames(values map[string]int32, prefix string) string {
	names := make([]string, 0, len(values))
	for k, n := range values {
		if n != 0 {
			names = append(names, k)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return int(values[a] - values[b]) })
	for i, k := range names {
		names[i] = strings.ToLower(strings.TrimPrefix(k, prefix))
	}
	return strings.Join(names, ", ")
}

// timeFlag parses an RFC 3339 time, or a duration counted from now in direction sign.
func timeFlag(flag, v string, now time.Time, sign time.Duration) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return timestamppb.New(t), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("%s %q: want an RFC 3339 time (2026-03-01T00:00:00Z) or a positive duration (720h)", flag, v)
	}
	return timestamppb.New(now.Add(sign * d)), nil
}

// printTotal prints the number of matching agents when --total asked for it: below the table, or
// on stderr beside JSON and YAML (which stay one document).
func (f *agentListFlags) printTotal(g *globals, total int64) error {
	if !f.total {
		return nil
	}
	w := g.stdout
	if g.output != "table" {
		w = g.stderr
	}
	_, err := fmt.Fprintf(w, "%d agents match\n", total)
	return err
}
