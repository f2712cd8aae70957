-- Activity of an agent after its suspension or retirement: requests later than the agent's last
-- agent.suspended or agent.retired row and not preceded by a later agent.resumed.
SELECT agent, state_event, state_time, count(*) AS requests_after, min(time) AS first_after, max(time) AS last_after
FROM
(
    SELECT tenant, agent, time
    FROM telemetry_events
    WHERE tenant = {tenant:String} AND kind IN ('access', 'token.requested') AND agent != ''
) AS a
INNER JOIN
(
    SELECT tenant, agent, arg_max(kind, time) AS state_event, max(time) AS state_time
    FROM telemetry_events
    WHERE tenant = {tenant:String} AND kind IN ('agent.suspended', 'agent.retired', 'agent.resumed')
    GROUP BY tenant, agent
) AS s USING (tenant, agent)
WHERE state_event != 'agent.resumed' AND time > state_time
GROUP BY agent, state_event, state_time
ORDER BY agent
