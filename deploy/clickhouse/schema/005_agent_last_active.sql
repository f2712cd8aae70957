-- 005: an agent's last activity counts only its activity rows (store.IsActivity): a token the
-- issuer issued to it (kind token.requested, outcome issued). 003's agent_last_seen kept the latest
-- row of any kind: every policy decision (dry runs of auditors and plan jobs included), a refused
-- token request, or an access a resource server reported naming the agent moved the agent's last
-- activity, and kept an unused agent "active" for the inactivity sweeps. agent_last_active replaces
-- it: the table and its view are created, the table is filled from telemetry_events FINAL (a row
-- the view already added counts once: the aggregate is a max), then agent_last_seen and its view
-- are dropped. Runs on ClickHouse 18.16 and on current releases; takes about a minute per hundred
-- million rows. Run one monitor while it applies (docs/deploy.md).
CREATE TABLE IF NOT EXISTS agent_last_active
(
    tenant  String,
    agent   String,
    hour    DateTime('UTC'),
    last_ms AggregateFunction(max, Int64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, agent, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_last_active_mv TO agent_last_active AS
SELECT tenant, agent, toDateTime(intDiv(toUInt32(time), 3600) * 3600, 'UTC') AS hour, maxState(time_ms) AS last_ms
FROM telemetry_events
WHERE agent != '' AND kind = 'token.requested' AND outcome = 'issued'
GROUP BY tenant, agent, hour;

INSERT INTO agent_last_active (tenant, agent, hour, last_ms)
SELECT tenant, agent, toDateTime(intDiv(toUInt32(time), 3600) * 3600, 'UTC') AS hour, maxState(time_ms) AS last_ms
FROM telemetry_events FINAL
WHERE agent != '' AND kind = 'token.requested' AND outcome = 'issued'
GROUP BY tenant, agent, hour;

DROP TABLE IF EXISTS agent_last_seen_mv;

DROP TABLE IF EXISTS agent_last_seen;
