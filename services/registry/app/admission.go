package app

import (
	"fmt"
	"log/slog"

	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/grpcx"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/registry/internal/admission"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// newAdmission builds the policy admission of escalating updates: over deps.Policy, else over a
// connection to cfg.PolicyAddr (returned, for Close). Without either it returns no admission, and
// the registry refuses such updates.
func newAdmission(cfg Config, deps Deps, log *slog.Logger) (registry.Admission, *grpc.ClientConn, error) {
	client, conn := deps.Policy, (*grpc.ClientConn)(nil)
	if client == nil {
		if cfg.PolicyAddr == "" {
			log.Warn("no policy service configured: updates that escalate an ACTIVE or SUSPENDED agent are refused (ADMISSION_UNAVAILABLE)")
			return nil, nil, nil
		}
		var err error
		if conn, err = grpcx.DialTLS(cfg.PolicyAddr, deps.PolicyTLS, deps.PolicyPerRPC); err != nil {
			return nil, nil, fmt.Errorf("registry: dial the policy service %s: %w", cfg.PolicyAddr, err)
		}
		client = policyv1.NewPolicyServiceClient(conn)
	}
	adm, err := admission.New(admission.Config{Policy: client, Timeout: cfg.AdmissionTimeout, Logger: log})
	if err != nil {
		closeConn(conn)
		return nil, nil, err
	}
	return adm, conn, nil
}

func closeConn(conn *grpc.ClientConn) {
	if conn != nil {
		_ = conn.Close()
	}
}

// Close closes the connection to the policy service, if the registry dialled one.
func (a *App) Close() error {
	if a.policyConn != nil {
		return a.policyConn.Close()
	}
	return nil
}
