package e2e_test

// The platform's own service identities in docker-compose.yaml: each service that signs calls with a
// credential mounts one that deploy/secrets/generate.sh makes, and the issuer registers its public half
// with exactly the one role that service needs. The static test reads the compose file and generate.sh;
// the running one makes the secrets with generate.sh (keeping credentials that exist), starts the issuer binary with the compose file's
// identity flags on an embedded NATS and asks a token with each credential.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
)

// composeIssuerIdentityFlags are the issuer's flags that register a service identity of tenant system
// at start, with the one role each grants.
var composeIssuerIdentityFlags = map[string]string{
	"platform-client":  string(authn.RolePlatformAdmin),
	"lifecycle-client": string(authn.RoleLifecycleWorker),
	"registry-client":  string(authn.RoleRegistryService),
}

// composeServiceIdentities are the services that call others with a credential of their own (their
// --credentials) and the issuer flag that must register it.
var composeServiceIdentities = []struct {
	service, issuerFlag string
}{
	{service: "registry", issuerFlag: "registry-client"},
	{service: "lifecycle", issuerFlag: "lifecycle-client"},
}

// composeRegistration is one client the issuer's compose command registers.
type composeRegistration struct {
	flag   string // the issuer flag that names it
	secret string // the compose secret holding its public JWK Set
}

// composeIdentityWiring checks the identity flags of the issuer and the --credentials of the services
// against the compose secrets and generate.sh, and returns the clients the issuer registers by id.
func composeIdentityWiring(t *testing.T, cf *composeFile, root string) map[string][]composeRegistration {
	t.Helper()
	gen, err := os.ReadFile(filepath.Join(root, "deploy/secrets/generate.sh"))
	if err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^make_credential (\S+)\s*$`).FindAllStringSubmatch(string(gen), -1) {
		made[m[1]] = true
	}
	if len(made) == 0 {
		t.Fatal("deploy/secrets/generate.sh makes no credential (no make_credential line)")
	}

	issuer := cf.Services["issuer"]
	args, err := composeParseCommand(issuer.Command, func(string) bool { return false })
	if err != nil {
		t.Fatalf("issuer command: %v", err)
	}
	registered := map[string][]composeRegistration{}
	for _, a := range args {
		if _, ok := composeIssuerIdentityFlags[a.Name]; !ok {
			continue
		}
		id, file, ok := strings.Cut(a.Value, "=")
		secret, inSecrets := strings.CutPrefix(file, "/run/secrets/")
		switch {
		case !ok || id == "":
			t.Errorf("issuer: --%s=%s, want CLIENT_ID=/run/secrets/<secret>", a.Name, a.Value)
			continue
		case !inSecrets || !slices.Contains(issuer.Secrets, secret):
			t.Errorf("issuer: --%s=%s: %s is not one of the issuer's secrets %v", a.Name, a.Value, file, issuer.Secrets)
		case cf.Secrets[secret].File != "./deploy/secrets/"+id+".jwks.json":
			t.Errorf("issuer: --%s=%s: secret %s is the file %q, want ./deploy/secrets/%s.jwks.json (generate.sh's public half of %s)",
				a.Name, a.Value, secret, cf.Secrets[secret].File, id, id)
		case !made[id]:
			t.Errorf("issuer: --%s registers client %s, for which deploy/secrets/generate.sh makes no credential (make_credential %s)", a.Name, id, id)
		}
		registered[id] = append(registered[id], composeRegistration{flag: a.Name, secret: secret})
	}
	for id, regs := range registered {
		if len(regs) != 1 {
			t.Errorf("issuer: client %s is registered %d times (%v); each identity is one client with one role", id, len(regs), regs)
		}
	}

	policyArgs, err := composeParseCommand(cf.Services["policy"].Command, func(string) bool { return false })
	if err != nil {
		t.Fatalf("policy command: %v", err)
	}
	var policyGRPC string
	for _, a := range policyArgs {
		if a.Name == "grpc-addr" {
			_, port, err := net.SplitHostPort(a.Value)
			if err != nil {
				t.Fatalf("policy --grpc-addr=%s: %v", a.Value, err)
			}
			policyGRPC = "policy:" + port
		}
	}

	for _, si := range composeServiceIdentities {
		s, ok := cf.Services[si.service]
		if !ok {
			t.Errorf("service %s is missing", si.service)
			continue
		}
		list, err := composeParseCommand(s.Command, func(string) bool { return false })
		if err != nil {
			t.Errorf("%s command: %v", si.service, err)
			continue
		}
		set := map[string]string{}
		for _, a := range list {
			set[a.Name] = a.Value
		}
		composeCheckSecretFlag(t, cf, si.service, set, "credentials")
		composeCheckSecretFlag(t, cf, si.service, set, "ca")
		secret := strings.TrimPrefix(set["credentials"], "/run/secrets/")
		file := cf.Secrets[secret].File
		id, ok := strings.CutSuffix(strings.TrimPrefix(file, "./deploy/secrets/"), ".json")
		if !ok || strings.Contains(id, "/") || strings.HasSuffix(id, ".jwks") || !made[id] {
			t.Errorf("%s: --credentials is secret %s, file %q: want ./deploy/secrets/<id>.json of a make_credential in generate.sh", si.service, secret, file)
			continue
		}
		regs := registered[id]
		if len(regs) != 1 || regs[0].flag != si.issuerFlag {
			t.Errorf("%s: its credential is client %s, which the issuer registers by %v; want exactly --%s (role %s only)",
				si.service, id, regs, si.issuerFlag, composeIssuerIdentityFlags[si.issuerFlag])
		}
		if si.service == "registry" {
			// The registry asks the policy service, on its gRPC port, to admit escalating updates.
			if got := set["policy-addr"]; got != policyGRPC || policyGRPC == "" {
				t.Errorf("registry: --policy-addr=%q, want %q (the policy service's gRPC port)", got, policyGRPC)
			}
		}
	}
	return registered
}

// TestComposeServiceIdentities checks the wiring of the platform's service identities in the compose
// file: the registry calls the policy service with the registry-service credential of generate.sh,
// which the issuer registers with the registry-service role only; likewise the lifecycle worker.
func TestComposeServiceIdentities(t *testing.T) {
	cf, root := composeLoad(t)
	registered := composeIdentityWiring(t, cf, root)
	if regs := registered["registry-service"]; len(regs) != 1 || regs[0].flag != "registry-client" {
		t.Errorf("issuer: client registry-service is registered by %v, want --registry-client only", regs)
	}
}

// TestComposeServiceIdentitiesIssue makes the secrets with deploy/secrets/generate.sh, starts the
// issuer binary with the compose file's identity flags (the secrets at their generated paths) and
// gets a token with every credential the issuer registers: each carries exactly the role of its flag.
// An issuer given one client id by two flags refuses to start.
func TestComposeServiceIdentitiesIssue(t *testing.T) {
	cf, root := composeLoad(t)
	registered := composeIdentityWiring(t, cf, root)
	if t.Failed() {
		return
	}
	for _, tool := range []string{"openssl", "sh", "true"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("generate.sh needs %s: %v", tool, err)
		}
	}
	trueBin, _ := exec.LookPath("true")

	ports := testkit.FreePorts(t, 2)
	httpAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	publicURL := "http://" + httpAddr

	// generate.sh writes next to itself; the NATS seeds (its last step, `agentid secrets nats`) are
	// not needed here, so AGENTID_BIN runs true.
	secrets := t.TempDir()
	script, err := os.ReadFile(filepath.Join(root, "deploy/secrets/generate.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "generate.sh"), script, 0o700); err != nil {
		t.Fatal(err)
	}
	// Credentials that exist are kept and their JWK Sets written again from them: one as `agentid dev`
	// writes it (indented, with a kid), one as earlier versions of generate.sh wrote it (no kid).
	var ids []string
	for id := range registered {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	kept := map[string]*authn.Credential{}
	for i, id := range ids[:min(2, len(ids))] {
		cred, err := authn.NewCredential(authn.SystemTenant, id, publicURL+"/t/"+authn.SystemTenant)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(secrets, id+".json")
		if i == 0 {
			if err := authn.WriteCredentialFile(file, cred); err != nil {
				t.Fatal(err)
			}
		} else {
			composeWriteKidlessCredential(t, file, cred)
		}
		kept[id] = cred
	}
	gen := exec.Command("sh", filepath.Join(secrets, "generate.sh"))
	gen.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + secrets, "AGENTID_PUBLIC_URL=" + publicURL, "AGENTID_BIN=" + trueBin}
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, out)
	}

	// The compose file's identity flags, each secret at the file it is made from.
	var identityArgs []string
	for id, regs := range registered {
		for _, r := range regs {
			identityArgs = append(identityArgs, fmt.Sprintf("--%s=%s=%s", r.flag, id, filepath.Join(secrets, path.Base(cf.Secrets[r.secret].File))))
		}
	}
	nats := testkit.StartNATS(t)
	bin := filepath.Join(testkit.BuildCommands(t, "./services/issuer/cmd/issuer"), "issuer")
	base := []string{
		"--nats-url=" + nats.URL(), "--grpc-addr=127.0.0.1:" + strconv.Itoa(ports[0]), "--http-addr=" + httpAddr,
		"--issuer-url=" + publicURL, "--public-url=" + publicURL, "--kek-file=" + filepath.Join(secrets, "kek.hex"),
	}

	// One client id under two flags would be two registrations with different roles: refused at start.
	t.Run("client id under two flags", func(t *testing.T) {
		jwks := filepath.Join(secrets, "registry-service.jwks.json")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append(slices.Clone(base),
			"--registry-client=twice="+jwks, "--platform-client=twice="+jwks)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + secrets}
		out, err := cmd.CombinedOutput()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("issuer with client twice under two flags: %v (want it to stop at start)\n%s", err, out)
		}
		if !strings.Contains(string(out), `is also given by --platform-client`) {
			t.Errorf("issuer's error does not name the client given twice:\n%s", out)
		}
	})

	p := testkit.NewProcess(t, testkit.ProcessConfig{
		Name: "issuer", Binary: bin, Args: append(base, identityArgs...), ReadyURL: publicURL + "/readyz",
		Env: []string{"HOME=" + secrets},
	})
	p.Start(t)
	p.WaitReady(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for id, regs := range registered {
		want := []string{composeIssuerIdentityFlags[regs[0].flag]}
		cred, err := authn.LoadCredentialFile(filepath.Join(secrets, id+".json"))
		if err != nil {
			t.Errorf("%s.json from generate.sh: %v", id, err)
			continue
		}
		if k := kept[id]; k != nil && cred.KeyID() != k.KeyID() {
			t.Errorf("%s.json existed with key %s; generate.sh left key %s", id, k.KeyID(), cred.KeyID())
		}
		// The issuer registers its identities once it is ready, so the first requests may come early.
		var roles []string
		err = testkit.Poll(ctx, 0, func() (bool, error) {
			tok, err := cred.TokenSource(ctx).Token()
			if err != nil {
				return false, err
			}
			roles, err = composeTokenRoles(tok.AccessToken)
			return err == nil, err
		})
		if err != nil {
			t.Errorf("client %s: no token with generate.sh's credential: %v", id, err)
			continue
		}
		if !slices.Equal(roles, want) {
			t.Errorf("client %s (--%s): token roles %v, want %v only", id, regs[0].flag, roles, want)
		}
	}
}

// composeWriteKidlessCredential writes cred the way earlier versions of generate.sh did: one compact
// JSON object whose private_jwk has no kid.
func composeWriteKidlessCredential(t *testing.T, file string, cred *authn.Credential) {
	t.Helper()
	data, err := cred.MarshalFile()
	if err != nil {
		t.Fatal(err)
	}
	var f authn.CredentialFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var jwk map[string]any
	if err := json.Unmarshal(f.PrivateJWK, &jwk); err != nil {
		t.Fatal(err)
	}
	delete(jwk, "kid")
	if f.PrivateJWK, err = json.Marshal(jwk); err != nil {
		t.Fatal(err)
	}
	if data, err = json.Marshal(f); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// composeTokenRoles reads the roles claim of a JWT access token the test's own issuer just issued.
func composeTokenRoles(token string) ([]string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("access token is not a JWT (%d parts)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("access token payload: %w", err)
	}
	var claims struct {
		Roles []string `json:"roles"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("access token payload: %w", err)
	}
	return claims.Roles, nil
}
