// Package manifest reads agents-as-code manifests (`apiVersion: agentid.dev/v1`, `kind: Agent`):
// YAML files of one or more documents, or directories of them, checked strictly (an unknown field
// is an error naming its file, line and path), converted into registry Agents and compared with
// what the registry holds. The Go types below are the manifest's single definition: the YAML
// reader and the published JSON Schema (schemas/agent.v1.json) are both derived from them.
package manifest

// APIVersion is the only manifest version this package reads.
const APIVersion = "agentid.dev/v1"

// KindAgent is the kind of an agent manifest.
const KindAgent = "Agent"

// Labels agentctl apply puts on the agents it manages.
const (
	// LabelManagedBy marks an agent as managed by agents as code; its value is ManagedByAgentctl.
	LabelManagedBy = "agentid.dev/managed-by"
	// ManagedByAgentctl is the value of LabelManagedBy.
	ManagedByAgentctl = "agentctl"
	// LabelSource names the manifest set (`--set`) an agent was applied from; --prune retires only
	// agents of that set.
	LabelSource = "agentid.dev/source"
	// LabelName is the manifest's metadata.name.
	LabelName = "agentid.dev/name"
)

// Manifest is one `kind: Agent` document.
type Manifest struct {
	APIVersion string   `yaml:"apiVersion" required:"true" enum:"agentid.dev/v1" doc:"Manifest version: agentid.dev/v1."`
	Kind       string   `yaml:"kind" required:"true" enum:"Agent" doc:"Kind of the document: Agent."`
	Metadata   Metadata `yaml:"metadata" required:"true" doc:"Identity of the agent within its tenant."`
	Spec       Spec     `yaml:"spec" required:"true" doc:"The agent's declared record."`

	// File is the file the document was read from, Line the line it starts at (not part of the
	// document).
	File string `yaml:"-"`
	// Line is the document's first line in File.
	Line int `yaml:"-"`
	// Dir is the directory of File, against which file references resolve.
	Dir string `yaml:"-"`
	// JWKS is the agent's public JWK Set as JSON, read from spec.publicKeys (not part of the document).
	JWKS string `yaml:"-"`
	// lines maps a field path (e.g. `spec.scopes[1]`) to its line in File.
	lines map[string]int
}

// Metadata identifies an agent within its tenant.
type Metadata struct {
	Name   string            `yaml:"name" required:"true" pattern:"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" rule:"must be 1 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit" doc:"Stable name of the agent within its tenant (lowercase letters, digits and dashes, at most 63 characters); the agent id is derived from it, so renaming makes a new agent."`
	Tenant string            `yaml:"tenant" pattern:"^[a-z][a-z0-9-]{1,62}$" rule:"must be a tenant id: a lowercase letter, then 1 to 62 lowercase letters, digits and dashes" doc:"Tenant the agent belongs to; default: agentctl's --tenant (or the logged-in session's)."`
	Labels map[string]string `yaml:"labels" maxProperties:"61" reservedKeyPrefix:"agentid.dev/" keyPattern:"^[a-z0-9._/-]{1,63}$" pattern:"^[a-z0-9._/-]{0,63}$" rule:"must be at most 63 lowercase letters, digits, '-', '_', '.' and '/'" doc:"Labels: keys and values of at most 63 lowercase letters, digits, '-', '_', '.', '/'. Keys starting with agentid.dev/ are reserved."`
}

// Spec is the agent's declared record: every field of the registry's Agent a caller may set.
type Spec struct {
	DisplayName          string       `yaml:"displayName" required:"true" maxLength:"200" doc:"Human-readable name."`
	Owner                string       `yaml:"owner" required:"true" maxLength:"200" doc:"Accountable owner: a team (team:payments) or a person (alice@corp.example)."`
	Sponsor              string       `yaml:"sponsor" required:"true" maxLength:"200" doc:"Sponsor who asked for the agent (a person or team)."`
	Purpose              string       `yaml:"purpose" required:"true" maxLength:"1000" doc:"Business purpose, in a sentence."`
	Environment          string       `yaml:"environment" required:"true" enum:"dev|test|staging|prod" doc:"Environment the identity is valid in; each environment is its own agent."`
	Autonomy             string       `yaml:"autonomy" required:"true" enum:"assistive|autonomous" doc:"assistive: a human reviews or triggers each action; autonomous: the agent acts on its own."`
	IdentityModel        string       `yaml:"identityModel" required:"true" enum:"autonomous|delegated" doc:"autonomous: the agent acts as itself; delegated: on behalf of a user."`
	TrustBoundary        string       `yaml:"trustBoundary" required:"true" enum:"internal|b2b|public" doc:"Who the agent is exposed to."`
	DataSensitivity      string       `yaml:"dataSensitivity" required:"true" enum:"public|internal|confidential|pii|phi|pci" doc:"Most sensitive data the agent touches."`
	Function             string       `yaml:"function" enum:"assistant|retrieval|automation|data-pipeline|code|customer-support|security|finance|other" doc:"What the agent does (an input of its classification)."`
	Scopes               []string     `yaml:"scopes" required:"true" minItems:"1" maxItems:"100" unique:"true" pattern:"^[a-z][a-z0-9_-]*\\.[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)?$" rule:"must be named resource.action[.qualifier] in lowercase letters, digits, '_' and '-'" doc:"Scopes the agent may be granted, named resource.action[.qualifier]."`
	Roles                []string     `yaml:"roles" maxItems:"50" unique:"true" pattern:"^[a-z][a-z0-9._:-]{0,62}$" rule:"must be a role name: a lowercase letter, then at most 62 lowercase letters, digits, '.', '_', ':' or '-'" doc:"Roles the agent holds (names of the tenant's roles)."`
	CredentialType       string       `yaml:"credentialType" enum:"private-key-jwt|private-key-jwt-dpop" doc:"How the agent authenticates; default private-key-jwt."`
	PublicKeys           PublicKeys   `yaml:"publicKeys" required:"true" exactlyOne:"jwks|jwksFile" doc:"The agent's public keys: an inline JWK Set or a file holding one (public keys only)."`
	Expires              string       `yaml:"expires" pattern:"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})|[1-9][0-9]*(d|h|m))$" rule:"must be an RFC 3339 time (2026-12-31T00:00:00Z) or a TTL (90d, 720h, 30m)" doc:"When the identity expires: an RFC 3339 time, or a TTL counted from the agent's registration (90d, 720h, 30m)."`
	DecommissionCriteria string       `yaml:"decommissionCriteria" maxLength:"1000" doc:"When the agent must be decommissioned, in a sentence."`
	Dependencies         []Dependency `yaml:"dependencies" maxItems:"50" doc:"Resources the agent depends on that its teardown cleans up."`
}

// PublicKeys names the agent's public keys: exactly one of jwks and jwksFile.
type PublicKeys struct {
	JWKS     *JWKS  `yaml:"jwks" doc:"An inline JWK Set."`
	JWKSFile string `yaml:"jwksFile" doc:"Path of a JWK Set file (JSON), relative to the manifest."`
}

// JWKS is an inline JWK Set.
type JWKS struct {
	Keys []map[string]any `yaml:"keys" required:"true" minItems:"1" maxItems:"5" doc:"The public keys (JWKs)."`
}

// Dependency is a resource the agent depends on.
type Dependency struct {
	Kind        string `yaml:"kind" required:"true" enum:"queue|webhook|storage|database|api|secret|other" doc:"Kind of resource."`
	URI         string `yaml:"uri" required:"true" maxLength:"2048" doc:"Where it is (a URL or a provider resource name, never a secret)."`
	Description string `yaml:"description" maxLength:"500" doc:"What it is for."`
}

// LineOf returns the line of the field at path (e.g. `spec.scopes[1]`), else the line of the nearest
// enclosing field, else the document's first line.
func (m *Manifest) LineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := m.lines[p]; ok {
			return l
		}
	}
	return m.Line
}

// parentPath returns the path enclosing p: `spec.scopes[1]` → `spec.scopes` → `spec` → "".
func parentPath(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		switch p[i] {
		case '.':
			return p[:i]
		case '[':
			return p[:i]
		}
	}
	return ""
}
