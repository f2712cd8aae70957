package revocation

import (
	"fmt"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// clientKey checks a client key reference of tenant: a client of the tenant that exists and a
// thumbprint. The key itself need not be the client's any more: a rotation revokes a key's tokens
// after removing it.
func (s *Service) clientKey(tenant string, ref *issuerv1.ClientKeyRef) (string, string, error) {
	t, clientID, err := credentials.ParseClientName("client_key.client", ref.GetClient())
	if err != nil {
		return "", "", err
	}
	if t != tenant {
		return "", "", errs.InvalidArgument("client_key.client", "must be a client of "+credentials.TenantName(tenant))
	}
	if err := checkText("client_key.thumbprint", ref.GetThumbprint(), maxIDBytes); err != nil {
		return "", "", err
	}
	if _, ok := s.clients.Client(tenant, clientID); !ok {
		return "", "", errs.NotFound("CLIENT_NOT_FOUND", fmt.Sprintf("client %q not found", clientID)).
			WithMetadata("client", ref.GetClient())
	}
	return clientID, ref.GetThumbprint(), nil
}
