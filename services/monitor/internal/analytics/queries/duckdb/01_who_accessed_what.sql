-- Who or what accessed what, when and why: one row per access decision of a resource server.
SELECT
    time,
    agent,
    owner,
    on_behalf_of,
    resource,
    action,
    scopes,
    outcome,
    coalesce(json_extract_string(detail, '$.reason'), '') AS reason,
    request_id
FROM telemetry_events
WHERE tenant = {tenant:String}
  AND kind = 'access'
  AND time >= {from:DateTime} AND time < {to:DateTime}
ORDER BY time, agent, request_id
