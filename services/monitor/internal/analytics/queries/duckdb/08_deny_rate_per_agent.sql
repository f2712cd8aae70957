-- Deny rate per agent: refused requests (token requests and accesses) over all requests, of known
-- agents.
SELECT
    agent,
    count(*) AS total_requests,
    sum(CASE WHEN outcome IN ('issued', 'allowed', 'allow') THEN 0 ELSE 1 END) AS total_denied,
    round(sum(CASE WHEN outcome IN ('issued', 'allowed', 'allow') THEN 0 ELSE 1 END) / count(*), 4) AS deny_rate
FROM telemetry_events
WHERE tenant = {tenant:String}
  AND kind IN ('access', 'token.requested')
  AND agent != ''
  AND agent_known
  AND time >= {from:DateTime} AND time < {to:DateTime}
GROUP BY agent
ORDER BY deny_rate DESC, agent
