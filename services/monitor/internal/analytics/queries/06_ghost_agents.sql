-- Ghost agents: agents or client ids seen in telemetry that the registry does not know.
SELECT
    agent,
    client_id,
    count(*) AS events,
    count(DISTINCT source_network) AS source_networks,
    min(time) AS first_seen,
    max(time) AS last_seen
FROM telemetry_events FINAL
WHERE tenant = {tenant:String}
  AND NOT agent_known
  AND time >= {from:DateTime} AND time < {to:DateTime}
GROUP BY agent, client_id
ORDER BY last_seen DESC, agent, client_id
