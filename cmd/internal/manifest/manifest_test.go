package manifest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/cmd/internal/manifest"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// now is the clock of every test: expiry rules are checked against it.
var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

const jwks = `{"keys":[{"use":"sig","kty":"EC","kid":"k1","crv":"P-256","alg":"ES256","x":"hCSaRSVl16UrX7T6l3mjJ9O5DBsopdqi_P9PyrtlL5Q","y":"Nueb0XNyurJjvm4X0mAVuT14qb4R7UcRvVM-zvM76kM"}]}`

// good is a valid manifest named NAME.
const good = `apiVersion: agentid.dev/v1
kind: Agent
metadata:
  name: NAME
  labels:
    team: support
spec:
  displayName: FAQ bot
  owner: team:support
  sponsor: alice@corp.example
  purpose: Answers questions.
  environment: dev
  autonomy: assistive
  identityModel: autonomous
  trustBoundary: internal
  dataSensitivity: internal
  function: customer-support
  scopes: [faq.read, tickets.read]
  publicKeys:
    jwksFile: key.json
  expires: 30d
`

func doc(name string) string { return strings.ReplaceAll(good, "NAME", name) }

// nested is a manifest one directory below the key file.
func nested(m string) string {
	return strings.Replace(m, "jwksFile: key.json", "jwksFile: ../key.json", 1)
}

// writeSet writes files (name → content) and the key file into a fresh directory.
func writeSet(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := files["key.json"]; !ok {
		if err := os.WriteFile(filepath.Join(dir, "key.json"), []byte(jwks), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func load(t *testing.T, dir string) (*manifest.Set, manifest.Problems) {
	t.Helper()
	set, err := manifest.Load([]string{dir}, manifest.Options{DefaultTenant: "acme", Now: func() time.Time { return now }})
	if err == nil {
		return set, nil
	}
	var probs manifest.Problems
	if !errors.As(err, &probs) {
		t.Fatalf("Load error %T %v, want Problems", err, err)
	}
	return set, probs
}

func TestLoadReadsAValidManifest(t *testing.T) {
	dir := writeSet(t, map[string]string{"a.yaml": doc("faq-bot")})
	set, probs := load(t, dir)
	if probs != nil {
		t.Fatalf("problems: %v", probs)
	}
	if len(set.Manifests) != 1 {
		t.Fatalf("%d manifests, want 1", len(set.Manifests))
	}
	m := set.Manifests[0]
	a := m.Agent("acme", "support", nil, now)
	want := &registryv1.Agent{
		Name: manifest.AgentName("acme", "faq-bot"), AgentId: manifest.AgentID("acme", "faq-bot"), Tenant: "acme",
		DisplayName: "FAQ bot", Owner: "team:support", Sponsor: "alice@corp.example", Purpose: "Answers questions.",
		Environment: registryv1.Environment_ENVIRONMENT_DEV, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL, Function: "customer-support",
		Scopes: []string{"faq.read", "tickets.read"}, CredentialType: registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT,
	}
	if a.GetName() != want.GetName() || a.GetTenant() != "acme" || a.GetDisplayName() != want.GetDisplayName() ||
		a.GetOwner() != want.GetOwner() || a.GetSponsor() != want.GetSponsor() || a.GetPurpose() != want.GetPurpose() ||
		a.GetEnvironment() != want.GetEnvironment() || a.GetAutonomy() != want.GetAutonomy() ||
		a.GetIdentityModel() != want.GetIdentityModel() || a.GetTrustBoundary() != want.GetTrustBoundary() ||
		a.GetDataSensitivity() != want.GetDataSensitivity() || a.GetFunction() != want.GetFunction() ||
		strings.Join(a.GetScopes(), ",") != "faq.read,tickets.read" || a.GetCredentialType() != want.GetCredentialType() {
		t.Fatalf("agent %v, want %v", a, want)
	}
	if a.GetPublicJwks() != jwks {
		t.Errorf("public_jwks %s, want %s", a.GetPublicJwks(), jwks)
	}
	if got := a.GetExpireTime().AsTime(); !got.Equal(now.Add(30 * 24 * time.Hour)) {
		t.Errorf("expire_time %s, want 30 days after registration", got)
	}
	wantLabels := map[string]string{"team": "support", manifest.LabelManagedBy: "agentctl", manifest.LabelSource: "support", manifest.LabelName: "faq-bot"}
	if len(a.GetLabels()) != len(wantLabels) {
		t.Fatalf("labels %v, want %v", a.GetLabels(), wantLabels)
	}
	for k, v := range wantLabels {
		if a.GetLabels()[k] != v {
			t.Errorf("label %s=%q, want %q", k, a.GetLabels()[k], v)
		}
	}
	// The id follows from tenant and name alone.
	if manifest.AgentID("acme", "faq-bot") != manifest.AgentID("acme", "faq-bot") || manifest.AgentID("acme", "faq-bot") == manifest.AgentID("other", "faq-bot") {
		t.Error("agent ids are not derived from tenant and name")
	}
}

func TestLoadReportsEveryProblemWithFileLineAndPath(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // Problem.String() of each problem, file relative to the set directory
	}{
		{
			name:  "unknown field",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "  owner: team:support\n", "  owner: team:support\n  ownr: x\n", 1)},
			want:  []string{`a.yaml:10: spec.ownr: unknown field "ownr" (known: displayName, owner, sponsor, purpose, environment, autonomy, identityModel, trustBoundary, dataSensitivity, function, scopes, roles, credentialType, publicKeys, expires, decommissionCriteria, dependencies)`},
		},
		{
			name:  "unknown top-level field",
			files: map[string]string{"a.yaml": doc("a") + "status: {}\n"},
			want:  []string{`a.yaml:22: status: unknown field "status" (known: apiVersion, kind, metadata, spec)`},
		},
		{
			name:  "bad enum",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "environment: dev", "environment: moon", 1)},
			want:  []string{`a.yaml:12: spec.environment: "moon" is not one of dev, test, staging, prod`},
		},
		{
			name:  "enum in capitals",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "autonomy: assistive", "autonomy: ASSISTIVE", 1)},
			want:  []string{`a.yaml:13: spec.autonomy: "ASSISTIVE" is not one of assistive, autonomous`},
		},
		{
			name:  "wrong version and kind",
			files: map[string]string{"a.yaml": strings.Replace(strings.Replace(doc("a"), "agentid.dev/v1", "agentid.dev/v2", 1), "kind: Agent", "kind: Tenant", 1)},
			want: []string{`a.yaml:1: apiVersion: "agentid.dev/v2" is not one of agentid.dev/v1`,
				`a.yaml:2: kind: "Tenant" is not one of Agent`},
		},
		{
			name:  "missing required fields",
			files: map[string]string{"a.yaml": strings.Replace(strings.Replace(doc("a"), "  owner: team:support\n", "", 1), "  sponsor: alice@corp.example\n", "  sponsor: \"  \"\n", 1)},
			want:  []string{`a.yaml:7: spec.owner: is required`, `a.yaml:9: spec.sponsor: is required`},
		},
		{
			name:  "number where a string belongs",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "team: support", "team: 42", 1)},
			want:  []string{`a.yaml:6: metadata.labels.team: must be a string, not the number 42 (quote it to make it a string)`},
		},
		{
			name:  "bad scopes",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "scopes: [faq.read, tickets.read]", "scopes: [faq.read, billing.admin, Faq, faq.read]", 1)},
			want: []string{`a.yaml:18: spec.scopes[1]: scope "billing.admin" is an administrative or catch-all grant ("admin"); agents get narrow scopes only`,
				`a.yaml:18: spec.scopes[2]: "Faq" must be named resource.action[.qualifier] in lowercase letters, digits, '_' and '-'`,
				`a.yaml:18: spec.scopes[3]: "faq.read" is listed twice (first at line 18)`},
		},
		{
			name:  "broad scope",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "scopes: [faq.read, tickets.read]", "scopes: [faq.read, billing.admin]", 1)},
			want:  []string{`a.yaml:18: spec.scopes[1]: scope "billing.admin" is an administrative or catch-all grant ("admin"); agents get narrow scopes only`},
		},
		{
			name:  "reserved label",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "team: support", "agentid.dev/source: other", 1)},
			want:  []string{`a.yaml:6: metadata.labels.agentid.dev/source: keys starting with agentid.dev/ are reserved for agentctl`},
		},
		{
			name:  "bad name",
			files: map[string]string{"a.yaml": doc("FAQ_bot")},
			want:  []string{`a.yaml:4: metadata.name: "FAQ_bot" must be 1 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit`},
		},
		{
			name:  "private key material",
			files: map[string]string{"a.yaml": doc("a"), "key.json": strings.Replace(jwks, `"x":`, `"d":"c2VjcmV0","x":`, 1)},
			want:  []string{`a.yaml:20: spec.publicKeys.jwksFile: key 0 contains private key material ("d"); register public keys only`},
		},
		{
			name:  "missing key file",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "jwksFile: key.json", "jwksFile: nope.json", 1)},
			want:  []string{`a.yaml:20: spec.publicKeys.jwksFile: cannot read DIR/nope.json: no such file or directory`},
		},
		{
			name:  "both key forms",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "    jwksFile: key.json\n", "    jwksFile: key.json\n    jwks: {keys: [{kty: EC}]}\n", 1)},
			want:  []string{`a.yaml:19: spec.publicKeys: give exactly one of jwks and jwksFile`},
		},
		{
			name:  "expiry in the past and too long a TTL",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "expires: 30d", "expires: 2020-01-01T00:00:00Z", 1), "b.yaml": strings.Replace(doc("b"), "expires: 30d", "expires: 400d", 1)},
			want: []string{`a.yaml:21: spec.expires: 2020-01-01T00:00:00Z is in the past`,
				`b.yaml:21: spec.expires: TTL 400d is longer than one year`},
		},
		{
			name:  "duplicate names across files",
			files: map[string]string{"a.yaml": doc("faq-bot"), "sub/b.yml": nested(doc("faq-bot"))},
			want:  []string{`sub/b.yml:4: metadata.name: "faq-bot" is also defined at DIR/a.yaml:4; names are unique within a tenant`},
		},
		{
			name:  "duplicate key",
			files: map[string]string{"a.yaml": strings.Replace(doc("a"), "  purpose: Answers questions.\n", "  purpose: Answers questions.\n  purpose: again\n", 1)},
			want:  []string{`a.yaml:12: spec.purpose: is defined twice (first at line 11)`},
		},
		{
			name:  "not YAML",
			files: map[string]string{"a.yaml": "apiVersion: agentid.dev/v1\nkind: Agent\n  metadata: x\n"},
			want:  []string{`a.yaml:3: invalid YAML: mapping values are not allowed in this context`},
		},
		{
			name: "every document of a multi-document file",
			files: map[string]string{"a.yaml": doc("one") + "---\n" + strings.Replace(doc("two"), "dataSensitivity: internal", "dataSensitivity: secret", 1) +
				"---\n" + strings.Replace(doc("three"), "kind: Agent", "kind: Agent\nextra: 1", 1)},
			want: []string{`a.yaml:38: spec.dataSensitivity: "secret" is not one of public, internal, confidential, pii, phi, pci`,
				`a.yaml:47: extra: unknown field "extra" (known: apiVersion, kind, metadata, spec)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeSet(t, tt.files)
			_, probs := load(t, dir)
			var got []string
			for _, p := range probs {
				rel, err := filepath.Rel(dir, p.File)
				if err != nil {
					t.Fatal(err)
				}
				p.File = filepath.ToSlash(rel)
				got = append(got, strings.ReplaceAll(p.String(), dir, "DIR"))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestLoadReadsMultiDocumentFilesAndDirectories(t *testing.T) {
	dir := writeSet(t, map[string]string{
		"a.yaml":          "# leading comment\n---\n" + doc("one") + "---\n" + doc("two") + "---\n",
		"nested/b.yml":    nested(doc("three")),
		"nested/notes.md": "not a manifest",
		".git/c.yaml":     "ignored: true",
	})
	set, probs := load(t, dir)
	if probs != nil {
		t.Fatalf("problems: %v", probs)
	}
	var names []string
	for _, m := range set.Manifests {
		names = append(names, m.Metadata.Name)
	}
	if strings.Join(names, ",") != "one,two,three" {
		t.Fatalf("manifests %v, want one,two,three in file order", names)
	}
	if set.Manifests[1].Line != 25 {
		t.Errorf("second document starts at line %d, want 25", set.Manifests[1].Line)
	}
}

func TestLoadRefusesPathsWithoutManifests(t *testing.T) {
	empty := t.TempDir()
	_, err := manifest.Load([]string{empty, filepath.Join(empty, "missing")}, manifest.Options{})
	var probs manifest.Problems
	if !errors.As(err, &probs) || len(probs) != 2 ||
		!strings.Contains(probs[0].String(), "no *.yaml or *.yml files") || !strings.Contains(probs[1].String(), "cannot read: no such file or directory") {
		t.Fatalf("Load = %v", err)
	}
}

func TestTheExamplesAreValid(t *testing.T) {
	set, err := manifest.Load([]string{exampleDir(t)}, manifest.Options{DefaultTenant: "acme"})
	if err != nil {
		t.Fatalf("examples: %v", err)
	}
	if len(set.Manifests) < 5 {
		t.Fatalf("%d example manifests, want at least 5", len(set.Manifests))
	}
	envs := map[string]bool{}
	for _, m := range set.Manifests {
		envs[m.Spec.Environment] = true
	}
	if len(envs) < 3 {
		t.Errorf("the examples cover environments %v, want several", envs)
	}
}

// exampleDir is examples/agents-as-code/acme in the repository.
func exampleDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "examples", "agents-as-code", "acme"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
