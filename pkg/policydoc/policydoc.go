// Package policydoc holds the documents the policy service evaluates, built the same way by every
// party that asks it: the registry's update admission and the provisioning workflow.
package policydoc

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Agent is the agent as policy reads it: the registry's Agent in its canonical JSON form
// (camelCase fields, enum names, zero values omitted) as a Struct.
func Agent(a *registryv1.Agent) (*structpb.Struct, error) {
	b, err := protojson.Marshal(a)
	if err != nil {
		return nil, err
	}
	doc := &structpb.Struct{}
	if err := protojson.Unmarshal(b, doc); err != nil {
		return nil, err
	}
	return doc, nil
}
