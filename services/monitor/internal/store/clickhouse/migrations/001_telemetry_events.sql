-- The telemetry table: one row per telemetry event (store.Event), the long-term home of the
-- TELEMETRY stream (DESIGN §7). A portable subset that runs on ClickHouse 18.16 (Debian's
-- clickhouse-server) and on current releases:
--   * time is a DateTime (whole seconds, UTC) for partitioning plus time_ms, Unix milliseconds;
--     no DateTime64;
--   * String instead of LowCardinality(String) (experimental in 18.16), Array(String) instead of Map;
--   * no TTL clause: retention drops whole monthly partitions (the monitor's retention policy);
--   * ReplacingMergeTree: copies of an event (same tenant, agent, time_ms and event_id) collapse
--     into one row when parts merge; every read of the monitor deduplicates until then.
CREATE TABLE IF NOT EXISTS telemetry_events
(
    event_id       String,
    time           DateTime,
    time_ms        Int64,
    tenant         String,
    agent          String,
    kind           String,
    outcome        String,
    actor          String,
    on_behalf_of   String,
    environment    String,
    scopes         Array(String),
    request_id     String,
    detail         String,
    stream_seq     UInt64,
    owner          String,
    agent_known    UInt8,
    client_id      String,
    resource       String,
    action         String,
    bytes          Int64,
    rows           Int64,
    source_address String,
    source_network String,
    latency_us     Int64,
    trace_id       String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, toStartOfHour(time), agent, time_ms, event_id)
SETTINGS index_granularity = 8192;
