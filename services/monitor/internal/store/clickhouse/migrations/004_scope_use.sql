-- 004: a scope counts as used only where it was used (store.UsesScopes): on a token request that
-- issued a token (kind token.requested, outcome issued) or on an allowed access (kind access,
-- outcome allowed). 003's agent_usage_scope_mv counted the scopes of every row: a policy decision
-- (which carries every scope the agent asked for at admission), a refused token request
-- (invalid_scope) and a denied access made a scope look used to access reviews.
-- agent_usage_daily is rebuilt whole (its scope rows cannot be told apart by how they were
-- counted): its views are dropped first, the table is dropped and created again, the views are
-- created (the scope view with the rule), and the table is filled again from telemetry_events FINAL,
-- as 003 did. Other dimensions count as before (every row). Runs on ClickHouse 18.16 and on current
-- releases; takes about a minute per hundred million rows. Run one monitor while it applies
-- (docs/deploy.md).
DROP TABLE IF EXISTS agent_usage_resource_mv;

DROP TABLE IF EXISTS agent_usage_source_network_mv;

DROP TABLE IF EXISTS agent_usage_on_behalf_of_mv;

DROP TABLE IF EXISTS agent_usage_scope_mv;

DROP TABLE IF EXISTS agent_usage_daily;

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
    AND ((kind = 'token.requested' AND outcome = 'issued') OR (kind = 'access' AND outcome = 'allowed'))
GROUP BY tenant, agent, dimension, value, day;

INSERT INTO agent_usage_daily (tenant, agent, dimension, value, day, n, last_ms)
SELECT tenant, agent, dimension, value, toDateTime(intDiv(toUInt32(time), 86400) * 86400, 'UTC') AS day, count() AS n, maxState(time_ms) AS last_ms
FROM
(
    SELECT tenant, agent, time, time_ms,
        arrayConcat([('resource', resource), ('source_network', source_network), ('on_behalf_of', on_behalf_of)],
            arrayMap(s -> ('scope', s),
                if((kind = 'token.requested' AND outcome = 'issued') OR (kind = 'access' AND outcome = 'allowed'), scopes, emptyArrayString()))) AS pairs
    FROM telemetry_events FINAL
    WHERE agent != '' AND agent_known = 1
)
ARRAY JOIN pairs.1 AS dimension, pairs.2 AS value
WHERE value != ''
GROUP BY tenant, agent, dimension, value, day;
