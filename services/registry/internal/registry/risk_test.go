package registry_test

import (
	"testing"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

func TestDeriveRiskTier(t *testing.T) {
	const (
		dev     = registryv1.Environment_ENVIRONMENT_DEV
		test    = registryv1.Environment_ENVIRONMENT_TEST
		staging = registryv1.Environment_ENVIRONMENT_STAGING
		prod    = registryv1.Environment_ENVIRONMENT_PROD

		assistive  = registryv1.Autonomy_AUTONOMY_ASSISTIVE
		autonomous = registryv1.Autonomy_AUTONOMY_AUTONOMOUS

		internal = registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL
		b2b      = registryv1.TrustBoundary_TRUST_BOUNDARY_B2B
		public   = registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC

		publicData   = registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC
		internalData = registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL
		confidential = registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL
		pii          = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
		phi          = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI
		pci          = registryv1.DataSensitivity_DATA_SENSITIVITY_PCI

		low      = registryv1.RiskTier_RISK_TIER_LOW
		moderate = registryv1.RiskTier_RISK_TIER_MODERATE
		high     = registryv1.RiskTier_RISK_TIER_HIGH
	)
	reads := []string{"faq.read", "ticket.list", "kb.search.public", "doc.get", "metrics.query", "report.view"}
	tests := []struct {
		name string
		c    registry.Classification
		want registryv1.RiskTier
	}{
		{"read-only FAQ bot in dev", registry.Classification{dev, assistive, internal, publicData, reads, ""}, low},
		{"read-only internal-data agent in test", registry.Classification{test, autonomous, b2b, internalData, []string{"data.read"}, ""}, low},
		{"read-only in staging is not low", registry.Classification{staging, assistive, internal, publicData, reads, ""}, moderate},
		{"read-only in prod is moderate", registry.Classification{prod, assistive, internal, internalData, reads, ""}, moderate},
		{"confidential data in dev is not low", registry.Classification{dev, assistive, internal, confidential, reads, ""}, moderate},
		{"a write in dev is not low", registry.Classification{dev, assistive, internal, publicData, []string{"faq.read", "ticket.create"}, ""}, moderate},
		{"unknown action in dev is not low", registry.Classification{dev, assistive, internal, publicData, []string{"faq.summarize"}, ""}, moderate},
		{"PII anywhere is high", registry.Classification{dev, assistive, internal, pii, reads, ""}, high},
		{"PHI is high", registry.Classification{test, assistive, internal, phi, []string{"record.read"}, ""}, high},
		{"PCI is high", registry.Classification{staging, assistive, internal, pci, []string{"card.view"}, ""}, high},
		{"production write is high", registry.Classification{prod, assistive, internal, internalData, []string{"ticket.read", "ticket.update"}, ""}, high},
		{"production payment initiation is high", registry.Classification{prod, assistive, internal, confidential, []string{"payment.initiate.limited"}, ""}, high},
		{"production export is high", registry.Classification{prod, assistive, internal, internalData, []string{"report.export"}, ""}, high},
		{"production send is high", registry.Classification{prod, assistive, b2b, publicData, []string{"email.send"}, ""}, high},
		{"production delete/execute are high", registry.Classification{prod, assistive, internal, publicData, []string{"job.execute"}, ""}, high},
		{"staging write is moderate", registry.Classification{staging, assistive, internal, internalData, []string{"ticket.write"}, ""}, moderate},
		{"autonomous on the public internet is high", registry.Classification{dev, autonomous, public, publicData, reads, ""}, high},
		{"assistive on the public internet is not high", registry.Classification{staging, assistive, public, publicData, reads, ""}, moderate},
		{"autonomous B2B is moderate", registry.Classification{staging, autonomous, b2b, internalData, reads, ""}, moderate},
		{"qualifier does not count as action", registry.Classification{prod, assistive, internal, internalData, []string{"data.read.write"}, ""}, moderate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := registry.DeriveRiskTier(tt.c); got != tt.want {
				t.Fatalf("DeriveRiskTier(%+v) = %s, want %s", tt.c, got, tt.want)
			}
			if again := registry.DeriveRiskTier(tt.c); again != tt.want {
				t.Fatalf("second derivation gave %s", again)
			}
		})
	}
}
