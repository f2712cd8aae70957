// Package server adapts the admission decision point to gRPC (agentid.policy.v1.PolicyService).
package server

import (
	"context"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentid/agentid/pkg/errs"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/policy/internal/admission"
)

var _ policyv1.PolicyServiceServer = (*Server)(nil)

// Server implements policyv1.PolicyServiceServer.
type Server struct {
	policyv1.UnimplementedPolicyServiceServer
	admission *admission.Service
}

// New returns a Server answering with svc.
func New(svc *admission.Service) *Server { return &Server{admission: svc} }

// EvaluateAdmission decides whether an agent may be provisioned.
func (s *Server) EvaluateAdmission(ctx context.Context, req *policyv1.EvaluateAdmissionRequest) (*policyv1.EvaluateAdmissionResponse, error) {
	var agent *registryv1.Agent
	if req.GetAgent() != nil {
		var err error
		if agent, err = agentFromStruct(req); err != nil {
			return nil, err
		}
	}
	d, err := s.admission.Evaluate(ctx, admission.Request{Tenant: req.GetTenant(), Agent: agent, RequestID: req.GetRequestId()})
	if err != nil {
		return nil, err
	}
	return &policyv1.EvaluateAdmissionResponse{Decision: admission.ToProto(d)}, nil
}

// agentFromStruct reads the request's JSON agent as a registry Agent. It is strict: an unknown
// field or enum name is refused rather than silently read as "unspecified".
func agentFromStruct(req *policyv1.EvaluateAdmissionRequest) (*registryv1.Agent, error) {
	b, err := protojson.Marshal(req.GetAgent())
	if err != nil {
		return nil, errs.InvalidArgument("agent", "agent is not a JSON object")
	}
	agent := &registryv1.Agent{}
	if err := protojson.Unmarshal(b, agent); err != nil {
		return nil, errs.InvalidArgument("agent", "agent is not a registry Agent in JSON form: "+err.Error())
	}
	return agent, nil
}
