package discovery

import (
	"encoding/json"
	"io"
	"net/url"
	"strings"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// SARIF 2.1.0 documents (the subset code scanning reads).
const (
	sarifVersion = "2.1.0"
	sarifSchema  = "https://json.schemastore.org/sarif-2.1.0.json"
)

// SARIFLog is a SARIF 2.1.0 log.
type SARIFLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []SARIFRun `json:"runs"`
}

// SARIFRun is one run of one tool.
type SARIFRun struct {
	Tool    SARIFTool     `json:"tool"`
	Results []SARIFResult `json:"results"`
}

// SARIFTool names the tool.
type SARIFTool struct {
	Driver SARIFDriver `json:"driver"`
}

// SARIFDriver is the tool's driver with its rules.
type SARIFDriver struct {
	Name           string      `json:"name"`
	Version        string      `json:"version,omitempty"`
	InformationURI string      `json:"informationUri,omitempty"`
	Rules          []SARIFRule `json:"rules"`
}

// SARIFRule describes one rule.
type SARIFRule struct {
	ID                   string          `json:"id"`
	Name                 string          `json:"name"`
	ShortDescription     SARIFMessage    `json:"shortDescription"`
	DefaultConfiguration SARIFRuleConfig `json:"defaultConfiguration"`
	Properties           map[string]any  `json:"properties,omitempty"`
	HelpURI              string          `json:"helpUri,omitempty"`
	Help                 *SARIFMessage   `json:"help,omitempty"`
}

// SARIFRuleConfig is a rule's default level.
type SARIFRuleConfig struct {
	Level string `json:"level"`
}

// SARIFMessage is a text message.
type SARIFMessage struct {
	Text string `json:"text"`
}

// SARIFResult is one finding.
type SARIFResult struct {
	RuleID              string            `json:"ruleId"`
	RuleIndex           int               `json:"ruleIndex"`
	Level               string            `json:"level"`
	Message             SARIFMessage      `json:"message"`
	Locations           []SARIFLocation   `json:"locations"`
	PartialFingerprints map[string]string `json:"partialFingerprints"`
	Properties          map[string]any    `json:"properties,omitempty"`
}

// SARIFLocation is where a result is.
type SARIFLocation struct {
	PhysicalLocation SARIFPhysicalLocation `json:"physicalLocation"`
}

// SARIFPhysicalLocation is a file region.
type SARIFPhysicalLocation struct {
	ArtifactLocation SARIFArtifactLocation `json:"artifactLocation"`
	Region           *SARIFRegion          `json:"region,omitempty"`
}

// SARIFArtifactLocation is a file relative to the scanned root.
type SARIFArtifactLocation struct {
	URI       string `json:"uri"`
	URIBaseID string `json:"uriBaseId,omitempty"`
}

// SARIFRegion is a line and column.
type SARIFRegion struct {
	StartLine   int `json:"startLine"`
	StartColumn int `json:"startColumn,omitempty"`
}

// sarifLevel maps a finding's severity to a SARIF level.
func sarifLevel(s registryv1.FindingSeverity) string {
	switch s {
	case registryv1.FindingSeverity_FINDING_SEVERITY_HIGH:
		return "error"
	case registryv1.FindingSeverity_FINDING_SEVERITY_MEDIUM:
		return "warning"
	default:
		return "note"
	}
}

// BuildSARIF returns the SARIF 2.1.0 log of code findings (other findings have no file region and
// are left out). toolVersion is the agentctl version.
func BuildSARIF(findings []*registryv1.Finding, toolVersion string) *SARIFLog {
	driver := SARIFDriver{Name: "agentid-discover", Version: toolVersion, InformationURI: "https://github.com/agentid/agentid/blob/main/docs/discovery.md"}
	index := map[string]int{}
	for _, r := range rules {
		index[r.ID] = len(driver.Rules)
		driver.Rules = append(driver.Rules, SARIFRule{
			ID:                   r.ID,
			Name:                 ruleName(r.ID),
			ShortDescription:     SARIFMessage{Text: r.Description},
			DefaultConfiguration: SARIFRuleConfig{Level: sarifLevel(r.Severity)},
			Properties:           map[string]any{"tags": []string{"security", "agentid", strings.ToLower(strings.TrimPrefix(r.Kind.String(), "FINDING_KIND_"))}},
		})
	}
	results := []SARIFResult{}
	for _, f := range findings {
		if f.GetSource() != registryv1.FindingSource_FINDING_SOURCE_CODE {
			continue
		}
		idx, ok := index[f.GetRuleId()]
		if !ok {
			continue
		}
		msg := f.GetMessage()
		if f.GetGhost() {
			msg += ": no registered agent owns it"
		} else {
			msg += ": owned by " + f.GetOwnedBy()
		}
		region := &SARIFRegion{StartLine: max(int(f.GetLine()), 1), StartColumn: max(int(f.GetColumn()), 1)}
		props := map[string]any{"findingId": f.GetId(), "ghost": f.GetGhost(), "fingerprint": f.GetFingerprint()}
		if f.GetOwnedBy() != "" {
			props["ownedBy"] = f.GetOwnedBy()
		}
		results = append(results, SARIFResult{
			RuleID:    f.GetRuleId(),
			RuleIndex: idx,
			Level:     sarifLevel(f.GetSeverity()),
			Message:   SARIFMessage{Text: msg},
			Locations: []SARIFLocation{{PhysicalLocation: SARIFPhysicalLocation{
				ArtifactLocation: SARIFArtifactLocation{URI: sarifURI(f.GetFile()), URIBaseID: "%SRCROOT%"},
				Region:           region,
			}}},
			PartialFingerprints: map[string]string{"agentidFinding/v1": f.GetId()},
			Properties:          props,
		})
	}
	return &SARIFLog{Schema: sarifSchema, Version: sarifVersion, Runs: []SARIFRun{{Tool: SARIFTool{Driver: driver}, Results: results}}}
}

// WriteSARIF writes the SARIF log of findings as indented JSON.
func WriteSARIF(w io.Writer, findings []*registryv1.Finding, toolVersion string) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(BuildSARIF(findings, toolVersion))
}

// ruleName is a rule id in PascalCase (SARIF's rule name).
func ruleName(id string) string {
	var sb strings.Builder
	for _, part := range strings.FieldsFunc(id, func(r rune) bool { return r == '.' || r == '-' }) {
		sb.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return sb.String()
}

// sarifURI escapes a relative file path as a URI reference.
func sarifURI(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
