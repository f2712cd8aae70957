package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// maxTokenFileBytes bounds a token read with --token-file.
const maxTokenFileBytes = 16 << 10

func newTokensCmd(g *globals) *cobra.Command {
	cmd := group("tokens", "Revoke access tokens")
	cmd.AddCommand(newTokensRevokeCmd(g))
	return cmd
}

func newTokensRevokeCmd(g *globals) *cobra.Command {
	var token, tokenFile, client, agent, issuedBefore, reason, requestID string
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke one token, every token of a client or an agent, or every token of the tenant issued before a time",
		Long: `revoke records a revocation (a tokens.revoked event); every verifier that follows the revocation
stream (the platform API, the issuer's introspection, resource servers using pkg/authn) refuses the
covered tokens as soon as it has applied it. Exactly one of --token, --token-file, --client, --agent
and --issued-before says what to revoke. Revoking a token that is unknown, expired or of another
tenant changes nothing. Callers: platform-admin, or tenant-admin of the tenant.`,
		Example: `  agentctl tokens revoke --token-file leaked.jwt --reason "posted in a chat"
  agentctl tokens revoke --client ci-bot --reason "key rotated"
  agentctl tokens revoke --agent invoice-bot
  agentctl tokens revoke --issued-before 2026-11-30T12:00:00Z --reason "incident 42"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set := 0
			for _, v := range []string{token, tokenFile, client, agent, issuedBefore} {
				if v != "" {
					set++
				}
			}
			if set != 1 {
				return errors.New("say what to revoke with exactly one of --token, --token-file, --client, --agent and --issued-before")
			}
			if tokenFile != "" {
				t, err := readTokenFile(cmd.InOrStdin(), tokenFile)
				if err != nil {
					return err
				}
				token = t
			}
			var before time.Time
			if issuedBefore != "" {
				t, err := time.Parse(time.RFC3339, issuedBefore)
				if err != nil {
					return fmt.Errorf("--issued-before %q: want an RFC 3339 time such as 2026-11-30T12:00:00Z", issuedBefore)
				}
				before = t
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			tenant := g.tenantOr(s)
			req := &issuerv1.RevokeTokensRequest{Parent: "tenants/" + tenant, Reason: reason}
			switch {
			case token != "":
				req.Target = &issuerv1.RevokeTokensRequest_Token{Token: token}
			case client != "":
				name, err := clientName(tenant, client)
				if err != nil {
					return err
				}
				req.Target = &issuerv1.RevokeTokensRequest_Client{Client: name}
			case agent != "":
				name, err := g.agentName(s, agent)
				if err != nil {
					return err
				}
				req.Target = &issuerv1.RevokeTokensRequest_Agent{Agent: name}
			default:
				req.Target = &issuerv1.RevokeTokensRequest_IssuedBefore{IssuedBefore: timestamp(before)}
			}
			req.RequestId = requestIDOr(requestID, "revoke")
			res, err := issuerv1.NewIssuerServiceClient(conn).RevokeTokens(cmd.Context(), req)
			if err != nil {
				return mutationError("the revocation", req.RequestId, "", err)
			}
			rev := res.GetRevocation()
			if rev == nil {
				fmt.Fprintln(g.stderr, "nothing revoked: the token is not an unexpired token of tenant "+tenant)
				return g.printResult(nil, true, func() table {
					return table{header: []string{"NAME", "TARGET", "COVERS", "SEQUENCE"}}
				})
			}
			return g.printResult([]proto.Message{rev}, false, func() table {
				return table{header: []string{"NAME", "TARGET", "COVERS", "SEQUENCE"}, rows: [][]string{{
					rev.GetName(), enumName(rev.GetEvent().GetTarget().String(), "REVOCATION_TARGET_"),
					revocationCovers(rev.GetEvent()), strconv.FormatUint(rev.GetSequence(), 10),
				}}}
			})
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "the access token to revoke (prefer --token-file: a flag ends up in the shell history)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the access token to revoke ('-' reads standard input)")
	cmd.Flags().StringVar(&client, "client", "", "revoke every token of this client (client id or tenants/{tenant}/clients/{client})")
	cmd.Flags().StringVar(&agent, "agent", "", "revoke every token of this agent (agent id or tenants/{tenant}/agents/{agent})")
	cmd.Flags().StringVar(&issuedBefore, "issued-before", "", "revoke every token of the tenant issued at or before this RFC 3339 time")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the event, at most 512 bytes)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key")
	return cmd
}

// readTokenFile reads a token from path ("-" is in), trimmed of surrounding white space.
func readTokenFile(in io.Reader, path string) (string, error) {
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	b, err := io.ReadAll(io.LimitReader(in, maxTokenFileBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("--token-file %s: %w", path, err)
	case len(b) > maxTokenFileBytes:
		return "", fmt.Errorf("--token-file %s: larger than %d bytes, not an access token", path, maxTokenFileBytes)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return t, nil
}

// clientName accepts a full client resource name or a bare client id of tenant.
func clientName(tenant, arg string) (string, error) {
	if strings.HasPrefix(arg, "tenants/") {
		parts := strings.Split(arg, "/")
		if len(parts) != 4 || parts[2] != "clients" || parts[1] == "" || parts[3] == "" {
			return "", fmt.Errorf("client %q: want tenants/{tenant}/clients/{client} or a bare client id", arg)
		}
		return arg, nil
	}
	if strings.Contains(arg, "/") {
		return "", fmt.Errorf("client %q: want tenants/{tenant}/clients/{client} or a bare client id", arg)
	}
	return "tenants/" + tenant + "/clients/" + arg, nil
}

// revocationCovers says in a few words what a revocation covers, for tables.
func revocationCovers(ev *issuerv1.TokensRevoked) string {
	nb := func() string { return ev.GetNotBefore().AsTime().UTC().Format(time.RFC3339) }
	switch ev.GetTarget() {
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN:
		return "jti " + ev.GetTokenId()
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT:
		return ev.GetClientId() + " issued until " + nb()
	case issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT:
		return ev.GetAgent() + " issued until " + nb()
	case issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT:
		return ev.GetSubject() + " issued until " + nb()
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT:
		return "every token issued until " + nb()
	case issuerv1.RevocationTarget_REVOCATION_TARGET_KEY:
		return "key " + ev.GetKeyId()
	}
	return ""
}
