package authn_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// An approval token of an approver whose tokens were revoked within its life (a disabled client, a
// revoked subject or tenant, the signing key) no longer counts; revocations of other parties, and
// of the agent being approved, change nothing.
func TestVerifyApprovalChecksRevocations(t *testing.T) {
	fi := newFakeIssuer(t)
	k := newES256(t, "k1")
	fi.publish("acme", k)
	clk := &clock{now: baseTime}
	claims := authn.ApprovalClaims{
		Issuer: fi.issuer("acme"), Subject: "alice", Audience: authn.ApprovalAudience, Tenant: "acme",
		Agent: "tenants/acme/agents/bot", Step: "security", Decision: "approve", Run: "run-1", ID: "appr-1",
		IssuedAt: baseTime.Add(-time.Minute).Unix(), Expiry: baseTime.Add(4 * time.Minute).Unix(),
	}
	raw := mint(t, k, authn.ApprovalTokenType, claims)
	revokeAt := func(target issuerv1.RevocationTarget, set func(*issuerv1.TokensRevoked)) *issuerv1.TokensRevoked {
		ev := &issuerv1.TokensRevoked{Tenant: "acme", Target: target, NotBefore: timestamppb.New(baseTime),
			ExpireTime: timestamppb.New(baseTime.Add(time.Hour))}
		set(ev)
		return ev
	}
	tests := []struct {
		name    string
		revoke  *issuerv1.TokensRevoked
		wantErr bool
	}{
		{name: "nothing revoked"},
		{name: "approver's client disabled", wantErr: true,
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, func(ev *issuerv1.TokensRevoked) { ev.ClientId = "alice" })},
		{name: "approver's subject revoked", wantErr: true,
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT, func(ev *issuerv1.TokensRevoked) { ev.Subject = "alice" })},
		{name: "tenant revoked", wantErr: true,
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT, func(*issuerv1.TokensRevoked) {})},
		{name: "signing key revoked", wantErr: true,
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_KEY, func(ev *issuerv1.TokensRevoked) { ev.KeyId = "k1"; ev.NotBefore = nil })},
		{name: "approval token id revoked", wantErr: true,
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN, func(ev *issuerv1.TokensRevoked) { ev.TokenId = "appr-1"; ev.NotBefore = nil })},
		{name: "another client disabled",
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, func(ev *issuerv1.TokensRevoked) { ev.ClientId = "bob" })},
		{name: "the agent under approval revoked",
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT, func(ev *issuerv1.TokensRevoked) { ev.Agent = "tenants/acme/agents/bot" })},
		{name: "approver's earlier tokens revoked",
			revoke: revokeAt(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, func(ev *issuerv1.TokensRevoked) {
				ev.ClientId = "alice"
				ev.NotBefore = timestamppb.New(baseTime.Add(-time.Hour))
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deny := authn.NewDenylist(authn.DenylistConfig{Now: clk.Now})
			if tt.revoke != nil {
				if err := deny.Apply(tt.revoke, 1); err != nil {
					t.Fatal(err)
				}
			}
			v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: fi.srv.URL, HTTPClient: fi.srv.Client(),
				Now: clk.Now, Revocations: deny})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.VerifyApproval(context.Background(), raw)
			if !tt.wantErr {
				if err != nil || got.Subject != "alice" {
					t.Fatalf("got %+v, %v; want the approval verified", got, err)
				}
				return
			}
			if e := errs.FromStatus(err); e == nil || e.Kind != errs.KindUnauthenticated || e.Reason != authn.ReasonTokenRevoked || got != nil {
				t.Fatalf("got %+v, %v; want Unauthenticated %s", got, err, authn.ReasonTokenRevoked)
			}
		})
	}
}
