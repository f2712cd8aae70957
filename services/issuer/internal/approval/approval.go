// Package approval mints approval tokens: a person's short-lived proof of one decision on one step of
// one agent's lifecycle run (provisioning, incident or deprovisioning; authn.ApprovalClaims), signed
// with the tenant's current signing key. The run verifies the token against the tenant's JWKS, and
// checks that the decision is one it accepts, before the decision counts.
package approval

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// Decisions an approval token carries.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
	// DecisionRestore restores a suspended agent at the end of an incident.
	DecisionRestore = "restore"
	// DecisionRetire retires the agent at the end of an incident.
	DecisionRetire = "retire"
	// DecisionSignOff signs off a verified deprovisioning.
	DecisionSignOff = "sign_off"
)

// Decisions lists every decision a token may carry; the run that takes the token checks that the
// decision is one it accepts (provisioning: approve or reject; incident: restore or retire;
// deprovisioning: sign_off).
var Decisions = []string{DecisionApprove, DecisionReject, DecisionRestore, DecisionRetire, DecisionSignOff}

// ReasonNotHuman is the reason code of a caller that is not a person acting for itself.
const ReasonNotHuman = "APPROVER_NOT_HUMAN"

// DecidingRoles are the roles that may ask for an approval token; the run decides which of them may
// decide which step.
var DecidingRoles = []authn.Role{
	authn.RoleApprover, authn.RoleSecurityApprover, authn.RoleComplianceApprover, authn.RoleOwner, authn.RoleTenantAdmin,
}

// Keys gives the tenant's current signing key (credentials.State).
type Keys interface {
	CurrentKey(tenant string) (*keys.SigningKey, bool)
}

// Config configures a Minter.
type Config struct {
	// Keys holds the tenants' signing keys. Required.
	Keys Keys
	// Issuer returns a tenant's issuer identifier ({public_url}/t/{tenant}). Required.
	Issuer func(tenant string) string
	// TTL is the tokens' lifetime: default and at most authn.MaxApprovalTokenLifetime.
	TTL time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// Minter mints approval tokens.
type Minter struct {
	keys   Keys
	issuer func(string) string
	ttl    time.Duration
	now    func() time.Time
}

// New returns a Minter.
func New(cfg Config) (*Minter, error) {
	switch {
	case cfg.Keys == nil:
		return nil, errors.New("approval: Config.Keys is required")
	case cfg.Issuer == nil:
		return nil, errors.New("approval: Config.Issuer is required")
	case cfg.TTL < 0 || cfg.TTL > authn.MaxApprovalTokenLifetime:
		return nil, fmt.Errorf("approval: Config.TTL %s is not within (0, %s]", cfg.TTL, authn.MaxApprovalTokenLifetime)
	}
	if cfg.TTL == 0 {
		cfg.TTL = authn.MaxApprovalTokenLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Minter{keys: cfg.Keys, issuer: cfg.Issuer, ttl: cfg.TTL, now: cfg.Now}, nil
}

// Request says what the token is for.
type Request struct {
	// Agent is the agent's resource name, tenants/{tenant}/agents/{agent}.
	Agent string
	// Step is the approval step, e.g. owner or security.
	Step string
	// Decision is one of Decisions.
	Decision string
	// Run is the Temporal run id of the lifecycle run (provisioning, incident or deprovisioning).
	Run string
}

// Token is a minted approval token.
type Token struct {
	// Token is the compact JWS.
	Token string
	// ID is its jti.
	ID string
	// Expiry is when it expires.
	Expiry time.Time
}

var (
	stepPattern  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	agentPattern = regexp.MustCompile(`^tenants/([a-z][a-z0-9-]{1,62})/agents/([^/]+)$`)
)

const maxRunLen = 128

// Mint returns an approval token binding p to r. p must be a person of the agent's tenant acting for
// itself (not a service identity, an agent or a delegated token) with one of DecidingRoles. Errors:
// Unauthenticated without p; InvalidArgument naming the field; NotFound (TENANT_NOT_FOUND) for another
// tenant; PermissionDenied (ReasonNotHuman, MISSING_ROLE); FailedPrecondition when the tenant has no
// signing key.
func (m *Minter) Mint(p *authn.Principal, r Request) (Token, error) {
	if p == nil {
		return Token{}, errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	match := agentPattern.FindStringSubmatch(r.Agent)
	if match == nil || !names.ValidAgentID(match[2]) {
		return Token{}, errs.InvalidArgument("agent", "must be tenants/{tenant}/agents/{agent}")
	}
	tenant := match[1]
	if p.Tenant != tenant {
		// Platform admins act in every tenant, but they are service identities of tenant system: no
		// person of this tenant.
		if p.IsPlatformAdmin() {
			return Token{}, errs.PermissionDenied(ReasonNotHuman, "approval tokens are issued to people of the agent's tenant only")
		}
		return Token{}, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	if p.Kind != authn.KindHuman || p.OnBehalfOf != "" || p.ID == "" {
		return Token{}, errs.PermissionDenied(ReasonNotHuman,
			"approval tokens are issued to people acting for themselves, not to "+kindName(p))
	}
	if err := p.Authorize(tenant, DecidingRoles...); err != nil {
		return Token{}, err
	}
	switch {
	case !stepPattern.MatchString(r.Step):
		return Token{}, errs.InvalidArgument("step", "must be a step name such as owner or security (lowercase letters, digits, dashes)")
	case !slices.Contains(Decisions, r.Decision):
		return Token{}, errs.InvalidArgument("decision", "must be one of "+strings.Join(Decisions, ", "))
	case !validRun(r.Run):
		return Token{}, errs.InvalidArgument("workflow_run_id", "must be the id of the lifecycle run that waits for the decision (1 to 128 printable ASCII characters)")
	}
	key, ok := m.keys.CurrentKey(tenant)
	if !ok {
		return Token{}, errs.FailedPrecondition("NO_SIGNING_KEY", "the tenant has no signing key yet").WithMetadata("tenant", tenant)
	}
	jti, err := newID()
	if err != nil {
		return Token{}, errs.Internal(err)
	}
	now := m.now().UTC().Truncate(time.Second)
	exp := now.Add(m.ttl)
	roles := make([]string, len(p.Roles))
	for i, role := range p.Roles {
		roles[i] = string(role)
	}
	payload, err := json.Marshal(authn.ApprovalClaims{
		Issuer: m.issuer(tenant), Subject: p.ID, Audience: authn.ApprovalAudience, Tenant: tenant,
		Agent: r.Agent, Step: r.Step, Decision: r.Decision, Run: r.Run, Roles: roles, ID: jti,
		IssuedAt: now.Unix(), Expiry: exp.Unix(),
	})
	if err != nil {
		return Token{}, errs.Internal(fmt.Errorf("approval: claims: %w", err))
	}
	tok, err := key.SignTyped(authn.ApprovalTokenType, payload)
	if err != nil {
		return Token{}, errs.Internal(fmt.Errorf("approval: %w", err))
	}
	return Token{Token: tok, ID: jti, Expiry: exp}, nil
}

func kindName(p *authn.Principal) string {
	switch {
	case p.OnBehalfOf != "":
		return "a delegated token"
	case p.Kind == authn.KindAgent:
		return "an agent"
	default:
		return "a service identity"
	}
}

func validRun(run string) bool {
	if run == "" || len(run) > maxRunLen {
		return false
	}
	return !strings.ContainsFunc(run, func(r rune) bool { return r <= ' ' || r > '~' })
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("approval: token id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
