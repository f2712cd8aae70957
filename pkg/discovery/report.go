package discovery

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// WriteJSON writes {"findings": [...], "stats": stats} with the findings in protojson form.
func WriteJSON(w io.Writer, findings []*registryv1.Finding, stats any) error {
	raw := make([]json.RawMessage, 0, len(findings))
	for _, f := range findings {
		b, err := protojson.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode finding %s: %w", f.GetId(), err)
		}
		raw = append(raw, b)
	}
	doc := map[string]any{"findings": raw}
	if stats != nil {
		doc["stats"] = stats
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// WriteTable writes findings as a table: id, severity, kind, rule, where, value, owner.
func WriteTable(w io.Writer, findings []*registryv1.Finding) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSEVERITY\tKIND\tRULE\tWHERE\tVALUE\tOWNED BY")
	for _, f := range findings {
		owner := f.GetOwnedBy()
		if f.GetGhost() {
			owner = "- (ghost)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.GetId(),
			strings.ToLower(strings.TrimPrefix(f.GetSeverity().String(), "FINDING_SEVERITY_")),
			strings.ToLower(strings.TrimPrefix(f.GetKind().String(), "FINDING_KIND_")),
			f.GetRuleId(), where(f), cell(f.GetRedactedValue()), owner)
	}
	return tw.Flush()
}

// where is a finding's location: file:line:col, the log and its count, or the agent.
func where(f *registryv1.Finding) string {
	switch f.GetSource() {
	case registryv1.FindingSource_FINDING_SOURCE_CODE:
		return f.GetFile() + ":" + strconv.Itoa(int(f.GetLine())) + ":" + strconv.Itoa(int(f.GetColumn()))
	case registryv1.FindingSource_FINDING_SOURCE_LOGS:
		s := fmt.Sprintf("%s (%d requests", f.GetFile(), f.GetCount())
		if f.GetLastSeen() != nil {
			s += ", last " + f.GetLastSeen().AsTime().Format("2006-01-02T15:04:05Z")
		}
		return s + ")"
	default:
		if f.GetAgent() != "" {
			return f.GetAgent()
		}
		return f.GetMessage()
	}
}

// cell keeps a table cell on one line and short.
func cell(s string) string {
	s = strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
	if r := []rune(s); len(r) > 60 {
		return string(r[:59]) + "…"
	}
	return s
}
