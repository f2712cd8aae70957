-- 003: the aggregates the monitor's analytics read instead of the raw rows, so that a 28-day
-- baseline costs what the agents and their hours cost, not what the rows cost. Every aggregate keys
-- time as DateTime('UTC'): its days, hours and monthly partitions (which the retention policy drops)
-- do not depend on the server's timezone. Runs on ClickHouse 18.16 and on current releases.
--   * agent_hourly is rebuilt without the rows of unknown (ghost) agents (agent_known = 0): a
--     ghost gets no baseline; its activity is the unknown_agent detector's;
--   * agent_usage_daily: per agent, dimension (resource, scope, source_network, on_behalf_of),
--     value and UTC day, the rows (count, summed) and the latest time_ms (max state), known agents
--     only; four materialized views feed it, scopes one row per scope (arrayJoin);
--   * agent_last_seen: per agent and UTC hour, the latest time_ms of any row (ghosts included);
--   * telemetry_tenants: the tenants with rows, per UTC day.
-- The backfills read telemetry_events FINAL (copies not yet merged count once, memory bounded by
-- the merge, not by the table) and take time in proportion to the table: about a minute per
-- hundred million rows. Run one monitor while it applies (docs/deploy.md).
DROP TABLE IF EXISTS agent_hourly_mv;

DROP TABLE IF EXISTS agent_hourly;

CREATE TABLE IF NOT EXISTS agent_hourly
(
    tenant   String,
    agent    String,
    hour     DateTime('UTC'),
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
    toDateTime(intDiv(toUInt32(time), 3600) * 3600, 'UTC') AS hour,
    count() AS requests,
    countIf(outcome NOT IN ('issued', 'allowed', 'allow')) AS denied,
    sum(telemetry_events.rows) AS rows,
    sum(telemetry_events.bytes) AS bytes
FROM telemetry_events
WHERE kind IN ('access', 'token.requested') AND agent != '' AND agent_known = 1
GROUP BY tenant, agent, hour;

INSERT INTO agent_hourly (tenant, agent, hour, requests, denied, rows, bytes)
SELECT
    tenant,
    agent,
    toDateTime(intDiv(toUInt32(time), 3600) * 3600, 'UTC') AS hour,
    count() AS requests,
    countIf(outcome NOT IN ('issued', 'allowed', 'allow')) AS denied,
    sum(src.rows) AS rows,
    sum(src.bytes) AS bytes
FROM
(
    SELECT tenant, agent, time, outcome, rows, bytes
    FROM telemetry_events FINAL
    WHERE kind IN ('access', 'token.requested') AND agent != '' AND agent_known = 1
) AS src
GROUP BY tenant, agent, hour;

CREATE TABLE IF NOT EXISTS agent_usage_daily
(
    tenant    String,
    agent     String,
    dimension String,
    value     String,
    day       DateTime('UTC'),
    n         UInt64,
    last_ms   AggregateFunction(max, Int64)
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, agent, dimension, value, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_usage_resource_mv TO agent_usage_daily AS
SELECT tenant, agent, 'resource' AS dimension, resource AS value,
    toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day, count() AS n, maxState(time_ms) AS last_ms
FROM telemetry_events
WHERE agent != '' AND agent_known = 1 AND resource != ''
GROUP BY tenant, agent, dimension, value, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_usage_source_network_mv TO agent_usage_daily AS
SELECT tenant, agent, 'source_network' AS dimension, source_network AS value,
    toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day, count() AS n, maxState(time_ms) AS last_ms
FROM telemetry_events
WHERE agent != '' AND agent_known = 1 AND source_network != ''
GROUP BY tenant, agent, dimension, value, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_usage_on_behalf_of_mv TO agent_usage_daily AS
SELECT tenant, agent, 'on_behalf_of' AS dimension, on_behalf_of AS value,
    toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day, count() AS n, maxState(time_ms) AS last_ms
FROM telemetry_events
WHERE agent != '' AND agent_known = 1 AND on_behalf_of != ''
GROUP BY tenant, agent, dimension, value, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_usage_scope_mv TO agent_usage_daily AS
SELECT tenant, agent, 'scope' AS dimension, value,
    toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day, count() AS n, maxState(time_ms) AS last_ms
FROM telemetry_events
ARRAY JOIN scopes AS value
WHERE agent != '' AND agent_known = 1 AND value != ''
GROUP BY tenant, agent, dimension, value, day;

INSERT INTO agent_usage_daily (tenant, agent, dimension, value, day, n, last_ms)
SELECT tenant, agent, dimension, value, toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day, count() AS n, maxState(time_ms) AS last_ms
FROM
(
    SELECT tenant, agent, time, time_ms,
        arrayConcat([('resource', resource), ('source_network', source_network), ('on_behalf_of', on_behalf_of)],
            arrayMap(s -> ('scope', s), scopes)) AS pairs
    FROM telemetry_events FINAL
    WHERE agent != '' AND agent_known = 1
)
ARRAY JOIN pairs.1 AS dimension, pairs.2 AS value
WHERE value != ''
GROUP BY tenant, agent, dimension, value, day;

CREATE TABLE IF NOT EXISTS agent_last_seen
(
    tenant  String,
    agent   String,
    hour    DateTime('UTC'),
    last_ms AggregateFunction(max, Int64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, agent, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_last_seen_mv TO agent_last_seen AS
SELECT tenant, agent, toDateTime(intDiv(toUInt32(time), 3600) * 3600, 'UTC') AS hour, maxState(time_ms) AS last_ms
FROM telemetry_events
WHERE agent != ''
GROUP BY tenant, agent, hour;

INSERT INTO agent_last_seen (tenant, agent, hour, last_ms)
SELECT tenant, agent, toDateTime(intDiv(toUInt32(time), 3600) * 3600, 'UTC') AS hour, maxState(time_ms) AS last_ms
FROM telemetry_events
WHERE agent != ''
GROUP BY tenant, agent, hour;

CREATE TABLE IF NOT EXISTS telemetry_tenants
(
    tenant String,
    day    DateTime('UTC')
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_tenants_mv TO telemetry_tenants AS
SELECT DISTINCT tenant, toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day
FROM telemetry_events;

INSERT INTO telemetry_tenants (tenant, day)
SELECT DISTINCT tenant, toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day
FROM telemetry_events;
