package e2e_test

// The docker-compose.yaml topology cannot be started here (no container engine), so these tests load
// it with compose's own loader (compose-go) and hold it against what it runs: the five service
// binaries (built from source and asked for their flags with -h), the NATS config (parsed by
// nats-server's own config loader), the Temporal setup and the ClickHouse schema.
//
// Environment variables of the agentid services: the binaries are configured by flags only. A service
// may set an environment variable only if its binary's own code reads it (os.Getenv/os.LookupEnv in
// the repository packages it is built from) or if the Go runtime or standard library reads it
// (composeRuntimeEnv).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	composeloader "github.com/compose-spec/compose-go/v2/loader"
	composetypes "github.com/compose-spec/compose-go/v2/types"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/agentid/agentid/pkg/natsauth"
)

// composeAgentidServices are the five services, each its own binary services/<svc>/cmd/<svc>.
var composeAgentidServices = []string{"registry", "issuer", "policy", "monitor", "lifecycle"}

// composeRuntimeEnv are variables the Go runtime and standard library read; any service may set them.
var composeRuntimeEnv = map[string]bool{
	"GOMAXPROCS": true, "GOMEMLIMIT": true, "GOGC": true, "GODEBUG": true, "GOTRACEBACK": true,
	"TZ": true, "SSL_CERT_FILE": true, "SSL_CERT_DIR": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true,
}

// composeFile is the part of the compose specification this repository uses.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Secrets  map[string]composeSecret  `yaml:"secrets"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string              `yaml:"image"`
	Build       *composeBuild       `yaml:"build"`
	User        string              `yaml:"user"`
	Command     composeStrings      `yaml:"command"`
	Entrypoint  composeStrings      `yaml:"entrypoint"`
	Environment composeEnvironment  `yaml:"environment"`
	DependsOn   composeDependencies `yaml:"depends_on"`
	Ports       []string            `yaml:"ports"`
	Volumes     []string            `yaml:"volumes"`
	Secrets     []string            `yaml:"secrets"`
	Healthcheck *composeHealthcheck `yaml:"healthcheck"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

type composeSecret struct {
	File string `yaml:"file"`
}

type composeHealthcheck struct {
	Test composeStrings `yaml:"test"`
}

// composeStrings is a command, entrypoint or healthcheck test: a list, or one string (split on spaces
// as compose does for the shell-less form).
type composeStrings []string

func (s *composeStrings) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

// composeEnvironment is `environment:` as a map or as a list of NAME=value.
type composeEnvironment map[string]string

func (e *composeEnvironment) UnmarshalYAML(n *yaml.Node) error {
	out := composeEnvironment{}
	switch n.Kind {
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			out[k] = v
		}
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = v
		}
	default:
		return fmt.Errorf("line %d: environment must be a map or a list", n.Line)
	}
	*e = out
	return nil
}

// composeDependencies is `depends_on:` as a list of names or a map of name to condition.
type composeDependencies map[string]string

func (d *composeDependencies) UnmarshalYAML(n *yaml.Node) error {
	out := composeDependencies{}
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, name := range l {
			out[name] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		for name, c := range m {
			if c.Condition == "" {
				c.Condition = "service_started"
			}
			out[name] = c.Condition
		}
	default:
		return fmt.Errorf("line %d: depends_on must be a list or a map", n.Line)
	}
	*d = out
	return nil
}

// composeLoad reads docker-compose.yaml, interpolates ${VAR:-default} with the defaults only (the file
// must work without an .env file) and decodes it.
func composeLoad(t *testing.T) (*composeFile, string) {
	t.Helper()
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	var errs []error
	composeInterpolate(&doc, &errs)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("docker-compose.yaml interpolation: %v", err)
	}
	var cf composeFile
	if err := doc.Decode(&cf); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return &cf, root
}

var composeVarRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// composeInterpolate replaces variable references in scalar values (not keys) the way compose does
// when no variable is set, and reports references without a default.
func composeInterpolate(n *yaml.Node, errs *[]error) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			composeInterpolate(c, errs)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			composeInterpolate(n.Content[i], errs)
		}
	case yaml.ScalarNode:
		n.Value = composeVarRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			if ref == "$$" {
				return "$"
			}
			m := composeVarRef.FindStringSubmatch(ref)
			switch {
			case m[4] != "":
				*errs = append(*errs, fmt.Errorf("line %d: $%s has no default; use ${%s:-default}", n.Line, m[4], m[4]))
			case m[2] == ":-" || m[2] == "-":
				return m[3]
			default:
				*errs = append(*errs, fmt.Errorf("line %d: %s has no default; use ${%s:-default}", n.Line, ref, m[1]))
			}
			return ""
		})
	}
}

// composeFlagArg is one flag of a command line.
type composeFlagArg struct {
	Name, Value string
}

// composeParseCommand splits a service's command into flags, as Go's flag package (and pflag) read
// them. Positional arguments are errors: the services take none.
func composeParseCommand(cmd []string, boolFlag func(string) bool) ([]composeFlagArg, error) {
	var out []composeFlagArg
	for i := 0; i < len(cmd); i++ {
		a := cmd[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return nil, fmt.Errorf("argument %q is not a flag (the services take no positional arguments)", a)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !hasValue && !boolFlag(name) {
			if i+1 >= len(cmd) {
				return nil, fmt.Errorf("flag %q has no value", a)
			}
			i++
			value = cmd[i]
		}
		out = append(out, composeFlagArg{Name: name, Value: value})
	}
	return out, nil
}

// composeFlagInfo is a flag as the binary's usage describes it.
type composeFlagInfo struct {
	Type       string // "" for a boolean flag
	Default    string
	Repeatable bool // the usage says "repeatable"
}

var (
	// Go's flag package: "  -name type" then "    \tusage (default x)"; one-letter names keep the
	// usage on the same line after a tab.
	composeGoFlagLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9._-]*)(?: ([A-Za-z0-9_.]+))?(?:\t(.*))?$`)
	// pflag/cobra: "  -x, --name type   usage (default x)".
	composePFlagLine = regexp.MustCompile(`^\s+(?:-[A-Za-z0-9], )?--([A-Za-z0-9][A-Za-z0-9._-]*)(?: ([A-Za-z0-9_.]+))?(?:\s{2,}(.*))?$`)
	composeDefault   = regexp.MustCompile(`\(default (.*)\)\s*$`)
)

// composeUsageFlags parses the flags a binary lists for -h.
func composeUsageFlags(usage string) map[string]composeFlagInfo {
	flags := map[string]composeFlagInfo{}
	var last string
	for _, line := range strings.Split(usage, "\n") {
		if m := composeGoFlagLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = composeFlagInfo{Type: m[2]}
			line = m[3]
		} else if m := composePFlagLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = composeFlagInfo{Type: m[2]} // pflag prints no type for booleans either
			line = m[3]
		} else if !strings.HasPrefix(line, "    ") || last == "" {
			continue
		}
		if strings.Contains(line, "repeatable") && last != "" {
			f := flags[last]
			f.Repeatable = true
			flags[last] = f
		}
		if d := composeDefault.FindStringSubmatch(line); d != nil && last != "" {
			f := flags[last]
			f.Default = strings.Trim(d[1], `"`)
			flags[last] = f
		}
	}
	return flags
}

// composeBinaries builds the five service binaries once, in one go build (which builds in parallel).
func composeBinaries(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, s := range composeAgentidServices {
		args = append(args, "./services/"+s+"/cmd/"+s)
	}
	start := time.Now()
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built %d service binaries in %s", len(composeAgentidServices), time.Since(start).Round(time.Millisecond))
	return dir
}

// composeEnvReads lists the environment variables the repository code of a binary reads.
func composeEnvReads(t *testing.T, root, pkg string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{join .GoFiles \" \"}}", pkg)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	call := regexp.MustCompile(`os\.(?:Getenv|LookupEnv)\(\s*(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*))\s*\)`)
	reads := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[0], "github.com/agentid/agentid/") {
			continue
		}
		var src strings.Builder
		for _, f := range strings.Fields(parts[2]) {
			b, err := os.ReadFile(filepath.Join(parts[1], f))
			if err != nil {
				t.Fatal(err)
			}
			src.Write(b)
			src.WriteByte('\n')
		}
		text := src.String()
		for _, m := range call.FindAllStringSubmatch(text, -1) {
			if m[1] != "" {
				reads[m[1]] = true
				continue
			}
			// A named constant: resolve it within the package.
			def := regexp.MustCompile(`\b` + regexp.QuoteMeta(m[2]) + `\s*(?:string\s*)?=\s*"([^"]+)"`)
			if d := def.FindStringSubmatch(text); d != nil {
				reads[d[1]] = true
			}
		}
	}
	return reads
}

// composeHostPort splits host:port and returns the port as a number.
func composeHostPort(t *testing.T, what, hp string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		t.Errorf("%s %q: %v", what, hp, err)
		return "", 0
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Errorf("%s %q: port is not a number", what, hp)
	}
	return host, p
}

// composeContainerPorts returns the container side of a service's published ports.
func composeContainerPorts(s composeService) map[int]bool {
	out := map[int]bool{}
	for _, p := range s.Ports {
		p = strings.TrimSuffix(strings.TrimSuffix(p, "/tcp"), "/udp")
		parts := strings.Split(p, ":")
		if n, err := strconv.Atoi(parts[len(parts)-1]); err == nil {
			out[n] = true
		}
	}
	return out
}

// composeMounts returns a service's volumes as container path -> source (bind path or volume name).
func composeMounts(s composeService) map[string]string {
	out := map[string]string{}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		out[parts[1]] = parts[0]
	}
	return out
}

// composeUnder reports whether p is dir or inside it.
func composeUnder(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// TestComposeSpec loads docker-compose.yaml with compose-go, the loader of `docker compose` itself:
// schema validation, interpolation with no variables set, and the consistency checks (every
// depends_on, volume and secret a service uses is declared).
func TestComposeSpec(t *testing.T) {
	root := repoRoot(t)
	details := composetypes.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []composetypes.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yaml")}},
		Environment: composetypes.Mapping{},
	}
	project, err := composeloader.LoadWithContext(context.Background(), details, func(o *composeloader.Options) {
		o.SetProjectName("agentid", true)
	})
	if err != nil {
		t.Fatalf("docker compose would reject docker-compose.yaml: %v", err)
	}
	cf, _ := composeLoad(t)
	var got, want []string
	for name := range project.Services {
		got = append(got, name)
	}
	for name := range cf.Services {
		want = append(want, name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("compose-go sees services %v, this test's parser %v", got, want)
	}
	for _, name := range composeAgentidServices {
		svc, ok := project.Services[name]
		if !ok {
			continue
		}
		if !slices.Equal([]string(svc.Command), []string(cf.Services[name].Command)) {
			t.Errorf("%s: compose-go reads command %q, this test's parser %q", name, svc.Command, cf.Services[name].Command)
		}
	}
}

// TestComposeTopology checks the engines and the five services are all there and wired together.
func TestComposeTopology(t *testing.T) {
	cf, root := composeLoad(t)
	svcs := cf.Services

	for _, name := range []string{"nats", "postgresql", "temporal", "temporal-setup", "temporal-ui", "clickhouse"} {
		if _, ok := svcs[name]; !ok {
			t.Errorf("service %q is missing", name)
		}
	}

	// Exactly the five agentid services are built from source, each its own binary.
	var built []string
	for name, s := range svcs {
		if s.Build != nil {
			built = append(built, name)
		}
	}
	sort.Strings(built)
	want := slices.Clone(composeAgentidServices)
	sort.Strings(want)
	if !slices.Equal(built, want) {
		t.Errorf("services built from source = %v, want exactly %v", built, want)
	}
	dockerfiles := map[string]bool{}
	for _, name := range composeAgentidServices {
		s, ok := svcs[name]
		if !ok || s.Build == nil {
			continue
		}
		if s.Build.Context != "." {
			t.Errorf("%s: build context %q, want the repository root \".\" (go.work)", name, s.Build.Context)
		}
		if s.Build.Args["SERVICE"] != name {
			t.Errorf("%s: build arg SERVICE = %q, want %q", name, s.Build.Args["SERVICE"], name)
		}
		if len(s.Command) == 0 {
			t.Errorf("%s: no command (flags)", name)
		}
		if len(s.Entrypoint) != 0 {
			t.Errorf("%s: entrypoint %v overrides the image's service binary", name, s.Entrypoint)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s: no healthcheck", name)
		}
		if c := s.DependsOn["nats"]; c != "service_healthy" {
			t.Errorf("%s: depends_on nats = %q, want service_healthy", name, c)
		}
		dockerfiles[s.Build.Dockerfile] = true
	}
	if len(dockerfiles) != 1 {
		t.Errorf("the services use Dockerfiles %v, want one shared Dockerfile", dockerfiles)
	}
	for df := range dockerfiles {
		b, err := os.ReadFile(filepath.Join(root, df))
		if err != nil {
			t.Errorf("Dockerfile: %v", err)
			continue
		}
		text := string(b)
		for _, wantText := range []string{"ARG SERVICE", "./services/${SERVICE}/cmd/${SERVICE}", "CGO_ENABLED=1"} {
			if !strings.Contains(text, wantText) {
				t.Errorf("%s does not contain %q", df, wantText)
			}
		}
		// The compose commands are flags only: the image's entrypoint must be the service binary.
		if !regexp.MustCompile(`(?m)^ENTRYPOINT \["[^"]+"\]\s*$`).MatchString(text) {
			t.Errorf("%s: want an exec-form ENTRYPOINT running the service binary", df)
		}
		// monitor links DuckDB through cgo: the runtime stage needs glibc and libstdc++.
		froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(text, -1)
		if runtime := froms[len(froms)-1][1]; regexp.MustCompile(`alpine|scratch|static`).MatchString(runtime) {
			t.Errorf("%s: runtime stage %s has no glibc/libstdc++ for monitor's DuckDB (cgo)", df, runtime)
		}
		if !regexp.MustCompile(`(?m)^FROM golang:\$\{GO_VERSION\}`).MatchString(text) ||
			!regexp.MustCompile(`(?m)^ARG GO_VERSION=1\.26\b`).MatchString(text) {
			t.Errorf("%s: the build stage should be golang:${GO_VERSION} with GO_VERSION=1.26 (go.work)", df)
		}
	}

	// Engines.
	if s := svcs["nats"]; !strings.HasPrefix(s.Image, "nats:2.11") {
		t.Errorf("nats image %q, want nats:2.11", s.Image)
	} else if !slices.Equal(s.Command, []string{"-c", "/etc/nats/nats.conf"}) {
		t.Errorf("nats command %v, want [-c /etc/nats/nats.conf]", s.Command)
	} else if src := composeMounts(s)["/etc/nats/nats.conf"]; src != "./deploy/nats/nats.conf" {
		t.Errorf("nats: /etc/nats/nats.conf is mounted from %q, want ./deploy/nats/nats.conf", src)
	}
	if s := svcs["postgresql"]; !strings.HasPrefix(s.Image, "postgres:") {
		t.Errorf("postgresql image %q, want postgres", s.Image)
	}
	tmp := svcs["temporal"]
	if !strings.HasPrefix(tmp.Image, "temporalio/auto-setup:") {
		t.Errorf("temporal image %q, want temporalio/auto-setup", tmp.Image)
	}
	if tmp.Environment["DB"] != "postgres12" {
		t.Errorf("temporal DB = %q, want postgres12", tmp.Environment["DB"])
	}
	if seeds := tmp.Environment["POSTGRES_SEEDS"]; svcs[seeds].Image == "" || !strings.HasPrefix(svcs[seeds].Image, "postgres:") {
		t.Errorf("temporal POSTGRES_SEEDS = %q, want the postgresql service", seeds)
	}
	if tmp.Environment["POSTGRES_PWD"] != svcs["postgresql"].Environment["POSTGRES_PASSWORD"] ||
		tmp.Environment["POSTGRES_USER"] != svcs["postgresql"].Environment["POSTGRES_USER"] {
		t.Errorf("temporal's database user/password differ from the postgresql service's")
	}
	if tmp.DependsOn["postgresql"] != "service_healthy" {
		t.Errorf("temporal depends_on postgresql = %q, want service_healthy", tmp.DependsOn["postgresql"])
	}
	if dc := tmp.Environment["DYNAMIC_CONFIG_FILE_PATH"]; dc == "" {
		t.Errorf("temporal: DYNAMIC_CONFIG_FILE_PATH is not set")
	} else {
		// Relative to the image's /etc/temporal.
		target := path.Join("/etc/temporal", dc)
		found := false
		for dst, src := range composeMounts(tmp) {
			if composeUnder(target, dst) {
				rel := strings.TrimPrefix(strings.TrimPrefix(target, dst), "/")
				p := filepath.Join(root, src, rel)
				if _, err := os.Stat(p); err != nil {
					t.Errorf("temporal dynamic config: %v", err)
				}
				composeCheckDynamicConfig(t, p)
				found = true
			}
		}
		if !found {
			t.Errorf("temporal: %s is not mounted from deploy/", target)
		}
	}
	composeCheckTemporalSetup(t, root, svcs)
	if ui := svcs["temporal-ui"]; !strings.HasPrefix(ui.Image, "temporalio/ui:") || ui.Environment["TEMPORAL_ADDRESS"] != "temporal:7233" {
		t.Errorf("temporal-ui: image %q, TEMPORAL_ADDRESS %q; want temporalio/ui talking to temporal:7233", ui.Image, ui.Environment["TEMPORAL_ADDRESS"])
	}
	ch := svcs["clickhouse"]
	if !strings.HasPrefix(ch.Image, "clickhouse/clickhouse-server:") {
		t.Errorf("clickhouse image %q, want clickhouse/clickhouse-server", ch.Image)
	}
	chMounts := composeMounts(ch)
	if chMounts["/docker-entrypoint-initdb.d"] != "./deploy/clickhouse/initdb" {
		t.Errorf("clickhouse: /docker-entrypoint-initdb.d is mounted from %q, want ./deploy/clickhouse/initdb", chMounts["/docker-entrypoint-initdb.d"])
	}
	var chConfigs int
	for dst, src := range chMounts {
		if strings.HasPrefix(dst, "/etc/clickhouse-server/config.d/") || strings.HasPrefix(dst, "/etc/clickhouse-server/users.d/") {
			chConfigs++
			if !strings.HasPrefix(src, "./deploy/clickhouse/") {
				t.Errorf("clickhouse: %s is mounted from %s, want a file under deploy/clickhouse", dst, src)
			}
		}
	}
	if chConfigs < 2 {
		t.Errorf("clickhouse: want deploy/clickhouse config.d and users.d files mounted, got %d", chConfigs)
	}

	// Every bind mount exists; every named volume is declared; every dependency is a service with
	// what its condition needs.
	for name, s := range svcs {
		for dst, src := range composeMounts(s) {
			if strings.HasPrefix(src, "./deploy/secrets/") {
				// Made by generate.sh on the machine that runs the stack, like the secrets (checked below).
				readme, err := os.ReadFile(filepath.Join(root, "deploy/secrets/README.md"))
				if err != nil || !strings.Contains(string(readme), strings.TrimPrefix(src, "./deploy/secrets/")) {
					t.Errorf("%s: bind mount of %s from %s, which deploy/secrets/README.md does not say how to make", name, dst, src)
				}
			} else if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s: bind mount of %s: %v", name, dst, err)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("%s: volume %q is not declared under volumes:", name, src)
			}
		}
		for dep, cond := range s.DependsOn {
			d, ok := svcs[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on %q, which is not a service", name, dep)
			case cond == "service_healthy" && d.Healthcheck == nil:
				t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			case cond != "service_healthy" && cond != "service_started" && cond != "service_completed_successfully":
				t.Errorf("%s depends on %s with unknown condition %q", name, dep, cond)
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := cf.Secrets[sec]; !ok {
				t.Errorf("%s uses secret %q, which is not declared under secrets:", name, sec)
			}
		}
	}

	// Secrets come from gitignored files that deploy/secrets/README.md explains.
	readme, err := os.ReadFile(filepath.Join(root, "deploy/secrets/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(filepath.Join(root, "deploy/secrets/.gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	for name, sec := range cf.Secrets {
		if !strings.HasPrefix(sec.File, "./deploy/secrets/") {
			t.Errorf("secret %s: file %q, want one under ./deploy/secrets/", name, sec.File)
			continue
		}
		base := path.Base(sec.File)
		if !strings.Contains(string(readme), base) {
			t.Errorf("secret %s: deploy/secrets/README.md does not say how to make %s", name, base)
		}
		if strings.Contains(string(ignore), "!"+base) {
			t.Errorf("secret %s: deploy/secrets/.gitignore lets %s into the repository", name, base)
		}
	}

	// No two services publish the same host port.
	hostPorts := map[string]string{}
	for name, s := range svcs {
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if len(parts) < 2 {
				continue
			}
			hp := parts[len(parts)-2]
			if other, ok := hostPorts[hp]; ok {
				t.Errorf("host port %s is published by both %s and %s", hp, other, name)
			}
			hostPorts[hp] = name
		}
	}
	if hostPorts["8080"] != "issuer" {
		t.Errorf("host port 8080 is published by %q, want the issuer (OAuth endpoints)", hostPorts["8080"])
	}
}

// composeCheckDynamicConfig checks Temporal's dynamic config has the shape the server reads.
func composeCheckDynamicConfig(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	var dc map[string][]struct {
		Value       any            `yaml:"value"`
		Constraints map[string]any `yaml:"constraints"`
	}
	if err := yaml.Unmarshal(b, &dc); err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if len(dc) == 0 {
		t.Errorf("%s: no settings", p)
	}
	for k, vs := range dc {
		if len(vs) == 0 || !strings.Contains(k, ".") {
			t.Errorf("%s: setting %q must be a dotted key with a list of {value, constraints}", p, k)
		}
	}
}

// composeCheckTemporalSetup checks the one-shot setup creates the namespace and search attributes of
// docs/architecture.md and that the lifecycle worker waits for it.
func composeCheckTemporalSetup(t *testing.T, root string, svcs map[string]composeService) {
	t.Helper()
	s, ok := svcs["temporal-setup"]
	if !ok {
		return
	}
	if !strings.HasPrefix(s.Image, "temporalio/admin-tools:") {
		t.Errorf("temporal-setup image %q, want temporalio/admin-tools", s.Image)
	}
	if s.DependsOn["temporal"] != "service_healthy" {
		t.Errorf("temporal-setup depends_on temporal = %q, want service_healthy", s.DependsOn["temporal"])
	}
	if c := svcs["lifecycle"].DependsOn["temporal-setup"]; c != "service_completed_successfully" {
		t.Errorf("lifecycle depends_on temporal-setup = %q, want service_completed_successfully", c)
	}
	var script string
	for _, a := range append(slices.Clone(s.Entrypoint), s.Command...) {
		for dst, src := range composeMounts(s) {
			if a == dst {
				b, err := os.ReadFile(filepath.Join(root, src))
				if err != nil {
					t.Fatalf("temporal-setup script: %v", err)
				}
				script = string(b)
			}
		}
	}
	if script == "" {
		t.Fatalf("temporal-setup runs no script mounted from deploy/")
	}
	env := s.Environment
	if env["AGENTID_NAMESPACE"] != "agentid" {
		t.Errorf("temporal-setup AGENTID_NAMESPACE = %q, want agentid", env["AGENTID_NAMESPACE"])
	}
	for _, want := range []string{"operator namespace create", "operator search-attribute create", "--type Keyword"} {
		if !strings.Contains(script, want) {
			t.Errorf("temporal-setup script does not run %q", want)
		}
	}
	attrs := regexp.MustCompile(`SEARCH_ATTRIBUTES="([^"]*)"`).FindStringSubmatch(script)
	if attrs == nil {
		t.Fatalf("temporal-setup script has no SEARCH_ATTRIBUTES list")
	}
	got := strings.Fields(attrs[1])
	sort.Strings(got)
	if want := []string{"AgentId", "RiskTier", "Stage", "Tenant"}; !slices.Equal(got, want) {
		t.Errorf("temporal-setup search attributes %v, want %v (docs/architecture.md)", got, want)
	}
	// The internal frontend with the internode certificate (TestComposeTemporalLocked).
	if addr := env["TEMPORAL_ADDRESS"]; addr != "temporal:7236" {
		t.Errorf("temporal-setup TEMPORAL_ADDRESS = %q, want temporal:7236 (the internal frontend)", addr)
	}
}

// TestComposeServiceFlags builds the five binaries and checks each service's command against the
// flags the binary really has, the wiring between services, and the environment.
func TestComposeServiceFlags(t *testing.T) {
	cf, root := composeLoad(t)
	bins := composeBinaries(t, root)
	natsOpts := composeNATSOptions(t, root)

	type parsed struct {
		args  map[string]string
		flags map[string]composeFlagInfo
	}
	all := map[string]parsed{}
	for _, name := range composeAgentidServices {
		s, ok := cf.Services[name]
		if !ok {
			t.Errorf("service %s is missing", name)
			continue
		}
		bin := filepath.Join(bins, name)
		usage, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits 0 or 2 depending on the flag set
		flags := composeUsageFlags(string(usage))
		if len(flags) == 0 {
			t.Fatalf("%s -h listed no flags:\n%s", name, usage)
		}
		args, err := composeParseCommand(s.Command, func(n string) bool {
			f, ok := flags[n]
			return ok && f.Type == ""
		})
		if err != nil {
			t.Errorf("%s command: %v", name, err)
			continue
		}
		set := map[string]string{}
		for _, a := range args {
			if _, ok := flags[a.Name]; !ok {
				t.Errorf("%s: compose passes --%s, which the %s binary does not have (it has: %s)",
					name, a.Name, name, composeFlagNames(flags))
			}
			if _, dup := set[a.Name]; dup && !flags[a.Name].Repeatable {
				t.Errorf("%s: --%s is given twice", name, a.Name)
			}
			set[a.Name] = a.Value
		}
		// A default that points at the loopback interface is wrong in a container: it must be set.
		for fn, f := range flags {
			if _, ok := set[fn]; ok {
				continue
			}
			if strings.Contains(f.Default, "127.0.0.1") || strings.Contains(f.Default, "localhost") || strings.Contains(f.Default, "[::1]") {
				t.Errorf("%s: --%s defaults to %q (loopback) and must be set in docker-compose.yaml", name, fn, f.Default)
			}
			if fn == "clickhouse-dsn" && !strings.Contains(s.Environment["AGENTID_CLICKHOUSE_DSN"], "@clickhouse:9000/") {
				t.Errorf("%s: the binary has --%s; point it (or $AGENTID_CLICKHOUSE_DSN) at the clickhouse service", name, fn)
			}
		}
		all[name] = parsed{args: set, flags: flags}

		composeCheckEnv(t, root, name, s)
		composeDryRun(t, bin, name, args)
	}

	// Wiring: every service reaches NATS, listens where its ports and healthcheck say, and trusts the
	// issuer's public URL; lifecycle reaches Temporal and the other services' gRPC ports.
	// The issuer's public URL; --public-url defaults to --issuer-url.
	issuerPublic := all["issuer"].args["public-url"]
	if issuerPublic == "" {
		issuerPublic = all["issuer"].args["issuer-url"]
	}
	grpcPort := map[string]int{}
	for _, name := range composeAgentidServices {
		p, ok := all[name]
		if !ok {
			continue
		}
		s := cf.Services[name]
		if u, err := url.Parse(p.args["nats-url"]); err != nil || u.Scheme != "nats" || u.Hostname() != "nats" || u.Port() != strconv.Itoa(natsOpts.Port) {
			t.Errorf("%s: --nats-url=%q, want nats://nats:%d (the nats service)", name, p.args["nats-url"], natsOpts.Port)
		}
		ports := composeContainerPorts(s)
		if g, ok := p.args["grpc-addr"]; !ok {
			t.Errorf("%s: --grpc-addr is not set", name)
		} else if host, port := composeHostPort(t, name+" --grpc-addr", g); host != "0.0.0.0" && host != "" {
			t.Errorf("%s: --grpc-addr=%s must listen on all interfaces of the container", name, g)
		} else {
			grpcPort[name] = port
			if !ports[port] {
				t.Errorf("%s: gRPC port %d is not published (ports: %v)", name, port, s.Ports)
			}
		}
		if h, ok := p.args["http-addr"]; !ok {
			t.Errorf("%s: --http-addr is not set (the healthcheck needs /readyz)", name)
		} else if host, port := composeHostPort(t, name+" --http-addr", h); host != "0.0.0.0" && host != "" {
			t.Errorf("%s: --http-addr=%s must listen on all interfaces of the container", name, h)
		} else if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), fmt.Sprintf("127.0.0.1:%d/readyz", port)) {
			// Readiness, not liveness: dependents with `condition: service_healthy` must wait until the
			// service's projections have caught up.
			t.Errorf("%s: the healthcheck does not GET /readyz on the HTTP port %d", name, port)
		}
		// TLS between all parts: each server has its certificate and key, each client the CA, as secrets.
		for _, flag := range []string{"tls-cert", "tls-key", "ca"} {
			composeCheckSecretFlag(t, cf, name, p.args, flag)
		}
		// Each service connects to NATS as its own identity: the seed `agentid secrets nats` wrote for it.
		composeCheckNATSIdentity(t, cf, name, p.args, natsauth.Identity(name))
		if want := issuerPublic; want != "" {
			got, ok := p.args["issuer-url"]
			switch {
			case ok && strings.TrimRight(got, "/") != strings.TrimRight(want, "/"):
				t.Errorf("%s: --issuer-url=%q, want the issuer's --public-url %q", name, got, want)
			case !ok && name != "issuer":
				if _, has := p.flags["issuer-url"]; has {
					t.Errorf("%s: --issuer-url is not set; want the issuer's --public-url %q", name, want)
				}
			}
		}
	}

	// The issuer: its public URL resolves to the issuer service on its HTTP port, published on 8080;
	// its KEK is a compose secret.
	if p, ok := all["issuer"]; ok {
		pub := issuerPublic
		u, err := url.Parse(pub)
		if err != nil || u.Hostname() != "issuer" || u.Scheme != "https" {
			t.Errorf("issuer: --public-url=%q, want https://issuer:<http port> (reachable from every container, over TLS)", pub)
		} else if _, port := composeHostPort(t, "issuer --http-addr", p.args["http-addr"]); u.Port() != strconv.Itoa(port) {
			t.Errorf("issuer: --public-url=%q does not use the HTTP port %d", pub, port)
		}
		composeCheckSecretFlag(t, cf, "issuer", p.args, "kek-file")
	}
	if p, ok := all["monitor"]; ok {
		if dp, ok := p.args["duckdb-path"]; ok {
			inVolume := false
			for dst, src := range composeMounts(cf.Services["monitor"]) {
				if _, named := cf.Volumes[src]; named && composeUnder(dp, dst) {
					inVolume = true
				}
			}
			if !inVolume {
				t.Errorf("monitor: --duckdb-path=%s is not on a named volume; telemetry would not survive a restart", dp)
			}
		} else if _, has := p.flags["duckdb-path"]; has && cf.Services["monitor"].Environment["AGENTID_CLICKHOUSE_DSN"] == "" {
			t.Errorf("monitor: --duckdb-path is not set")
		}
	}
	if p, ok := all["lifecycle"]; ok {
		if host, port := composeHostPort(t, "lifecycle --temporal-address", p.args["temporal-address"]); host != "temporal" || port != 7233 {
			t.Errorf("lifecycle: --temporal-address=%q, want temporal:7233 (the temporal service)", p.args["temporal-address"])
		}
		if ns, ok := p.args["temporal-namespace"]; ok && ns != cf.Services["temporal-setup"].Environment["AGENTID_NAMESPACE"] {
			t.Errorf("lifecycle: --temporal-namespace=%q, but temporal-setup creates %q", ns, cf.Services["temporal-setup"].Environment["AGENTID_NAMESPACE"])
		}
		for _, svc := range []string{"registry", "issuer", "policy"} {
			flag := svc + "-addr"
			got, ok := p.args[flag]
			if !ok {
				t.Errorf("lifecycle: --%s is not set", flag)
				continue
			}
			if want := fmt.Sprintf("%s:%d", svc, grpcPort[svc]); got != want {
				t.Errorf("lifecycle: --%s=%q, want %q (the %s service's gRPC port)", flag, got, want, svc)
			}
			if c := cf.Services["lifecycle"].DependsOn[svc]; c != "service_healthy" {
				t.Errorf("lifecycle depends_on %s = %q, want service_healthy", svc, c)
			}
		}
		composeCheckSecretFlag(t, cf, "lifecycle", p.args, "credentials")
	}
}

// composeCheckSecretFlag checks a flag names a file under /run/secrets/ that the service mounts.
func composeCheckSecretFlag(t *testing.T, cf *composeFile, svc string, args map[string]string, flag string) {
	t.Helper()
	v, ok := args[flag]
	if !ok {
		t.Errorf("%s: --%s is not set", svc, flag)
		return
	}
	sec, found := strings.CutPrefix(v, "/run/secrets/")
	if !found || !slices.Contains(cf.Services[svc].Secrets, sec) {
		t.Errorf("%s: --%s=%s, want /run/secrets/<one of its secrets %v>", svc, flag, v, cf.Services[svc].Secrets)
	}
}

// composeCheckEnv checks every environment variable set on a service is one its binary reads.
func composeCheckEnv(t *testing.T, root, name string, s composeService) {
	t.Helper()
	reads := composeEnvReads(t, root, "./services/"+name+"/cmd/"+name)
	var names []string
	for k := range reads {
		names = append(names, k)
	}
	sort.Strings(names)
	t.Logf("%s: environment read by its code: %v; set in compose: %d variables", name, names, len(s.Environment))
	for k := range s.Environment {
		if !reads[k] && !composeRuntimeEnv[k] {
			t.Errorf("%s: environment %s is read neither by the %s binary nor by the Go runtime; use a flag", name, k, name)
		}
	}
}

// composeDryRun runs the binary with the compose command line, NATS pointed at a closed port: flag
// values that do not parse make it exit with a usage error before it gets anywhere.
func composeDryRun(t *testing.T, bin, name string, args []composeFlagArg) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	var argv []string
	for _, a := range args {
		v := a.Value
		switch {
		case a.Name == "nats-url":
			v = "nats://" + closed
		case a.Name == "grpc-addr" || a.Name == "http-addr":
			v = "127.0.0.1:0"
		}
		argv = append(argv, "--"+a.Name+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cmd.Dir}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	text := out.String()
	t.Logf("%s with its compose flags (NATS unreachable): %v: %s", name, err, composeFirstLine(strings.TrimSpace(text), ""))
	for _, bad := range []string{"flag provided but not defined", "invalid value", "invalid boolean", "unknown flag", "unexpected arguments"} {
		if strings.Contains(text, bad) {
			t.Errorf("%s rejects its compose command line: %s", name, composeFirstLine(text, bad))
			return
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 && ctx.Err() == nil {
		t.Errorf("%s exits with a usage error (2) on its compose command line:\n%s", name, text)
	}
}

func composeFirstLine(text, sub string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, sub) {
			return strings.TrimSpace(line)
		}
	}
	return sub
}

func composeFlagNames(flags map[string]composeFlagInfo) string {
	var names []string
	for n := range flags {
		names = append(names, "--"+n)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// composeNATSOptions loads deploy/nats/nats.conf with nats-server's own config loader, next to the
// users include that `agentid secrets nats` writes (pkg/natsauth), as the nats container has them.
func composeNATSOptions(t *testing.T, root string) *natsserver.Options {
	t.Helper()
	dir := t.TempDir()
	conf, err := os.ReadFile(filepath.Join(root, "deploy/nats/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// The TLS certificate and key are compose secrets: a throwaway pair stands in for them.
	secrets := filepath.Join(dir, "secrets")
	composeWriteTestCert(t, filepath.Join(secrets, "nats-tls-cert"), filepath.Join(secrets, "nats-tls-key"))
	conf = bytes.ReplaceAll(conf, []byte("/run/secrets/"), []byte(secrets+"/"))
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.LoadOrCreateUsers(filepath.Join(dir, "seeds"))
	if err != nil {
		t.Fatal(err)
	}
	if err := natsauth.WriteServerConfigFile(filepath.Join(dir, "users.conf"), users); err != nil {
		t.Fatal(err)
	}
	opts, err := natsserver.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatalf("deploy/nats/nats.conf (with a generated users.conf): %v", err)
	}
	return opts
}

// composeWriteTestCert writes a self-signed P-256 server certificate for "nats" and its key.
func composeWriteTestCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats"}, DNSNames: []string{"nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// composeCheckNATSIdentity checks svc connects to NATS with --nats-nkey, a secret whose file is the
// seed of identity id that `agentid secrets nats --out deploy/secrets/nats` writes.
func composeCheckNATSIdentity(t *testing.T, cf *composeFile, svc string, args map[string]string, id natsauth.Identity) {
	t.Helper()
	composeCheckSecretFlag(t, cf, svc, args, "nats-nkey")
	composeCheckSecretFlag(t, cf, svc, args, "nats-ca") // NATS serves TLS
	sec, _ := strings.CutPrefix(args["nats-nkey"], "/run/secrets/")
	if want := "./" + natsauth.SeedPath("deploy/secrets/nats", string(id)); cf.Secrets[sec].File != want {
		t.Errorf("%s: --nats-nkey is secret %s from %q, want the %s identity's seed %s", svc, sec, cf.Secrets[sec].File, id, want)
	}
}

// TestComposeNATSConfig checks the NATS config enables JetStream on file storage that survives the
// container, fsyncs every write, and matches the ports compose publishes.
func TestComposeNATSConfig(t *testing.T) {
	cf, root := composeLoad(t)
	opts := composeNATSOptions(t, root)
	if !opts.JetStream {
		t.Fatalf("deploy/nats/nats.conf does not enable JetStream")
	}
	if !opts.SyncAlways {
		t.Errorf("deploy/nats/nats.conf: want `sync_interval: always` (DESIGN §3)")
	}
	if opts.JetStreamMaxStore <= 0 {
		t.Errorf("deploy/nats/nats.conf: want max_file_store set")
	}
	if opts.StoreDir == "" {
		t.Fatalf("deploy/nats/nats.conf: no jetstream store_dir")
	}
	s := cf.Services["nats"]
	if src, ok := composeMounts(s)[opts.StoreDir]; !ok {
		t.Errorf("nats: store_dir %s is not a volume", opts.StoreDir)
	} else if _, named := cf.Volumes[src]; !named {
		t.Errorf("nats: store_dir %s is mounted from %q, want a named volume", opts.StoreDir, src)
	}
	if opts.HTTPPort != 8222 {
		t.Errorf("deploy/nats/nats.conf: monitoring port %d, want 8222", opts.HTTPPort)
	}
	ports := composeContainerPorts(s)
	for _, p := range []int{opts.Port, opts.HTTPPort} {
		if !ports[p] {
			t.Errorf("nats: port %d is not published (ports: %v)", p, s.Ports)
		}
	}
	if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), fmt.Sprintf(":%d/healthz", opts.HTTPPort)) {
		t.Errorf("nats: the healthcheck does not use the monitoring endpoint /healthz")
	}
	// Identities: no anonymous client, the users from the generated include, published on loopback only.
	if len(opts.Nkeys) != len(natsauth.PlatformIdentities) || opts.NoAuthUser != "" || len(opts.Users) != 0 {
		t.Errorf("deploy/nats/nats.conf: %d nkey users, %d other users, no_auth_user %q; want exactly the %d platform identities of the users include and no anonymous access",
			len(opts.Nkeys), len(opts.Users), opts.NoAuthUser, len(natsauth.PlatformIdentities))
	}
	if opts.TLSConfig == nil {
		t.Errorf("deploy/nats/nats.conf: no tls block: client connections (and their nkey signatures) would be plaintext")
	}
	conf, err := os.ReadFile(filepath.Join(root, "deploy/nats/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*(cert_file|key_file):\s*"?([^"\s]+)"?`).FindAllStringSubmatch(string(conf), -1) {
		if sec, ok := strings.CutPrefix(m[2], "/run/secrets/"); !ok || !slices.Contains(s.Secrets, sec) {
			t.Errorf("nats: TLS %s %s is not one of its secrets %v", m[1], m[2], s.Secrets)
		}
	}
	if src := composeMounts(s)["/etc/nats/users.conf"]; src != "./deploy/secrets/nats/users.conf" {
		t.Errorf("nats: /etc/nats/users.conf is mounted from %q, want ./deploy/secrets/nats/users.conf (agentid secrets nats)", src)
	}
	for _, p := range s.Ports {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("nats: port %q is published on every interface, want 127.0.0.1 only", p)
		}
	}
	// The streams are set up once by the admin identity, before any service starts.
	setup, ok := cf.Services["nats-setup"]
	switch {
	case !ok:
		t.Errorf("service nats-setup (the streams, with the admin identity) is missing")
	case !slices.Contains(setup.Command, "--setup-streams"):
		t.Errorf("nats-setup: command %v does not --setup-streams", setup.Command)
	default:
		args := map[string]string{}
		for _, a := range setup.Command {
			if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
				args[k] = v
			}
		}
		composeCheckNATSIdentity(t, cf, "nats-setup", args, natsauth.Admin)
		for _, name := range composeAgentidServices {
			if c := cf.Services[name].DependsOn["nats-setup"]; c != "service_completed_successfully" {
				t.Errorf("%s: depends_on nats-setup = %q, want service_completed_successfully", name, c)
			}
		}
	}
}

// composeSQLColumn matches one column definition of the CREATE TABLE statement.
var composeSQLColumn = regexp.MustCompile(`^\s*([a-z_][a-z0-9_]*)\s+([A-Za-z0-9]+(?:\([A-Za-z0-9, ]*\))?)\s*,?\s*$`)

// TestComposeClickHouseSchema checks the telemetry schema is the portable subset of DESIGN §7 that
// ClickHouse 18.16 accepts, and the server/user configuration is well-formed.
func TestComposeClickHouseSchema(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "deploy/clickhouse/schema")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".sql" {
			t.Errorf("deploy/clickhouse/schema/%s: the image's init runs *.sql and *.sh; keep only numbered .sql files here", e.Name())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "001_telemetry_events.sql"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries { // every migration keeps to the subset
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && e.Name() != "001_telemetry_events.sql" {
			raw = append(append(raw, '\n'), b...)
		}
	}
	// Strip comments.
	var lines []string
	for _, line := range strings.Split(string(raw), "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		lines = append(lines, line)
	}
	sql := strings.Join(lines, "\n")
	for _, kw := range []string{"TTL", "LowCardinality", "DateTime64", "Map(", "Nullable(", "JSON", "Object(", "CODEC(", "Variant(", "Dynamic"} {
		if regexp.MustCompile(`(?i)\b` + regexp.QuoteMeta(kw)).MatchString(sql) {
			t.Errorf("deploy/clickhouse/schema uses %s, which ClickHouse 18.16 does not have (DESIGN §7)", strings.TrimSuffix(kw, "("))
		}
	}
	if initdb, err := os.ReadFile(filepath.Join(root, "deploy/clickhouse/initdb/000_database.sql")); err != nil ||
		!regexp.MustCompile(`(?i)CREATE DATABASE IF NOT EXISTS agentid\s*;`).Match(initdb) {
		t.Errorf("deploy/clickhouse/initdb/000_database.sql does not create database agentid idempotently (%v)", err)
	}
	m := regexp.MustCompile(`(?is)CREATE TABLE IF NOT EXISTS telemetry_events\s*\((.*?)\)\s*ENGINE\s*=\s*(.*?);`).FindStringSubmatch(sql)
	if m == nil {
		t.Fatalf("001_telemetry_events.sql has no `CREATE TABLE IF NOT EXISTS telemetry_events (...) ENGINE = ...;`")
	}
	cols := map[string]string{}
	var order []string
	for _, line := range strings.Split(m[1], "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		c := composeSQLColumn.FindStringSubmatch(line)
		if c == nil {
			t.Errorf("001_telemetry_events.sql: column definition %q is not `name Type` (no defaults, codecs or expressions)", strings.TrimSpace(line))
			continue
		}
		cols[c[1]] = c[2]
		order = append(order, c[1])
	}
	want := map[string][]string{
		"event_id": {"String"}, "time": {"DateTime"}, "time_ms": {"UInt16", "Int64"},
		"tenant": {"String"}, "agent": {"String"}, "kind": {"String"}, "outcome": {"String"},
		"actor": {"String"}, "on_behalf_of": {"String"}, "environment": {"String"},
		"scopes": {"Array(String)"}, "request_id": {"String"}, "detail": {"String"},
		"stream_seq": {"UInt64"}, "owner": {"String"}, "agent_known": {"UInt8"}, "client_id": {"String"},
		"resource": {"String"}, "action": {"String"}, "bytes": {"Int64"}, "rows": {"Int64"},
		"source_address": {"String"}, "source_network": {"String"}, "latency_us": {"Int64"}, "trace_id": {"String"},
	}
	for name, types := range want {
		if got, ok := cols[name]; !ok {
			t.Errorf("telemetry_events has no column %s", name)
		} else if !slices.Contains(types, got) {
			t.Errorf("telemetry_events.%s is %s, want %s", name, got, strings.Join(types, " or "))
		}
	}
	for _, name := range order {
		if _, ok := want[name]; !ok {
			t.Errorf("telemetry_events has column %s, which the schema check does not know; add it to the test", name)
		}
	}
	engine := strings.Join(strings.Fields(m[2]), " ")
	for _, part := range []string{"ReplacingMergeTree", "PARTITION BY toYYYYMM(time)", "ORDER BY (tenant, toStartOfHour(time), agent, time_ms, event_id)"} {
		if !strings.Contains(engine, part) {
			t.Errorf("telemetry_events engine clause %q lacks %q", engine, part)
		}
	}

	for _, f := range []string{"config.d/agentid.xml", "users.d/agentid.xml"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy/clickhouse", f))
		if err != nil {
			t.Error(err)
			continue
		}
		var doc struct {
			XMLName xml.Name
		}
		if err := xml.Unmarshal(b, &doc); err != nil {
			t.Errorf("deploy/clickhouse/%s: %v", f, err)
		} else if doc.XMLName.Local != "clickhouse" {
			t.Errorf("deploy/clickhouse/%s: root element <%s>, want <clickhouse>", f, doc.XMLName.Local)
		}
	}
}
