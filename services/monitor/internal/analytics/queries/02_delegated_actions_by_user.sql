-- Delegated actions by user: what each agent did on behalf of each user.
SELECT
    on_behalf_of AS delegating_user,
    agent,
    resource,
    action,
    count(*) AS actions,
    sum(CASE WHEN outcome IN ('issued', 'allowed', 'allow') THEN 0 ELSE 1 END) AS denied,
    min(time) AS first_seen,
    max(time) AS last_seen
FROM telemetry_events FINAL
WHERE tenant = {tenant:String}
  AND kind = 'access'
  AND on_behalf_of != ''
  AND time >= {from:DateTime} AND time < {to:DateTime}
GROUP BY delegating_user, agent, resource, action
ORDER BY delegating_user, agent, resource, action
