package policydoc_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentid/agentid/pkg/policydoc"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

func TestAgent(t *testing.T) {
	tests := []struct {
		name   string
		agent  *registryv1.Agent
		want   map[string]any
		absent []string
	}{
		{
			name: "camelCase fields and enum names",
			agent: &registryv1.Agent{
				Name: "tenants/acme/agents/agt_1", DisplayName: "Support bot", Owner: "alice",
				Environment: registryv1.Environment_ENVIRONMENT_PROD, Scopes: []string{"tickets:read", "tickets:write"},
			},
			want: map[string]any{
				"name": "tenants/acme/agents/agt_1", "displayName": "Support bot", "owner": "alice",
				"environment": "ENVIRONMENT_PROD", "scopes": []any{"tickets:read", "tickets:write"},
			},
			absent: []string{"display_name", "sponsor", "riskTier", "labels"},
		},
		{
			name:   "empty agent is an empty document",
			agent:  &registryv1.Agent{},
			want:   map[string]any{},
			absent: []string{"name", "state", "environment"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := policydoc.Agent(tt.agent)
			if err != nil {
				t.Fatalf("Agent: %v", err)
			}
			want, err := structpb.NewStruct(tt.want)
			if err != nil {
				t.Fatalf("want: %v", err)
			}
			for k, v := range want.GetFields() {
				got, ok := doc.GetFields()[k]
				if !ok {
					t.Errorf("field %q missing from %v", k, doc)
					continue
				}
				if !proto.Equal(got, v) {
					t.Errorf("field %q = %v, want %v", k, got, v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := doc.GetFields()[k]; ok {
					t.Errorf("field %q present in %v, want absent", k, doc)
				}
			}
		})
	}
}
