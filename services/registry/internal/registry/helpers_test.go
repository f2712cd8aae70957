package registry_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// t0 is the time the given events are recorded at.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// ecJWKS returns a JWK Set with one fresh P-256 public key.
func ecJWKS(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return jwksOf(t, jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k1", Algorithm: string(jose.ES256), Use: "sig"})
}

// jwksOf renders keys as a JWK Set.
func jwksOf(t testing.TB, keys ...jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ed25519Key returns a fresh Ed25519 key pair.
func ed25519Key(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// validAgent is a registration input that passes validation (a LOW-risk dev reader).
func validAgent(t testing.TB) *registryv1.Agent {
	return &registryv1.Agent{
		DisplayName:     "FAQ bot",
		Owner:           "team:support",
		Sponsor:         "alice@corp.example",
		Purpose:         "Answers customer questions from the public FAQ.",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC,
		Scopes:          []string{"faq.read", "ticket.search.own"},
		PublicJwks:      ecJWKS(t),
	}
}

// history turns changes into the stored events of one aggregate, with sequences 1, 2, ...
func history(t testing.TB, tenant, aggType, aggID string, changes ...registry.Change) []eventstore.Event {
	t.Helper()
	out := make([]eventstore.Event, len(changes))
	for i, ch := range changes {
		data, err := proto.Marshal(ch.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = eventstore.Event{
			ID:            "ev-" + string(rune('a'+i)),
			Type:          ch.Type,
			Source:        "agentid/registry",
			Time:          t0.Add(time.Duration(i) * time.Minute),
			Metadata:      eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: "tester", Kind: eventstore.ActorHuman}},
			AggregateType: aggType,
			AggregateID:   aggID,
			Stream:        "TEST",
			Sequence:      uint64(i + 1),
			DataSchema:    string(ch.Data.ProtoReflect().Descriptor().FullName()),
			Data:          data,
		}
	}
	return out
}

// wantError checks err's kind and reason (and field, for InvalidArgument, when wantField is set).
func wantError(t testing.TB, err error, kind errs.Kind, reason, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s %s", kind, reason)
	}
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want an *errs.Error of kind %s", err, err, kind)
	}
	if e.Kind != kind {
		t.Fatalf("got kind %s (%v), want %s", e.Kind, err, kind)
	}
	if reason != "" && e.Reason != reason {
		t.Fatalf("got reason %s (%v), want %s", e.Reason, err, reason)
	}
	if field != "" && e.Field != field {
		t.Fatalf("got field %q (%v), want %q", e.Field, err, field)
	}
}
