-- Top resources per agent: the ten resources each agent accessed most, with the data returned.
SELECT
    agent,
    resource,
    count(*) AS accesses,
    sum("rows") AS total_rows,
    sum("bytes") AS total_bytes
FROM telemetry_events FINAL
WHERE tenant = {tenant:String}
  AND kind = 'access'
  AND resource != ''
  AND time >= {from:DateTime} AND time < {to:DateTime}
GROUP BY agent, resource
ORDER BY agent, accesses DESC, resource
LIMIT 10 BY agent
