-- Deny rate per agent, from the hourly aggregate: refused requests (token requests and accesses)
-- over all requests, of known agents (the aggregate leaves ghosts out; query 6 lists them).
SELECT
    agent,
    sum(requests) AS total_requests,
    sum(denied) AS total_denied,
    round(sum(denied) / sum(requests), 4) AS deny_rate
FROM agent_hourly
WHERE tenant = {tenant:String}
  AND hour >= {from:DateTime} AND hour < {to:DateTime}
GROUP BY agent
ORDER BY deny_rate DESC, agent
