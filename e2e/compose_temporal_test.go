package e2e_test

import (
	"bytes"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"gopkg.in/yaml.v3"

	"github.com/agentid/agentid/pkg/authn"
)

// The Temporal part of the compose topology (docs/deploy.md, "Temporal"): nothing of Temporal, its UI
// or ClickHouse is published on a public interface, the frontend takes only mTLS and our issuer's
// JWTs, the internode traffic has a CA of its own, and the lifecycle worker and the UI connect with
// client certificates.

// composeTemporalConfig is the part of Temporal's server configuration (go.temporal.io/server
// common/config) these tests hold the compose template to.
type composeTemporalConfig struct {
	Global struct {
		TLS struct {
			Internode composeTemporalGroupTLS `yaml:"internode"`
			Frontend  composeTemporalGroupTLS `yaml:"frontend"`
		} `yaml:"tls"`
		Authorization struct {
			JWTKeyProvider struct {
				KeySourceURIs   []string `yaml:"keySourceURIs"`
				RefreshInterval string   `yaml:"refreshInterval"`
			} `yaml:"jwtKeyProvider"`
			PermissionsClaimName string `yaml:"permissionsClaimName"`
			PermissionsRegex     string `yaml:"permissionsRegex"`
			Authorizer           string `yaml:"authorizer"`
			ClaimMapper          string `yaml:"claimMapper"`
			Audience             string `yaml:"audience"`
		} `yaml:"authorization"`
	} `yaml:"global"`
	Services map[string]struct {
		RPC struct {
			GRPCPort int    `yaml:"grpcPort"`
			BindOnIP string `yaml:"bindOnIP"`
		} `yaml:"rpc"`
	} `yaml:"services"`
	Persistence struct {
		Datastores map[string]struct {
			SQL struct {
				PluginName  string `yaml:"pluginName"`
				ConnectAddr string `yaml:"connectAddr"`
				User        string `yaml:"user"`
				Password    string `yaml:"password"`
			} `yaml:"sql"`
		} `yaml:"datastores"`
	} `yaml:"persistence"`
}

type composeTemporalGroupTLS struct {
	Server struct {
		RequireClientAuth bool     `yaml:"requireClientAuth"`
		CertFile          string   `yaml:"certFile"`
		KeyFile           string   `yaml:"keyFile"`
		ClientCAFiles     []string `yaml:"clientCaFiles"`
	} `yaml:"server"`
	Client struct {
		ServerName              string   `yaml:"serverName"`
		DisableHostVerification bool     `yaml:"disableHostVerification"`
		RootCAFiles             []string `yaml:"rootCaFiles"`
	} `yaml:"client"`
}

// TestComposeNoPublicTemporalPorts: the Temporal frontend, its UI, its database and ClickHouse are
// published, if at all, on loopback only.
func TestComposeNoPublicTemporalPorts(t *testing.T) {
	cf, _ := composeLoad(t)
	for _, name := range []string{"temporal", "temporal-ui", "temporal-setup", "postgresql", "clickhouse"} {
		s, ok := cf.Services[name]
		if !ok {
			t.Errorf("service %s is missing", name)
			continue
		}
		for _, p := range s.Ports {
			if ip, ok := composeLoopbackPort(p); !ok {
				t.Errorf("%s publishes %q on %q, want 127.0.0.1 (or ::1) only", name, p, ip)
			}
		}
	}
}

func TestComposeLoopbackPort(t *testing.T) {
	tests := []struct {
		port string
		want bool
	}{
		{"127.0.0.1:7233:7233", true},
		{"[::1]:7233:7233", true},
		{"127.0.0.1:8123:8123/tcp", true},
		{"7233:7233", false},
		{"7233", false},
		{"0.0.0.0:7233:7233", false},
		{"[::]:7233:7233", false},
		{"192.0.2.1:7233:7233", false},
		{":7233:7233", false},
	}
	for _, tt := range tests {
		if _, got := composeLoopbackPort(tt.port); got != tt.want {
			t.Errorf("composeLoopbackPort(%q) = %v, want %v", tt.port, got, tt.want)
		}
	}
}

// composeLoopbackPort reports whether a short-syntax port mapping binds a loopback address of the
// host, and the host address it binds ("" for every interface).
func composeLoopbackPort(p string) (string, bool) {
	p, _, _ = strings.Cut(p, "/")
	i := strings.LastIndex(p, ":")
	if i < 0 {
		return "", false
	}
	rest := p[:i]
	j := strings.LastIndex(rest, ":")
	if j < 0 {
		return "", false // HOST:CONTAINER binds every interface
	}
	ip := strings.TrimSuffix(strings.TrimPrefix(rest[:j], "["), "]")
	addr := net.ParseIP(ip)
	return ip, addr != nil && addr.IsLoopback()
}

// TestComposeTemporalLocked renders deploy/temporal/config_template.yaml as the image's entrypoint
// does (dockerize: Go templates over the container's environment) and checks the frontend is mTLS
// with the JWT authorizer trusting our issuer, internode traffic has its own CA, and the clients
// (lifecycle worker, UI, setup, healthcheck) connect accordingly.
func TestComposeTemporalLocked(t *testing.T) {
	cf, root := composeLoad(t)
	tmp := cf.Services["temporal"]
	const target = "/etc/temporal/config/config_template.yaml"
	src, ok := composeMounts(tmp)[target]
	if !ok {
		t.Fatalf("temporal: %s is not mounted (the image would run its own, unauthenticated, template)", target)
	}
	if !strings.HasPrefix(src, "./deploy/temporal/") {
		t.Errorf("temporal: %s is mounted from %s, want a file under deploy/temporal/", target, src)
	}
	raw, err := os.ReadFile(filepath.Join(root, src))
	if err != nil {
		t.Fatal(err)
	}
	cfg := composeRenderTemporal(t, raw, tmp.Environment)

	// The secret a /run/secrets/ path of the temporal container names; "" (and an error) if none.
	secretOf := func(svc, what, p string) string {
		t.Helper()
		sec, found := strings.CutPrefix(p, "/run/secrets/")
		if !found || !slices.Contains(cf.Services[svc].Secrets, sec) {
			t.Errorf("%s: %s = %q, want /run/secrets/<one of its secrets %v>", svc, what, p, cf.Services[svc].Secrets)
			return ""
		}
		return sec
	}
	fileOf := func(sec string) string { return cf.Secrets[sec].File }

	// Frontend: TLS with a certificate of the deployment CA, client certificates of that CA required.
	fe := cfg.Global.TLS.Frontend
	if !fe.Server.RequireClientAuth {
		t.Errorf("frontend: requireClientAuth is off: anyone reaching 7233 may call it without a certificate")
	}
	secretOf("temporal", "frontend certFile", fe.Server.CertFile)
	secretOf("temporal", "frontend keyFile", fe.Server.KeyFile)
	if len(fe.Server.ClientCAFiles) != 1 {
		t.Fatalf("frontend: clientCaFiles %v, want the deployment CA", fe.Server.ClientCAFiles)
	}
	deploymentCA := fileOf(secretOf("temporal", "frontend clientCaFiles", fe.Server.ClientCAFiles[0]))
	if deploymentCA != "./deploy/secrets/ca.crt" {
		t.Errorf("frontend: client CA %s, want the deployment CA ./deploy/secrets/ca.crt", deploymentCA)
	}

	// Internode: mTLS under a CA of its own, so that no service certificate reaches the internal
	// frontend (which authorizes nothing) or history and matching.
	in := cfg.Global.TLS.Internode
	if !in.Server.RequireClientAuth {
		t.Errorf("internode: requireClientAuth is off")
	}
	if len(in.Server.ClientCAFiles) != 1 || len(in.Client.RootCAFiles) != 1 {
		t.Fatalf("internode: clientCaFiles %v, rootCaFiles %v; want the internode CA in both", in.Server.ClientCAFiles, in.Client.RootCAFiles)
	}
	internodeCA := fileOf(secretOf("temporal", "internode clientCaFiles", in.Server.ClientCAFiles[0]))
	if internodeCA == "" || internodeCA == deploymentCA {
		t.Errorf("internode: client CA %q, want a CA of its own (not the deployment CA, which signs every service)", internodeCA)
	}
	if in.Client.RootCAFiles[0] != in.Server.ClientCAFiles[0] || in.Client.DisableHostVerification || in.Client.ServerName == "" {
		t.Errorf("internode client: rootCaFiles %v, serverName %q, disableHostVerification %v; want the internode CA and a verified name",
			in.Client.RootCAFiles, in.Client.ServerName, in.Client.DisableHostVerification)
	}
	internodeCert := secretOf("temporal", "internode certFile", in.Server.CertFile)
	secretOf("temporal", "internode keyFile", in.Server.KeyFile)
	if _, ok := cfg.Services["internal-frontend"]; !ok || !strings.Contains(tmp.Environment["SERVICES"], "internal-frontend") {
		t.Errorf("temporal: no internal-frontend (services %v, SERVICES=%q): the server's system workers would call the authorized frontend without a token",
			composeKeys(cfg.Services), tmp.Environment["SERVICES"])
	}

	// The JWT authorizer trusting our issuer's system tenant, for our audience.
	az := cfg.Global.Authorization
	if az.Authorizer != "default" || az.ClaimMapper != "default" {
		t.Errorf("authorization: authorizer %q, claimMapper %q; want default and default", az.Authorizer, az.ClaimMapper)
	}
	if az.PermissionsClaimName != "permissions" || az.PermissionsRegex != "" {
		t.Errorf("authorization: permissionsClaimName %q, permissionsRegex %q; want the issuer's \"permissions\" claim as <namespace>:<role>",
			az.PermissionsClaimName, az.PermissionsRegex)
	}
	if az.Audience != authn.TemporalAudience {
		t.Errorf("authorization: audience %q, want %q (else any token of the system tenant is accepted)", az.Audience, authn.TemporalAudience)
	}
	if len(az.JWTKeyProvider.KeySourceURIs) != 1 {
		t.Fatalf("authorization: keySourceURIs %v, want the system tenant's JWKS only", az.JWTKeyProvider.KeySourceURIs)
	}
	jwks, err := url.Parse(az.JWTKeyProvider.KeySourceURIs[0])
	if err != nil || jwks.Scheme != "https" || jwks.Hostname() != "issuer" || jwks.Path != "/t/"+authn.SystemTenant+"/jwks.json" {
		t.Errorf("authorization: key source %q, want https://issuer:<port>/t/system/jwks.json", az.JWTKeyProvider.KeySourceURIs[0])
	} else if !slices.Contains(cf.Services["issuer"].Command, "--http-addr=0.0.0.0:"+jwks.Port()) {
		t.Errorf("authorization: key source port %s is not the issuer's HTTP port (--http-addr)", jwks.Port())
	}
	if ca := tmp.Environment["SSL_CERT_FILE"]; fileOf(secretOf("temporal", "SSL_CERT_FILE", ca)) != deploymentCA {
		t.Errorf("temporal: SSL_CERT_FILE %q, want the deployment CA (the JWKS is fetched over TLS)", ca)
	}
	if tmp.DependsOn["issuer"] != "service_healthy" {
		t.Errorf("temporal depends_on issuer = %q, want service_healthy (the authorizer reads its JWKS at start)", tmp.DependsOn["issuer"])
	}

	// Database settings come from the same environment as the image's schema setup.
	for name, ds := range cfg.Persistence.Datastores {
		if ds.SQL.PluginName != tmp.Environment["DB"] || ds.SQL.User != tmp.Environment["POSTGRES_USER"] ||
			ds.SQL.Password != tmp.Environment["POSTGRES_PWD"] || !strings.HasPrefix(ds.SQL.ConnectAddr, tmp.Environment["POSTGRES_SEEDS"]+":") {
			t.Errorf("datastore %s: %+v, want the DB, POSTGRES_USER, POSTGRES_PWD and POSTGRES_SEEDS of the temporal service", name, ds.SQL)
		}
	}

	// Clients of the internal frontend (healthcheck, the image's start-up wait, temporal-setup) hold
	// the internode certificate.
	internalPort := cfg.Services["internal-frontend"].RPC.GRPCPort
	for _, svc := range []string{"temporal", "temporal-setup"} {
		env := cf.Services[svc].Environment
		if _, port, _ := net.SplitHostPort(env["TEMPORAL_ADDRESS"]); port == "" || port != strconv.Itoa(internalPort) {
			t.Errorf("%s: TEMPORAL_ADDRESS %q, want the internal frontend's port %d", svc, env["TEMPORAL_ADDRESS"], internalPort)
		}
		if fileOf(secretOf(svc, "TEMPORAL_TLS_CLIENT_CERT_PATH", env["TEMPORAL_TLS_CLIENT_CERT_PATH"])) != fileOf(internodeCert) ||
			fileOf(secretOf(svc, "TEMPORAL_TLS_SERVER_CA_CERT_PATH", env["TEMPORAL_TLS_SERVER_CA_CERT_PATH"])) != internodeCA ||
			env["TEMPORAL_TLS_SERVER_NAME"] != in.Client.ServerName {
			t.Errorf("%s: the temporal CLI does not use the internode certificate, CA and server name %q", svc, in.Client.ServerName)
		}
		secretOf(svc, "TEMPORAL_TLS_CLIENT_KEY_PATH", env["TEMPORAL_TLS_CLIENT_KEY_PATH"])
	}
	if hc := strings.Join(tmp.Healthcheck.Test, " "); !strings.Contains(hc, ":"+strconv.Itoa(internalPort)) {
		t.Errorf("temporal healthcheck %q, want it against the internal frontend (port %d)", hc, internalPort)
	}

	// The lifecycle worker: mTLS with its own client certificate (and a bearer token, on by default).
	args := map[string]string{}
	for _, a := range cf.Services["lifecycle"].Command {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			args[k] = v
		}
	}
	for _, flag := range []string{"temporal-ca", "temporal-tls-cert", "temporal-tls-key"} {
		composeCheckSecretFlag(t, cf, "lifecycle", args, flag)
	}
	if sec, _ := strings.CutPrefix(args["temporal-ca"], "/run/secrets/"); fileOf(sec) != deploymentCA {
		t.Errorf("lifecycle: --temporal-ca=%s, want the deployment CA", args["temporal-ca"])
	}
	if sec, _ := strings.CutPrefix(args["temporal-tls-cert"], "/run/secrets/"); fileOf(sec) == fileOf(internodeCert) {
		t.Errorf("lifecycle: --temporal-tls-cert is the internode certificate; want a client certificate of the deployment CA")
	}
	if v, ok := args["temporal-jwt"]; ok && v != "true" {
		t.Errorf("lifecycle: --temporal-jwt=%s: the frontend's authorizer refuses calls without a token", v)
	}

	// The UI: mTLS with its own client certificate, verifying the frontend's name.
	ui := cf.Services["temporal-ui"]
	if fileOf(secretOf("temporal-ui", "TEMPORAL_TLS_CA", ui.Environment["TEMPORAL_TLS_CA"])) != deploymentCA {
		t.Errorf("temporal-ui: TEMPORAL_TLS_CA is not the deployment CA")
	}
	uiCert := secretOf("temporal-ui", "TEMPORAL_TLS_CERT", ui.Environment["TEMPORAL_TLS_CERT"])
	secretOf("temporal-ui", "TEMPORAL_TLS_KEY", ui.Environment["TEMPORAL_TLS_KEY"])
	if fileOf(uiCert) == fileOf(internodeCert) {
		t.Errorf("temporal-ui: its client certificate is the internode certificate")
	}
	if ui.Environment["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] != "true" || ui.Environment["TEMPORAL_TLS_SERVER_NAME"] != "temporal" {
		t.Errorf("temporal-ui: host verification %q, server name %q; want true and temporal",
			ui.Environment["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"], ui.Environment["TEMPORAL_TLS_SERVER_NAME"])
	}
}

// composeRenderTemporal renders a dockerize template ({{ .Env.NAME }}, {{ default .Env.NAME "x" }})
// over env and decodes the result as Temporal's configuration, refusing unknown keys at the levels
// this test reads.
func composeRenderTemporal(t *testing.T, raw []byte, env map[string]string) composeTemporalConfig {
	t.Helper()
	tpl, err := template.New("config_template.yaml").Option("missingkey=zero").Funcs(template.FuncMap{
		"default": func(v any, def string) string {
			if s, ok := v.(string); ok && s != "" {
				return s
			}
			return def
		},
	}).Parse(string(raw))
	if err != nil {
		t.Fatalf("deploy/temporal/config_template.yaml: %v", err)
	}
	var out bytes.Buffer
	if err := tpl.Execute(&out, map[string]any{"Env": env}); err != nil {
		t.Fatalf("deploy/temporal/config_template.yaml: render: %v", err)
	}
	var cfg composeTemporalConfig
	if err := yaml.Unmarshal(out.Bytes(), &cfg); err != nil {
		t.Fatalf("deploy/temporal/config_template.yaml (rendered): %v\n%s", err, out.String())
	}
	var loose map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &loose); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"log", "persistence", "global", "services", "clusterMetadata", "dcRedirectionPolicy", "dynamicConfigClient"} {
		if _, ok := loose[k]; !ok {
			t.Errorf("rendered Temporal config has no %q section", k)
		}
	}
	return cfg
}

func composeKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
