-- Unused scopes per agent (access reviews): scopes the agent was registered with that no issued
-- token or allowed access of the period carried.
SELECT r.agent, r.scope AS unused_scope
FROM
(
    SELECT agent, unnest(from_json(json_extract(detail, '$.agent.scopes'), '["VARCHAR"]')) AS scope
    FROM telemetry_events
    WHERE tenant = {tenant:String} AND kind = 'agent.registered'
) AS r
WHERE NOT EXISTS
(
    SELECT 1
    FROM
    (
        SELECT agent, unnest(scopes) AS scope
        FROM telemetry_events
        WHERE tenant = {tenant:String}
          AND kind IN ('token.requested', 'access')
          AND outcome IN ('issued', 'allowed')
          AND time >= {from:DateTime} AND time < {to:DateTime}
    ) AS u
    WHERE u.agent = r.agent AND u.scope = r.scope
)
ORDER BY r.agent, unused_scope
