-- Tokens issued per policy version: issued token requests joined, by request id, with the policy
-- decision that allowed them (the bundle version is in the decision's detail).
SELECT bundle_version, count(*) AS tokens_issued, count(DISTINCT agent) AS agents
FROM
(
    SELECT tenant, request_id, agent
    FROM telemetry_events
    WHERE tenant = {tenant:String}
      AND kind = 'token.requested' AND outcome = 'issued' AND request_id != ''
      AND time >= {from:DateTime} AND time < {to:DateTime}
) AS t
INNER JOIN
(
    SELECT tenant, request_id, any_value(json_extract_string(detail, '$.bundle_version')) AS bundle_version
    FROM telemetry_events
    WHERE tenant = {tenant:String}
      AND kind = 'policy.decided' AND request_id != ''
      AND time >= {from:DateTime} AND time < {to:DateTime}
    GROUP BY tenant, request_id
) AS d USING (tenant, request_id)
GROUP BY bundle_version
ORDER BY bundle_version
