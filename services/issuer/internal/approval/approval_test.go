package approval_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/issuer/internal/approval"
	"github.com/agentid/agentid/services/issuer/internal/keys"
)

const agent = "tenants/acme/agents/agt_0123456789abcdefghjkmnpqrs"

type keyring map[string]*keys.SigningKey

func (k keyring) CurrentKey(tenant string) (*keys.SigningKey, bool) {
	sk, ok := k[tenant]
	return sk, ok
}

// fixture is a minter and a verifier of the same tenant issuer (JWKS served over HTTP).
func fixture(t *testing.T, now time.Time) (*approval.Minter, *authn.JWKSVerifier) {
	t.Helper()
	return fixtureAt(t, now, now)
}

// fixtureAt mints at mintNow and verifies at verifyNow, with one key.
func fixtureAt(t *testing.T, mintNow, verifyNow time.Time) (*approval.Minter, *authn.JWKSVerifier) {
	t.Helper()
	sk, _, err := keys.Generate(mintNow)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/t/acme/jwks.json" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{sk.Public()}})
	}))
	t.Cleanup(srv.Close)
	m, err := approval.New(approval.Config{Keys: keyring{"acme": sk}, Issuer: func(tenant string) string { return srv.URL + "/t/" + tenant },
		Now: func() time.Time { return mintNow }})
	if err != nil {
		t.Fatal(err)
	}
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: srv.URL, Now: func() time.Time { return verifyNow }})
	if err != nil {
		t.Fatal(err)
	}
	return m, v
}

func human(roles ...authn.Role) *authn.Principal {
	return &authn.Principal{ID: "alice", Kind: authn.KindHuman, Tenant: "acme", Roles: roles}
}

func TestMintedTokenVerifies(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	m, v := fixture(t, now)
	tok, err := m.Mint(human(authn.RoleSecurityApprover), approval.Request{Agent: agent, Step: "security", Decision: "approve", Run: "run-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expiry.Equal(now.Add(authn.MaxApprovalTokenLifetime)) {
		t.Errorf("expiry %v, want %v", tok.Expiry, now.Add(authn.MaxApprovalTokenLifetime))
	}
	c, err := v.VerifyApproval(context.Background(), tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	want := authn.ApprovalClaims{Issuer: c.Issuer, Subject: "alice", Audience: authn.ApprovalAudience, Tenant: "acme", Agent: agent,
		Step: "security", Decision: "approve", Run: "run-1", ID: tok.ID, IssuedAt: now.Unix(), Expiry: now.Add(5 * time.Minute).Unix()}
	if c.Subject != want.Subject || c.Audience != want.Audience || c.Tenant != want.Tenant || c.Agent != want.Agent ||
		c.Step != want.Step || c.Decision != want.Decision || c.Run != want.Run || c.ID != want.ID ||
		c.IssuedAt != want.IssuedAt || c.Expiry != want.Expiry || len(c.Roles) != 1 || c.Roles[0] != "security-approver" {
		t.Errorf("claims %+v, want %+v with roles [security-approver]", *c, want)
	}
	// An approval token is no access token, and the other way round.
	if _, err := v.Verify(context.Background(), tok.Token); err == nil {
		t.Error("the platform API verifier accepted an approval token")
	}
}

func TestApprovalTokenRefusedByVerifier(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	m, v := fixture(t, now)
	tok, err := m.Mint(human(authn.RoleApprover), approval.Request{Agent: agent, Step: "owner", Decision: "reject", Run: "run-1"})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok.Token, ".")
	_, later := fixture(t, now.Add(authn.MaxApprovalTokenLifetime+time.Minute))
	tests := []struct {
		name       string
		verifier   *authn.JWKSVerifier
		token      string
		wantReason string
	}{
		{name: "tampered payload", verifier: v, token: parts[0] + "." + parts[1] + "x." + parts[2], wantReason: authn.ReasonApprovalTokenInvalid},
		{name: "signed by another issuer's key", verifier: later, token: tok.Token, wantReason: authn.ReasonApprovalTokenInvalid},
		{name: "empty", verifier: v, token: "", wantReason: authn.ReasonApprovalTokenInvalid},
		{name: "self-asserted JSON", verifier: v, token: `{"approver":"alice","role":"owner","decision":"approve"}`, wantReason: authn.ReasonApprovalTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.verifier.VerifyApproval(context.Background(), tt.token)
			if e := errs.FromStatus(err); e == nil || e.Reason != tt.wantReason {
				t.Fatalf("err = %v, want reason %s", err, tt.wantReason)
			}
		})
	}
}

func TestApprovalTokenExpires(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	m, v := fixtureAt(t, now.Add(-authn.MaxApprovalTokenLifetime-time.Minute), now)
	tok, err := m.Mint(human(authn.RoleApprover), approval.Request{Agent: agent, Step: "owner", Decision: "approve", Run: "run-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.VerifyApproval(context.Background(), tok.Token)
	if e := errs.FromStatus(err); e == nil || e.Reason != authn.ReasonApprovalTokenExpired {
		t.Fatalf("err = %v, want %s", err, authn.ReasonApprovalTokenExpired)
	}
}

func TestMintRefusals(t *testing.T) {
	m, _ := fixture(t, time.Now())
	good := approval.Request{Agent: agent, Step: "owner", Decision: "approve", Run: "run-1"}
	tests := []struct {
		name       string
		p          *authn.Principal
		edit       func(*approval.Request)
		wantKind   errs.Kind
		wantReason string
		wantField  string
	}{
		{name: "unauthenticated", p: nil, wantKind: errs.KindUnauthenticated},
		{name: "service identity", p: &authn.Principal{ID: "svc", Kind: authn.KindService, Tenant: "acme", Roles: []authn.Role{authn.RoleApprover}},
			wantKind: errs.KindPermissionDenied, wantReason: approval.ReasonNotHuman},
		{name: "agent", p: &authn.Principal{ID: "agt", Kind: authn.KindAgent, Tenant: "acme"}, wantKind: errs.KindPermissionDenied, wantReason: approval.ReasonNotHuman},
		{name: "delegated token", p: &authn.Principal{ID: "bot", Kind: authn.KindHuman, Tenant: "acme", OnBehalfOf: "alice", Roles: []authn.Role{authn.RoleApprover}},
			wantKind: errs.KindPermissionDenied, wantReason: approval.ReasonNotHuman},
		{name: "platform admin", p: &authn.Principal{ID: "admin", Kind: authn.KindService, Tenant: "system", Roles: []authn.Role{authn.RolePlatformAdmin}},
			wantKind: errs.KindPermissionDenied, wantReason: approval.ReasonNotHuman},
		{name: "person of another tenant", p: &authn.Principal{ID: "bob", Kind: authn.KindHuman, Tenant: "beta", Roles: []authn.Role{authn.RoleApprover}},
			wantKind: errs.KindNotFound, wantReason: "TENANT_NOT_FOUND"},
		{name: "auditor", p: human(authn.RoleAuditor), wantKind: errs.KindPermissionDenied, wantReason: "MISSING_ROLE"},
		{name: "bad agent", p: human(authn.RoleApprover), edit: func(r *approval.Request) { r.Agent = "agents/x" }, wantKind: errs.KindInvalidArgument, wantField: "agent"},
		{name: "bad step", p: human(authn.RoleApprover), edit: func(r *approval.Request) { r.Step = "Owner step" }, wantKind: errs.KindInvalidArgument, wantField: "step"},
		{name: "bad decision", p: human(authn.RoleApprover), edit: func(r *approval.Request) { r.Decision = "maybe" }, wantKind: errs.KindInvalidArgument, wantField: "decision"},
		{name: "no run", p: human(authn.RoleApprover), edit: func(r *approval.Request) { r.Run = "" }, wantKind: errs.KindInvalidArgument, wantField: "workflow_run_id"},
		{name: "unknown tenant key", p: &authn.Principal{ID: "carol", Kind: authn.KindHuman, Tenant: "gamma", Roles: []authn.Role{authn.RoleApprover}},
			edit: func(r *approval.Request) { r.Agent = "tenants/gamma/agents/agt_0123456789abcdefghjkmnpqrs" }, wantKind: errs.KindFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			if tt.edit != nil {
				tt.edit(&r)
			}
			_, err := m.Mint(tt.p, r)
			e, ok := err.(*errs.Error)
			if !ok || e.Kind != tt.wantKind || (tt.wantReason != "" && e.Reason != tt.wantReason) || (tt.wantField != "" && e.Field != tt.wantField) {
				t.Fatalf("err = %v, want %v %s %s", err, tt.wantKind, tt.wantReason, tt.wantField)
			}
		})
	}
}

// TestMintEveryDecision: incident decisions (restore, retire) and deprovisioning sign-offs are minted
// like approvals, and the verified token carries the decision the run then checks.
func TestMintEveryDecision(t *testing.T) {
	m, v := fixture(t, time.Now())
	for _, d := range approval.Decisions {
		t.Run(d, func(t *testing.T) {
			tok, err := m.Mint(human(authn.RoleSecurityApprover), approval.Request{Agent: agent, Step: "security", Decision: d, Run: "run-1"})
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.VerifyApproval(context.Background(), tok.Token)
			if err != nil {
				t.Fatal(err)
			}
			if c.Decision != d || c.Step != "security" || c.Run != "run-1" {
				t.Fatalf("claims = %+v, want decision %s on step security of run-1", c, d)
			}
		})
	}
}
