package testkit_test

import (
	"log/slog"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/testkit"
)

func TestStartTemporalServesAgentidNamespace(t *testing.T) {
	srv := testkit.StartTemporal(t)
	if srv.UIURL() != "" {
		t.Errorf("UIURL() = %q, want the UI disabled in tests", srv.UIURL())
	}
	c, err := client.Dial(client.Options{
		HostPort: srv.HostPort(), Namespace: "agentid",
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.OperatorService().ListSearchAttributes(t.Context(), &operatorservice.ListSearchAttributesRequest{Namespace: "agentid"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"AgentId", "Tenant", "RiskTier", "Stage"} {
		if got := resp.GetCustomAttributes()[name]; got != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			t.Errorf("search attribute %s = %v, want Keyword", name, got)
		}
	}
}
