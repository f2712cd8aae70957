-- agent_hourly: each agent's requests per hour (rows of kinds access and token.requested), the
-- refused ones among them, and the rows and bytes they returned: what baselines and dashboards
-- read instead of the raw rows. A SummingMergeTree fed by a materialized view on every insert into
-- telemetry_events; parts are summed when they merge, so a reader sums again (GROUP BY). Columns
-- summed into a column of the same name are qualified, so that no analyzer takes them for the alias.
CREATE TABLE IF NOT EXISTS agent_hourly
(
    tenant   String,
    agent    String,
    hour     DateTime,
    requests UInt64,
    denied   UInt64,
    rows     Int64,
    bytes    Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, agent, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_hourly_mv TO agent_hourly AS
SELECT
    tenant,
    agent,
    toDateTime(intDiv(toUInt32(time), 3600) * 3600) AS hour,
    count() AS requests,
    countIf(outcome NOT IN ('issued', 'allowed', 'allow')) AS denied,
    sum(telemetry_events.rows) AS rows,
    sum(telemetry_events.bytes) AS bytes
FROM telemetry_events
WHERE kind IN ('access', 'token.requested') AND agent != ''
GROUP BY tenant, agent, hour;

-- Rows stored before the view existed (none on a new database).
INSERT INTO agent_hourly (tenant, agent, hour, requests, denied, rows, bytes)
SELECT
    tenant,
    agent,
    toDateTime(intDiv(toUInt32(time), 3600) * 3600) AS hour,
    count() AS requests,
    countIf(outcome NOT IN ('issued', 'allowed', 'allow')) AS denied,
    sum(src.rows) AS rows,
    sum(src.bytes) AS bytes
FROM
(
    SELECT tenant, agent, time, outcome, rows, bytes
    FROM telemetry_events
    WHERE kind IN ('access', 'token.requested') AND agent != ''
    LIMIT 1 BY tenant, agent, time_ms, event_id
) AS src
GROUP BY tenant, agent, hour;
