-- agentid telemetry schema (DESIGN §7): the long-term home of the TELEMETRY stream.
--
-- A portable subset that runs unchanged on ClickHouse 18.16 (Debian's clickhouse-server, used by the
-- tests) and on current releases (the clickhouse/clickhouse-server image of docker-compose.yaml):
--   * DateTime plus a millisecond column instead of DateTime64;
--   * String instead of LowCardinality(String), Array(String) instead of Map;
--   * no TTL: retention is `ALTER TABLE agentid.telemetry_events DROP PARTITION <yyyymm>`;
--   * ReplacingMergeTree keyed by the event id, so an insert retried after a failure (same events,
--     same ids) collapses into one row at merge time; read with FINAL (or GROUP BY event_id) where an
--     exact count matters.
--
-- The official image runs this file once, on the first start with an empty data volume
-- (/docker-entrypoint-initdb.d). On any other server run it with
--   clickhouse-client --multiquery < deploy/clickhouse/schema/001_telemetry.sql
-- Every statement is idempotent.

CREATE DATABASE IF NOT EXISTS agentid;

CREATE TABLE IF NOT EXISTS agentid.telemetry_events
(
    event_id      String,          -- CloudEvents id of the source event (UUIDv7)
    time          DateTime,        -- when it happened, UTC, whole seconds
    time_ms       UInt16,          -- milliseconds within that second (0-999)
    tenant        String,          -- tenant id
    agent         String,          -- resource name tenants/{tenant}/agents/{agent}; '' when none
    kind          String,          -- token.requested, policy.decided, ...
    outcome       String,          -- issued, denied, allow, ...
    actor         String,          -- principal who acted (client id, service id or user)
    on_behalf_of  String,          -- user of a delegated action; '' when none
    environment   String,          -- environment tag of the agent
    scopes        Array(String),   -- scopes involved
    request_id    String,          -- request id linking the event across services
    detail        String           -- free-form details as JSON
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, agent, time, event_id)
SETTINGS index_granularity = 8192;
