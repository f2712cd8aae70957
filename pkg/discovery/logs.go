package discovery

import (
	"bufio"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Limits of log aggregation.
const (
	// MaxLogLine is the longest access log line parsed; longer lines are malformed.
	MaxLogLine = 64 << 10
	// maxPaths is how many distinct paths a log finding keeps.
	maxPaths = 10
	// maxIdentities bounds the distinct client ids and keys one aggregation tracks; lines of further
	// identities are counted in Overflow.
	maxIdentities = 100_000
)

// LogRecord is what one access log line says about its caller.
type LogRecord struct {
	// Time of the request.
	Time time.Time
	// Path of the request, without its query string.
	Path string
	// ClientID the caller presented (a header, or the client_id / azp claim of its bearer token).
	ClientID string
	// APIKey the caller presented (a secret: only its fingerprint and a redacted prefix are kept).
	APIKey string
}

// ParseLine parses one access log line of format.
type ParseLine func(line string) (LogRecord, error)

// ParserFor returns the line parser of format.
func ParserFor(format registryv1.LogFormat) (ParseLine, error) {
	switch format {
	case registryv1.LogFormat_LOG_FORMAT_NGINX:
		return ParseNginx, nil
	case registryv1.LogFormat_LOG_FORMAT_ENVOY:
		return ParseEnvoy, nil
	default:
		return nil, fmt.Errorf("format: must be nginx or envoy, not %s", format)
	}
}

// nginxRE is nginx `combined` followed by up to two quoted fields: the client id and the API key of
// the `agentid` log_format (docs/discovery.md).
var nginxRE = regexp.MustCompile(`^(\S+) \S+ (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?(?: "((?:[^"\\]|\\.)*)")?\s*$`)

// nginxTime is $time_local.
const nginxTime = "02/Jan/2006:15:04:05 -0700"

// ParseNginx parses a line of the `agentid` nginx log_format: combined, then "$http_x_client_id"
// and "$http_x_api_key" (each optional, `-` when absent).
func ParseNginx(line string) (LogRecord, error) {
	m := nginxRE.FindStringSubmatch(line)
	if m == nil {
		return LogRecord{}, fmt.Errorf("not an nginx combined line")
	}
	t, err := time.Parse(nginxTime, m[3])
	if err != nil {
		return LogRecord{}, fmt.Errorf("time_local %q: %w", m[3], err)
	}
	req := strings.Fields(m[4])
	if len(req) < 2 {
		return LogRecord{}, fmt.Errorf("request %q: want METHOD PATH PROTOCOL", m[4])
	}
	return LogRecord{Time: t.UTC(), Path: stripQuery(req[1]), ClientID: dash(m[9]), APIKey: dash(m[10])}, nil
}

// ParseEnvoy parses an Envoy JSON access log line. It reads start_time; the path from path,
// :path, x-envoy-original-path or request_path; the client id from client_id, x-client-id,
// x_client_id or the client_id/azp claim of a bearer token in authorization; the API key from
// api_key, x-api-key or x_api_key.
func ParseEnvoy(line string) (LogRecord, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return LogRecord{}, fmt.Errorf("not a JSON object: %w", err)
	}
	str := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := m[k].(string); ok && v != "" && v != "-" {
				return v
			}
		}
		return ""
	}
	ts := str("start_time", "timestamp", "@timestamp")
	if ts == "" {
		return LogRecord{}, fmt.Errorf("start_time: is required")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return LogRecord{}, fmt.Errorf("start_time %q: %w", ts, err)
	}
	rec := LogRecord{
		Time:     t.UTC(),
		Path:     stripQuery(str("path", ":path", "x-envoy-original-path", "request_path")),
		ClientID: str("client_id", "x-client-id", "x_client_id"),
		APIKey:   str("api_key", "x-api-key", "x_api_key"),
	}
	if rec.ClientID == "" {
		rec.ClientID = bearerClientID(str("authorization"))
	}
	return rec, nil
}

// bearerClientID returns the client_id (else azp) claim of a bearer JWT, unverified: it only names
// who called; "" when there is none.
func bearerClientID(auth string) string {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return ""
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		ClientID string `json:"client_id"`
		Azp      string `json:"azp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return cmp.Or(claims.ClientID, claims.Azp)
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func stripQuery(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// logKey identifies one aggregated identity.
type logKey struct {
	apiKey bool
	fp     string
}

// logEntry is one identity's requests.
type logEntry struct {
	value       string // the client id, or the redacted API key
	count       int64
	first, last time.Time
	firstLine   int64
	paths       []string
}

// LogAggregator counts the client ids and API keys of access log lines.
type LogAggregator struct {
	format  registryv1.LogFormat
	parse   ParseLine
	source  string
	entries map[logKey]*logEntry
	// Lines is the number of lines seen, Parsed those that parsed, Malformed those that did not,
	// Overflow those of identities beyond the tracking limit.
	Lines, Parsed, Malformed, Overflow int64
}

// NewLogAggregator returns an aggregator of lines of format from the log named source.
func NewLogAggregator(format registryv1.LogFormat, source string) (*LogAggregator, error) {
	p, err := ParserFor(format)
	if err != nil {
		return nil, err
	}
	return &LogAggregator{format: format, parse: p, source: source, entries: map[logKey]*logEntry{}}, nil
}

// Add parses and counts one line; a malformed line is counted, not fatal.
func (a *LogAggregator) Add(line string) {
	a.Lines++
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" {
		return
	}
	if len(line) > MaxLogLine {
		a.Malformed++
		return
	}
	rec, err := a.parse(line)
	if err != nil {
		a.Malformed++
		return
	}
	a.Parsed++
	if rec.ClientID != "" {
		a.count(logKey{fp: Fingerprint(rec.ClientID)}, rec.ClientID, rec)
	}
	if rec.APIKey != "" {
		a.count(logKey{apiKey: true, fp: Fingerprint(rec.APIKey)}, Redact(rec.APIKey), rec)
	}
}

func (a *LogAggregator) count(k logKey, value string, rec LogRecord) {
	e := a.entries[k]
	if e == nil {
		if len(a.entries) >= maxIdentities {
			a.Overflow++
			return
		}
		e = &logEntry{value: value, first: rec.Time, last: rec.Time, firstLine: a.Lines}
		a.entries[k] = e
	}
	e.count++
	if rec.Time.Before(e.first) {
		e.first = rec.Time
	}
	if rec.Time.After(e.last) {
		e.last = rec.Time
	}
	if rec.Path != "" && len(e.paths) < maxPaths && !slices.Contains(e.paths, rec.Path) {
		e.paths = append(e.paths, rec.Path)
	}
}

// ReadFrom adds every line of r.
func (a *LogAggregator) ReadFrom(r io.Reader) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var n int64
	for {
		line, err := readLine(br)
		n += int64(len(line))
		if len(line) > 0 {
			a.Add(line)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// readLine reads one line of any length, keeping at most MaxLogLine+1 bytes of it (so an overlong
// line is malformed without being held in memory).
func readLine(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		chunk, isPrefix, err := br.ReadLine()
		if sb.Len() <= MaxLogLine {
			sb.Write(chunk[:min(len(chunk), MaxLogLine+1-sb.Len())])
		}
		if err != nil {
			return sb.String(), err
		}
		if !isPrefix {
			return sb.String(), nil
		}
	}
}

// Findings returns one unresolved finding per identity seen, most requests first.
func (a *LogAggregator) Findings() []*registryv1.Finding {
	fmtName := strings.ToLower(strings.TrimPrefix(a.format.String(), "LOG_FORMAT_"))
	out := make([]*registryv1.Finding, 0, len(a.entries))
	for k, e := range a.entries {
		f := &registryv1.Finding{
			Source:        registryv1.FindingSource_FINDING_SOURCE_LOGS,
			File:          a.source,
			Line:          int32(min(e.firstLine, 1<<31-1)),
			Fingerprint:   k.fp,
			Ghost:         true,
			Count:         e.count,
			FirstSeen:     timestamppb.New(e.first),
			LastSeen:      timestamppb.New(e.last),
			Paths:         e.paths,
			RedactedValue: e.value,
		}
		if k.apiKey {
			f.Kind = registryv1.FindingKind_FINDING_KIND_GATEWAY_API_KEY
			f.RuleId = "log." + fmtName + ".api-key"
			f.Severity = sevHigh
			f.Identifier = &registryv1.Identifier{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT, Value: k.fp}
			f.Message = fmt.Sprintf("API key %s used in %d requests", e.value, e.count)
		} else {
			f.Kind = registryv1.FindingKind_FINDING_KIND_GATEWAY_CLIENT
			f.RuleId = "log." + fmtName + ".client-id"
			f.Severity = sevHigh
			f.Identifier = &registryv1.Identifier{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, Value: e.value}
			f.Message = fmt.Sprintf("client %s made %d requests", e.value, e.count)
			f.Hints = map[string]string{"name": e.value}
		}
		f.Id = FindingID(f.Source, f.RuleId, f.Fingerprint, f.File)
		out = append(out, f)
	}
	slices.SortFunc(out, func(x, y *registryv1.Finding) int {
		return cmp.Or(cmp.Compare(y.GetCount(), x.GetCount()), cmp.Compare(x.GetRuleId(), y.GetRuleId()), cmp.Compare(x.GetRedactedValue(), y.GetRedactedValue()))
	})
	return out
}
