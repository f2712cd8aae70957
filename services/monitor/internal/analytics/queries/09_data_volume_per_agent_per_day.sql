-- Data volume per agent per day (UTC): accesses, rows and bytes returned.
SELECT
    agent,
    toDate(time, 'UTC') AS day,
    count(*) AS accesses,
    sum("rows") AS total_rows,
    sum("bytes") AS total_bytes
FROM telemetry_events FINAL
WHERE tenant = {tenant:String}
  AND kind = 'access'
  AND time >= {from:DateTime} AND time < {to:DateTime}
GROUP BY agent, day
ORDER BY agent, day
