-- Unused scopes per agent (access reviews): scopes the agent was registered with that no issued
-- token or allowed access of the period carried.
SELECT agent, scope AS unused_scope
FROM
(
    SELECT agent, arrayJoin(extractAll(visitParamExtractRaw(detail, 'scopes'), '"([^"]*)"')) AS scope
    FROM telemetry_events FINAL
    WHERE tenant = {tenant:String} AND kind = 'agent.registered'
)
WHERE (agent, scope) NOT IN
(
    SELECT agent, arrayJoin(scopes) AS scope
    FROM telemetry_events FINAL
    WHERE tenant = {tenant:String}
      AND kind IN ('token.requested', 'access')
      AND outcome IN ('issued', 'allowed')
      AND time >= {from:DateTime} AND time < {to:DateTime}
)
ORDER BY agent, unused_scope
