package registry_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// badAgentCases are registration inputs that must be refused, each naming the offending field.
func badAgentCases(t testing.TB, now time.Time) []struct {
	name  string
	edit  func(*registryv1.Agent)
	field string
} {
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv := ed25519Key(t)
	ecPub := func(kid string) jose.JSONWebKey {
		return jose.JSONWebKey{Key: &ecPriv.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}
	}
	six := make([]jose.JSONWebKey, 6)
	for i := range six {
		six[i] = ecPub(string(rune('a' + i)))
	}
	jwks := func(keys ...jose.JSONWebKey) string { return jwksOf(t, keys...) }
	return []struct {
		name  string
		edit  func(*registryv1.Agent)
		field string
	}{
		{"no display name", func(a *registryv1.Agent) { a.DisplayName = "" }, "agent.display_name"},
		{"blank display name", func(a *registryv1.Agent) { a.DisplayName = "   " }, "agent.display_name"},
		{"display name too long", func(a *registryv1.Agent) { a.DisplayName = strings.Repeat("x", 201) }, "agent.display_name"},
		{"display name with newline", func(a *registryv1.Agent) { a.DisplayName = "a\nb" }, "agent.display_name"},
		{"no owner", func(a *registryv1.Agent) { a.Owner = "" }, "agent.owner"},
		{"no sponsor", func(a *registryv1.Agent) { a.Sponsor = "" }, "agent.sponsor"},
		{"owner with a space", func(a *registryv1.Agent) { a.Owner = "alice smith" }, "agent.owner"},
		{"sponsor with a NUL", func(a *registryv1.Agent) { a.Sponsor = "bob\x00@corp.example" }, "agent.sponsor"},
		{"sponsor not UTF-8", func(a *registryv1.Agent) { a.Sponsor = "bob\xff" }, "agent.sponsor"},
		{"unknown function", func(a *registryv1.Agent) { a.Function = "chatbot" }, "agent.function"},
		{"uppercase function", func(a *registryv1.Agent) { a.Function = "Finance" }, "agent.function"},
		{"unknown credential type", func(a *registryv1.Agent) { a.CredentialType = 9 }, "agent.credential_type"},
		{"decommission criteria too long", func(a *registryv1.Agent) { a.DecommissionCriteria = strings.Repeat("x", 1001) }, "agent.decommission_criteria"},
		{"65 labels", func(a *registryv1.Agent) {
			a.Labels = map[string]string{}
			for i := range registry.MaxLabels + 1 {
				a.Labels[fmt.Sprintf("k%d", i)] = "v"
			}
		}, "agent.labels"},
		{"huge label value", func(a *registryv1.Agent) { a.Labels = map[string]string{"k": strings.Repeat("v", 1<<20)} }, "agent.labels"},
		{"label key of 64", func(a *registryv1.Agent) { a.Labels = map[string]string{strings.Repeat("k", 64): "v"} }, "agent.labels"},
		{"empty label key", func(a *registryv1.Agent) { a.Labels = map[string]string{"": "v"} }, "agent.labels"},
		{"uppercase label key", func(a *registryv1.Agent) { a.Labels = map[string]string{"Team": "v"} }, "agent.labels"},
		{"unicode label value", func(a *registryv1.Agent) { a.Labels = map[string]string{"team": "équipe"} }, "agent.labels"},
		{"label value with space", func(a *registryv1.Agent) { a.Labels = map[string]string{"team": "a b"} }, "agent.labels"},
		{"bad role", func(a *registryv1.Agent) { a.Roles = []string{"Reader"} }, "agent.roles"},
		{"admin role", func(a *registryv1.Agent) { a.Roles = []string{"admin"} }, "agent.roles"},
		{"duplicate role", func(a *registryv1.Agent) { a.Roles = []string{"reader", "reader"} }, "agent.roles"},
		{"51 roles", func(a *registryv1.Agent) {
			for i := range registry.MaxRoles + 1 {
				a.Roles = append(a.Roles, fmt.Sprintf("r%d", i))
			}
		}, "agent.roles"},
		{"10k scopes", func(a *registryv1.Agent) {
			a.Scopes = nil
			for i := range 10000 {
				a.Scopes = append(a.Scopes, fmt.Sprintf("r%d.read", i))
			}
		}, "agent.scopes"},
		{"dependency of unknown kind", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "mainframe", Uri: "https://x.example"}}
		}, "agent.dependencies[0].kind"},
		{"dependency without uri", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "queue"}}
		}, "agent.dependencies[0].uri"},
		{"dependency uri with userinfo", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "queue", Uri: "amqp://guest:s3cret@mq.internal/vhost"}}
		}, "agent.dependencies[0].uri"},
		{"dependency uri with user only", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "database", Uri: "postgres://svc@db.internal/app"}}
		}, "agent.dependencies[0].uri"},
		{"dependency uri with token", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "webhook", Uri: "https://hooks.example/x?Token=abc"}}
		}, "agent.dependencies[0].uri"},
		{"dependency uri with SAS signature", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "storage", Uri: "https://acct.blob.core.windows.net/c?sv=2020&sig=abc"}}
		}, "agent.dependencies[0].uri"},
		{"dependency uri with a space", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "api", Uri: "https://a b.example"}}
		}, "agent.dependencies[0].uri"},
		{"second dependency nil", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "api", Uri: "https://a.example"}, nil}
		}, "agent.dependencies[1]"},
		{"duplicate dependency", func(a *registryv1.Agent) {
			a.Dependencies = []*registryv1.Dependency{{Kind: "api", Uri: "https://a.example"}, {Kind: "api", Uri: "https://a.example"}}
		}, "agent.dependencies[1]"},
		{"no purpose", func(a *registryv1.Agent) { a.Purpose = "" }, "agent.purpose"},
		{"blank sponsor", func(a *registryv1.Agent) { a.Sponsor = " " }, "agent.sponsor"},
		{"no environment", func(a *registryv1.Agent) { a.Environment = 0 }, "agent.environment"},
		{"unknown environment", func(a *registryv1.Agent) { a.Environment = 42 }, "agent.environment"},
		{"no autonomy", func(a *registryv1.Agent) { a.Autonomy = 0 }, "agent.autonomy"},
		{"no identity model", func(a *registryv1.Agent) { a.IdentityModel = 0 }, "agent.identity_model"},
		{"no trust boundary", func(a *registryv1.Agent) { a.TrustBoundary = 0 }, "agent.trust_boundary"},
		{"no data sensitivity", func(a *registryv1.Agent) { a.DataSensitivity = 0 }, "agent.data_sensitivity"},
		{"no scopes", func(a *registryv1.Agent) { a.Scopes = nil }, "agent.scopes"},
		{"scope without action", func(a *registryv1.Agent) { a.Scopes = []string{"tickets"} }, "agent.scopes"},
		{"scope with four segments", func(a *registryv1.Agent) { a.Scopes = []string{"a.b.c.d"} }, "agent.scopes"},
		{"uppercase scope", func(a *registryv1.Agent) { a.Scopes = []string{"Data.read"} }, "agent.scopes"},
		{"admin scope", func(a *registryv1.Agent) { a.Scopes = []string{"faq.read", "billing.admin"} }, "agent.scopes"},
		{"admin resource", func(a *registryv1.Agent) { a.Scopes = []string{"admin.read"} }, "agent.scopes"},
		{"superuser scope", func(a *registryv1.Agent) { a.Scopes = []string{"db.superuser"} }, "agent.scopes"},
		{"root scope", func(a *registryv1.Agent) { a.Scopes = []string{"host.login.root"} }, "agent.scopes"},
		{"wildcard scope", func(a *registryv1.Agent) { a.Scopes = []string{"data.*"} }, "agent.scopes"},
		{"all scope", func(a *registryv1.Agent) { a.Scopes = []string{"data.read.all"} }, "agent.scopes"},
		{"duplicate scope", func(a *registryv1.Agent) { a.Scopes = []string{"faq.read", "faq.read"} }, "agent.scopes"},
		{"no JWKS", func(a *registryv1.Agent) { a.PublicJwks = "" }, "agent.public_jwks"},
		{"JWKS not JSON", func(a *registryv1.Agent) { a.PublicJwks = "not json" }, "agent.public_jwks"},
		{"JWKS without keys", func(a *registryv1.Agent) { a.PublicJwks = `{"keys":[]}` }, "agent.public_jwks"},
		{"JWKS with six keys", func(a *registryv1.Agent) { a.PublicJwks = jwks(six...) }, "agent.public_jwks"},
		{"JWKS with private EC key", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: ecPriv, KeyID: "k1", Algorithm: "ES256"})
		}, "agent.public_jwks"},
		{"JWKS with private Ed25519 key", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: edPriv, KeyID: "k1", Algorithm: "EdDSA"})
		}, "agent.public_jwks"},
		{"JWKS with symmetric key", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "k1", Algorithm: "HS256"})
		}, "agent.public_jwks"},
		{"JWKS with RSA key", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "k1", Algorithm: "RS256"})
		}, "agent.public_jwks"},
		{"JWKS with P-384 key", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: &p384.PublicKey, KeyID: "k1", Algorithm: "ES384"})
		}, "agent.public_jwks"},
		{"JWKS key without kid", func(a *registryv1.Agent) { a.PublicJwks = jwks(ecPub("")) }, "agent.public_jwks"},
		{"JWKS with duplicate kid", func(a *registryv1.Agent) { a.PublicJwks = jwks(ecPub("k"), ecPub("k")) }, "agent.public_jwks"},
		{"JWKS with mismatched alg", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: edPub, KeyID: "k1", Algorithm: "ES256"})
		}, "agent.public_jwks"},
		{"JWKS encryption key", func(a *registryv1.Agent) {
			a.PublicJwks = jwks(jose.JSONWebKey{Key: &ecPriv.PublicKey, KeyID: "k1", Use: "enc"})
		}, "agent.public_jwks"},
		{"expire time in the past", func(a *registryv1.Agent) { a.ExpireTime = timestamppb.New(now.Add(-time.Minute)) }, "agent.expire_time"},
		{"expire time beyond a year", func(a *registryv1.Agent) { a.ExpireTime = timestamppb.New(now.Add(366 * 24 * time.Hour)) }, "agent.expire_time"},
		{"invalid expire time", func(a *registryv1.Agent) { a.ExpireTime = &timestamppb.Timestamp{Seconds: 1, Nanos: -1} }, "agent.expire_time"},
	}
}

func TestValidateAgent(t *testing.T) {
	now := time.Now()
	if err := registry.ValidateAgent(validAgent(t), now); err != nil {
		t.Fatalf("valid agent refused: %v", err)
	}
	for _, tt := range badAgentCases(t, now) {
		t.Run(tt.name, func(t *testing.T) {
			a := validAgent(t)
			tt.edit(a)
			err := registry.ValidateAgent(a, now)
			wantError(t, err, errs.KindInvalidArgument, "INVALID_ARGUMENT", tt.field)
			// The message itself names the field and the rule (clients print only the message),
			// is valid UTF-8 and short, and never echoes a credential.
			var e *errs.Error
			if errors.As(err, &e) {
				if !strings.HasPrefix(e.Message, tt.field+": ") || !utf8.ValidString(e.Message) || len(e.Message) > 600 {
					t.Errorf("message %q: want %q, then the rule, in valid UTF-8 of at most 600 bytes", e.Message, tt.field+": ")
				}
				if strings.Contains(e.Message, "s3cret") || strings.Contains(e.Message, "abc") {
					t.Errorf("message %q echoes a credential", e.Message)
				}
			}
		})
	}
	t.Run("nil agent", func(t *testing.T) {
		wantError(t, registry.ValidateAgent(nil, now), errs.KindInvalidArgument, "", "agent")
	})
}

func TestValidateAgentAccepts(t *testing.T) {
	now := time.Now()
	edPub, _ := ed25519Key(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*registryv1.Agent)
	}{
		{"Ed25519 key", func(a *registryv1.Agent) {
			a.PublicJwks = jwksOf(t, jose.JSONWebKey{Key: edPub, KeyID: "ed", Algorithm: "EdDSA"})
		}},
		{"keys without alg and use, mixed types", func(a *registryv1.Agent) {
			a.PublicJwks = jwksOf(t, jose.JSONWebKey{Key: edPub, KeyID: "ed"}, jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "ec"})
		}},
		{"five keys", func(a *registryv1.Agent) {
			keys := make([]jose.JSONWebKey, 5)
			for i := range keys {
				keys[i] = jose.JSONWebKey{Key: edPub, KeyID: string(rune('a' + i))}
			}
			a.PublicJwks = jwksOf(t, keys...)
		}},
		{"scope with qualifier, digits, '_' and '-'", func(a *registryv1.Agent) {
			a.Scopes = []string{"data.read.customer", "ticket.create", "payment.initiate.limited", "s3_bucket.list.eu-west-1"}
		}},
		{"expire time in eleven months", func(a *registryv1.Agent) { a.ExpireTime = timestamppb.New(now.Add(330 * 24 * time.Hour)) }},
		{"all stage-1 fields", func(a *registryv1.Agent) {
			a.Function = "customer-support"
			a.Roles = []string{"ticket-reader", "kb:viewer"}
			a.CredentialType = registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP
			a.DecommissionCriteria = "when the FAQ moves to the new help centre"
			a.Labels = map[string]string{"team": "support", "cost-center": "cc-42", "app.kubernetes.io/name": "faq-bot", "empty": ""}
			a.Dependencies = []*registryv1.Dependency{
				{Kind: "queue", Uri: "nats://nats.internal:4222/tickets", Description: "ticket queue"},
				{Kind: "storage", Uri: "s3://faq-bucket/answers"},
				{Kind: "webhook", Uri: "https://hooks.corp.example/faq?team=support"},
				{Kind: "api", Uri: "arn:aws:sqs:eu-west-1:123456789012:faq"},
			}
		}},
		{"64 labels of 63 characters", func(a *registryv1.Agent) {
			a.Labels = map[string]string{}
			for i := range registry.MaxLabels {
				a.Labels[fmt.Sprintf("%s%02d", strings.Repeat("k", 61), i)] = strings.Repeat("v", 63)
			}
		}},
		{"function other", func(a *registryv1.Agent) { a.Function = "other" }},
		{"unicode display name of 200 characters", func(a *registryv1.Agent) { a.DisplayName = strings.Repeat("é", 200) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAgent(t)
			tt.edit(a)
			if err := registry.ValidateAgent(a, now); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

func TestParsePublicJWKSReturnsKeys(t *testing.T) {
	set, err := registry.ParsePublicJWKS("f", ecJWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != "k1" || !set.Keys[0].IsPublic() {
		t.Fatalf("keys %+v", set.Keys)
	}
	// A private parameter smuggled next to a public key is refused before parsing.
	var doc map[string][]map[string]any
	if err := json.Unmarshal([]byte(ecJWKS(t)), &doc); err != nil {
		t.Fatal(err)
	}
	doc["keys"][0]["d"] = "AAAA"
	b, _ := json.Marshal(doc)
	_, err = registry.ParsePublicJWKS("f", string(b))
	wantError(t, err, errs.KindInvalidArgument, "", "f")
}
