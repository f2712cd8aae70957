package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// severities are the --min-severity values, least severe first.
var severities = []string{"low", "medium", "high", "critical"}

func newAlertsCmd(g *globals) *cobra.Command {
	cmd := group("alerts", "List and inspect the monitor's alerts")
	cmd.AddCommand(newAlertsListCmd(g), newAlertsGetCmd(g))
	return cmd
}

func newAlertsListCmd(g *globals) *cobra.Command {
	var agent, detector, minSeverity, since string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's alerts, newest first (roles platform-admin, tenant-admin, auditor, analyst)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &monitorv1.ListAlertsRequest{Detector: detector}
			if minSeverity != "" {
				i := slices.Index(severities, strings.ToLower(minSeverity))
				if i < 0 {
					return fmt.Errorf("--min-severity %q: want one of %s", minSeverity, strings.Join(severities, ", "))
				}
				req.MinSeverity = monitorv1.AlertSeverity(i + 1)
			}
			if since != "" {
				t, err := parseWindowStart(since, time.Now())
				if err != nil {
					return fmt.Errorf("--since %q: %w", since, err)
				}
				req.StartTime = timestamppb.New(t)
			}
			if limit < 0 {
				return fmt.Errorf("--limit %d: want 0 (all) or more", limit)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			req.Parent = "tenants/" + g.tenantOr(s)
			if agent != "" {
				// A bare id names a registered agent of the tenant; a ghost agent is named by the
				// client id as seen, given as client:<id>.
				if id, ok := strings.CutPrefix(agent, "client:"); ok {
					req.Agent = id
				} else if req.Agent, err = g.agentName(s, agent); err != nil {
					return fmt.Errorf("--agent: %w", err)
				}
			}
			client := monitorv1.NewMonitorServiceClient(conn)
			var all []*monitorv1.Alert
			for {
				req.PageSize = 1000
				if limit > 0 {
					req.PageSize = int32(min(1000, limit-len(all)))
				}
				resp, err := client.ListAlerts(cmd.Context(), req)
				if err != nil {
					return err
				}
				all = append(all, resp.GetAlerts()...)
				if resp.GetNextPageToken() == "" || (limit > 0 && len(all) >= limit) {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			msgs := make([]proto.Message, len(all))
			for i, a := range all {
				msgs[i] = a
			}
			return g.printResult(msgs, true, func() table {
				t := table{header: []string{"ALERT", "DETECTED", "SEVERITY", "DETECTOR", "AGENT", "SUMMARY"}}
				for _, a := range all {
					t.rows = append(t.rows, []string{a.GetAlertId(), a.GetDetectTime().AsTime().Format(time.RFC3339),
						enumName(a.GetSeverity().String(), "ALERT_SEVERITY_"), a.GetDetector(), a.GetAgent(), a.GetSummary()})
				}
				return t
			})
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "only alerts about this agent (a bare id, a resource name, or client:<id> for an unknown agent)")
	cmd.Flags().StringVar(&detector, "detector", "", "only alerts of this detector (volume_spike, off_hours, new_resource, new_scope, bulk_export, deny_spike, new_source_network, delegation_outside_pattern, inactive_agent_activity, unknown_agent)")
	cmd.Flags().StringVar(&minSeverity, "min-severity", "", "only alerts at least this severe: low, medium, high or critical")
	cmd.Flags().StringVar(&since, "since", "", "only alerts detected since this time (RFC 3339) or this long ago (e.g. 12h, 7d)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many alerts (0: all)")
	return cmd
}

func newAlertsGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get <alert>",
		Short: "Show one alert with its evidence (a resource name tenants/{tenant}/alerts/{id} or a bare id)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			name := args[0]
			if !strings.HasPrefix(name, "tenants/") {
				if name == "" || strings.Contains(name, "/") {
					return fmt.Errorf("alert %q: want tenants/{tenant}/alerts/{id} or a bare alert id", name)
				}
				name = "tenants/" + g.tenantOr(s) + "/alerts/" + name
			}
			resp, err := monitorv1.NewMonitorServiceClient(conn).GetAlert(cmd.Context(), &monitorv1.GetAlertRequest{Name: name})
			if err != nil {
				return err
			}
			a := resp.GetAlert()
			return g.printResult([]proto.Message{a}, false, func() table {
				t := table{header: []string{"FIELD", "VALUE"}}
				add := func(k, v string) {
					if v != "" {
						t.rows = append(t.rows, []string{k, v})
					}
				}
				add("alert", a.GetName())
				add("detector", a.GetDetector())
				add("severity", enumName(a.GetSeverity().String(), "ALERT_SEVERITY_"))
				add("summary", a.GetSummary())
				add("agent", a.GetAgent())
				add("known agent", strconv.FormatBool(a.GetAgentKnown()))
				add("owner", a.GetOwner())
				add("sponsor", a.GetSponsor())
				add("risk tier", a.GetRiskTier())
				add("environment", a.GetEnvironment())
				add("detected", a.GetDetectTime().AsTime().Format(time.RFC3339Nano))
				add("window", a.GetWindowStart().AsTime().Format(time.RFC3339)+" .. "+a.GetWindowEnd().AsTime().Format(time.RFC3339))
				for i, e := range a.GetEvidence() {
					v := fmt.Sprintf("%s: observed %g, baseline %g, score %.2f, threshold %g", e.GetMetric(), e.GetObserved(), e.GetBaseline(), e.GetScore(), e.GetThreshold())
					if e.GetValue() != "" {
						v += ", value " + e.GetValue()
					}
					if e.GetExplanation() != "" {
						v += " (" + e.GetExplanation() + ")"
					}
					add(fmt.Sprintf("evidence[%d]", i), v)
				}
				add("events", strings.Join(a.GetEventIds(), ", "))
				return t
			})
		},
	}
}

// parseWindowStart reads --since: an RFC 3339 time, a duration (30m, 12h), or a number of days (7d)
// before now.
func parseWindowStart(s string, now time.Time) (time.Time, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return time.Time{}, fmt.Errorf("want an RFC 3339 time, a duration such as 12h, or days such as 7d")
		}
		return now.AddDate(0, 0, -n), nil
	}
	t, err := parseSince(s, now)
	if err != nil {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time, a duration such as 12h, or days such as 7d")
	}
	return t, nil
}
