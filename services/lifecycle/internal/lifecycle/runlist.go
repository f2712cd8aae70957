package lifecycle

import (
	"context"
	"encoding/base64"
	"fmt"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/workflows"
)

// Page sizes of ListIncidents and ListReviews.
const (
	defaultIncidentPage = 100
	maxIncidentPage     = 1000
)

// listRuns returns one page of the tenant's runs of workflow type name from the visibility store,
// newest first: only running ones with openOnly, narrowed further by the query clause extra (""
// for none; built from validated values only). what names the runs in an error ("incident runs").
// A negative page size or a page token of no earlier response is an InvalidArgument.
func listRuns(ctx context.Context, c IncidentTemporal, name, tenant string, openOnly bool, extra string, pageSize int, pageToken, what string) (*workflowservice.ListWorkflowExecutionsResponse, error) {
	switch {
	case pageSize < 0:
		return nil, errs.InvalidArgument("page_size", "must not be negative")
	case pageSize == 0:
		pageSize = defaultIncidentPage
	case pageSize > maxIncidentPage:
		pageSize = maxIncidentPage
	}
	token, err := base64.RawURLEncoding.DecodeString(pageToken)
	if err != nil {
		return nil, errs.InvalidArgument("page_token", "is not a token of an earlier response")
	}
	query := fmt.Sprintf("WorkflowType = '%s' AND %s = '%s'", name, workflows.TenantKey.GetName(), tenant)
	if openOnly {
		query += " AND ExecutionStatus = 'Running'"
	}
	query += extra
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		PageSize: int32(pageSize), NextPageToken: token, Query: query,
	})
	if err != nil {
		return nil, temporalError("list "+what, err)
	}
	return resp, nil
}

// nextPageToken is the page token of the page after resp ("" after the last).
func nextPageToken(resp *workflowservice.ListWorkflowExecutionsResponse) string {
	return base64.RawURLEncoding.EncodeToString(resp.GetNextPageToken())
}

// updateRun sends update name with arg to the running workflow id (updateID makes a retry the same
// update), waits until the run has completed it and decodes its answer into out (nil: drops it).
func updateRun(ctx context.Context, c Temporal, updateID, id, name string, arg, out any) error {
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		UpdateID: updateID, WorkflowID: id, UpdateName: name, Args: []any{arg},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return err
	}
	return h.Get(ctx, out)
}
