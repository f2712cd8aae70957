package cli_test

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// onePerPage is the page of matching a fake list RPC answers for token: one item a page, the page
// token being the next item's index as one digit ("" after the last page).
func onePerPage[T any](matching []T, token string) (page []T, next string) {
	i := 0
	if token != "" {
		i = int(token[0] - '0')
	}
	if i >= len(matching) {
		return nil, ""
	}
	if i+1 < len(matching) {
		next = string(rune('0' + i + 1))
	}
	return matching[i : i+1], next
}

// fakeApprovalToken is a fake issuer's approval token for req: "token-for-<step>-<decision>", id
// jti-1, valid for five minutes.
func fakeApprovalToken(req *issuerv1.IssueApprovalTokenRequest) *issuerv1.IssueApprovalTokenResponse {
	return &issuerv1.IssueApprovalTokenResponse{Token: "token-for-" + req.GetStep() + "-" + req.GetDecision().String(), TokenId: "jti-1",
		ExpireTime: timestamppb.New(time.Now().Add(5 * time.Minute))}
}
