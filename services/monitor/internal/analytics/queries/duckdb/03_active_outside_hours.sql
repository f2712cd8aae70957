-- Agents active outside working hours (before 08:00 or from 18:00 UTC, or on a weekend).
SELECT
    agent,
    owner,
    count(*) AS requests_outside_hours,
    min(time) AS first_seen,
    max(time) AS last_seen
FROM telemetry_events
WHERE tenant = {tenant:String}
  AND kind IN ('access', 'token.requested')
  AND agent != ''
  AND time >= {from:DateTime} AND time < {to:DateTime}
  AND (hour(time) < 8 OR hour(time) >= 18 OR isodow(time) >= 6)
GROUP BY agent, owner
ORDER BY requests_outside_hours DESC, agent
