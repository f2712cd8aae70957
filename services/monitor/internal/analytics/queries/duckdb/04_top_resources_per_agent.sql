-- Top resources per agent: the ten resources each agent accessed most, with the data returned.
SELECT
    agent,
    resource,
    count(*) AS accesses,
    sum("rows") AS total_rows,
    sum("bytes") AS total_bytes
FROM telemetry_events
WHERE tenant = {tenant:String}
  AND kind = 'access'
  AND resource != ''
  AND time >= {from:DateTime} AND time < {to:DateTime}
GROUP BY agent, resource
QUALIFY row_number() OVER (PARTITION BY agent ORDER BY count(*) DESC, resource) <= 10
ORDER BY agent, accesses DESC, resource
