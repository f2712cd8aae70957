package discovery

import (
	"regexp"
	"strings"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Rule is one detector of a code scan.
type Rule struct {
	// ID names the rule in findings and SARIF (e.g. `credential.aws-access-key`).
	ID string
	// Kind is the kind of its findings.
	Kind registryv1.FindingKind
	// Severity of its findings (an owned finding is one level lower).
	Severity registryv1.FindingSeverity
	// Description says what it finds, in a sentence.
	Description string

	re *regexp.Regexp
	// group is the submatch holding the value (0: the whole match).
	group int
	// keywords: the rule runs on a file only if its lowercased content holds one of them.
	keywords []string
	// fileRequires: ... and all of these.
	fileRequires []string
	// secret: the value is redacted; otherwise it is an identifier shown in full.
	secret bool
	// ident is the identifier kind of a non-secret value (client id, agent id).
	ident registryv1.IdentifierKind
	// accept filters values (nil: all).
	accept func(v string) bool
	// oncePerFile reports only the first match in a file.
	oncePerFile bool
	// generic rules run after the specific ones and skip spans those matched.
	generic bool
	// pem marks the private key rule, whose value is the whole PEM block.
	pem bool
	// noPrefix: the redacted value shows no character of the secret. Set for rules whose values
	// may be chosen by people (passwords, client secrets, secret-like assignments): a prefix of a
	// low-entropy value plus its unsalted fingerprint would shorten a guess.
	noPrefix bool
}

// secretValue accepts values that are not placeholders.
func secretValue(v string) bool { return !isPlaceholder(v) }

// highEntropy accepts values that look random: at least 16 characters, two character classes, at
// least 3.5 bits of entropy per character, and not a placeholder.
func highEntropy(v string) bool {
	return len(v) >= 16 && charClasses(v) >= 2 && entropy(v) >= 3.5 && !isPlaceholder(v)
}

// notAnthropic keeps the OpenAI rule from reporting Anthropic keys twice.
func notAnthropic(v string) bool { return !strings.HasPrefix(v, "sk-ant-") && !isPlaceholder(v) }

// identifierValue accepts client ids and agent ids that are literal values, not references.
func identifierValue(v string) bool {
	return !isPlaceholder(v) && !strings.HasPrefix(v, "$") && v != "null" && v != "none" && v != "true" && v != "false"
}

var (
	kindDef    = registryv1.FindingKind_FINDING_KIND_AGENT_DEFINITION
	kindClient = registryv1.FindingKind_FINDING_KIND_OAUTH_CLIENT
	kindCred   = registryv1.FindingKind_FINDING_KIND_STATIC_CREDENTIAL
	sevLow     = registryv1.FindingSeverity_FINDING_SEVERITY_LOW
	sevMedium  = registryv1.FindingSeverity_FINDING_SEVERITY_MEDIUM
	sevHigh    = registryv1.FindingSeverity_FINDING_SEVERITY_HIGH
)

// rules are the code scan's detectors, specific ones first.
var rules = []*Rule{
	// Static credentials.
	{ID: "credential.aws-access-key", Kind: kindCred, Severity: sevHigh, Description: "AWS access key id",
		re: regexp.MustCompile(`\b((?:AKIA|ASIA)[0-9A-Z]{16})\b`), group: 1, keywords: []string{"akia", "asia"}, secret: true, accept: secretValue},
	{ID: "credential.aws-secret-key", Kind: kindCred, Severity: sevHigh, Description: "AWS secret access key",
		re:    regexp.MustCompile(`(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})\b`),
		group: 1, keywords: []string{"secret_access_key", "secretaccesskey"}, secret: true, accept: secretValue},
	{ID: "credential.github-token", Kind: kindCred, Severity: sevHigh, Description: "GitHub token",
		re:    regexp.MustCompile(`\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b`),
		group: 1, keywords: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"}, secret: true, accept: secretValue},
	{ID: "credential.slack-token", Kind: kindCred, Severity: sevHigh, Description: "Slack token",
		re:    regexp.MustCompile(`\b(xox[abposr]-[0-9A-Za-z-]{10,250})`),
		group: 1, keywords: []string{"xox"}, secret: true, accept: secretValue},
	{ID: "credential.slack-webhook", Kind: kindCred, Severity: sevHigh, Description: "Slack incoming webhook URL",
		re:    regexp.MustCompile(`(https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})`),
		group: 1, keywords: []string{"hooks.slack.com"}, secret: true, accept: secretValue},
	{ID: "credential.anthropic-key", Kind: kindCred, Severity: sevHigh, Description: "Anthropic API key",
		re:    regexp.MustCompile(`\b(sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{32,})`),
		group: 1, keywords: []string{"sk-ant-"}, secret: true, accept: secretValue},
	{ID: "credential.openai-key", Kind: kindCred, Severity: sevHigh, Description: "OpenAI API key",
		re:    regexp.MustCompile(`\b(sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,})`),
		group: 1, keywords: []string{"sk-"}, secret: true, accept: notAnthropic},
	{ID: "credential.jwt", Kind: kindCred, Severity: sevHigh, Description: "JSON Web Token",
		re:    regexp.MustCompile(`\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})`),
		group: 1, keywords: []string{"eyj"}, secret: true, accept: secretValue},
	{ID: "credential.private-key", Kind: kindCred, Severity: sevHigh, Description: "PEM private key",
		re:    regexp.MustCompile(`-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY)-----`),
		group: 0, keywords: []string{"private key-----"}, secret: true, pem: true},

	// OAuth client configurations.
	{ID: "oauth.client-secret", Kind: kindClient, Severity: sevHigh, Description: "OAuth client secret",
		re:    regexp.MustCompile(`(?i)client[_-]?secret["']?\s*[:=]\s*["']?([^\s"',;#]{8,})`),
		group: 1, keywords: []string{"client_secret", "clientsecret", "client-secret"}, secret: true, noPrefix: true, accept: secretValue},
	{ID: "oauth.client-id", Kind: kindClient, Severity: sevMedium, Description: "OAuth client id",
		re:    regexp.MustCompile(`(?i)client[_-]?id["']?\s*[:=]\s*["']?([A-Za-z0-9][A-Za-z0-9._:@/-]{2,127})`),
		group: 1, keywords: []string{"client_id", "clientid", "client-id"}, ident: registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, accept: identifierValue},
	{ID: "oauth.token-url", Kind: kindClient, Severity: sevLow, Description: "OAuth token endpoint configuration",
		re:    regexp.MustCompile(`(?i)token[_-]?(?:url|endpoint|uri)["']?\s*[:=]\s*["']?(https?://[^\s"',;]+)`),
		group: 1, keywords: []string{"token_url", "tokenurl", "token-url", "token_endpoint", "tokenendpoint", "token_uri", "token-endpoint"}, accept: identifierValue},

	// Agent definitions.
	{ID: "agent.agentid-id", Kind: kindDef, Severity: sevMedium, Description: "agentid agent id reference",
		re:    regexp.MustCompile(`\b(agt_[0-9a-hjkmnp-tv-z]{26})\b`),
		group: 1, keywords: []string{"agt_"}, ident: registryv1.IdentifierKind_IDENTIFIER_KIND_AGENT_ID},
	{ID: "agent.agentid-manifest", Kind: kindDef, Severity: sevMedium, Description: "agentid Agent manifest (apiVersion agentid.dev/v1, kind Agent)",
		re:    regexp.MustCompile(`^\s*kind:\s*["']?(Agent)["']?\s*$`),
		group: 1, keywords: []string{"agentid.dev/v1"}, fileRequires: []string{"kind:"}},
	{ID: "agent.k8s-workload", Kind: kindDef, Severity: sevMedium, Description: "Kubernetes workload labelled as an AI agent",
		re:    regexp.MustCompile(`^\s*["']?((?:agentid\.dev/agent(?:-id)?|ai-agent|agent|app\.kubernetes\.io/component))["']?\s*:\s*["']?(agent|true|[A-Za-z0-9._-]*agent[A-Za-z0-9._-]*|agt_[0-9a-z]{26})["']?\s*$`),
		group: 2, keywords: []string{"kind: deployment", "kind: statefulset", "kind: cronjob", "kind: job", "kind: daemonset"}, fileRequires: []string{"apiversion:", "labels:"}, oncePerFile: true},
	{ID: "agent.langchain", Kind: kindDef, Severity: sevMedium, Description: "LangChain / LangGraph agent",
		re:    regexp.MustCompile(`\b(AgentExecutor|create_react_agent|create_openai_functions_agent|create_openai_tools_agent|create_tool_calling_agent|create_structured_chat_agent|initialize_agent|createReactAgent|createToolCallingAgent)\s*[\(.]`),
		group: 1, keywords: []string{"langchain", "langgraph"}, oncePerFile: true},
	{ID: "agent.crewai", Kind: kindDef, Severity: sevMedium, Description: "CrewAI agent or crew",
		re:    regexp.MustCompile(`\b(Agent|Crew)\s*\(`),
		group: 1, keywords: []string{"crewai"}, oncePerFile: true},
	{ID: "agent.crewai-config", Kind: kindDef, Severity: sevMedium, Description: "CrewAI agents.yaml definition (role, goal, backstory)",
		re:    regexp.MustCompile(`^\s*(role)\s*:`),
		group: 1, keywords: []string{"backstory:"}, fileRequires: []string{"goal:", "role:"}, oncePerFile: true},
	{ID: "agent.autogen", Kind: kindDef, Severity: sevMedium, Description: "AutoGen agent",
		re:    regexp.MustCompile(`\b(AssistantAgent|UserProxyAgent|ConversableAgent|GroupChatManager)\s*\(`),
		group: 1, keywords: []string{"autogen"}, oncePerFile: true},
	{ID: "agent.openai-assistant", Kind: kindDef, Severity: sevMedium, Description: "OpenAI Assistants / Agents SDK definition",
		re:    regexp.MustCompile(`(assistants\.create\s*\(|"object"\s*:\s*"assistant"|\bAgent\s*\(\s*name\s*=)`),
		group: 1, keywords: []string{"assistants.create", "\"assistant\"", "from agents import", "openai"}, oncePerFile: true},

	// Generic high-entropy assignments, last.
	{ID: "credential.generic-secret", Kind: kindCred, Severity: sevHigh, Description: "High-entropy value assigned to a secret-like name",
		re:    regexp.MustCompile(`(?i)[a-z0-9_.-]*(?:secret|token|api[_-]?key|apikey|password|passwd|access[_-]?key|auth)[a-z0-9_.-]*["']?\s*[:=]\s*["']?([A-Za-z0-9+/_\-.=~]{16,})`),
		group: 1, keywords: []string{"secret", "token", "key", "password", "passwd", "auth"}, secret: true, noPrefix: true, accept: highEntropy, generic: true},
}

// Rules returns the code scan's rules (for SARIF's rule table and docs).
func Rules() []*Rule { return rules }

// ruleByID returns the rule with id, nil if none.
func ruleByID(id string) *Rule {
	for _, r := range rules {
		if r.ID == id {
			return r
		}
	}
	return nil
}
