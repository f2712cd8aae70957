-- Run once by the clickhouse/clickhouse-server image on the first start with an empty data volume
-- (/docker-entrypoint-initdb.d). The tables are the monitor's: it applies the versioned migrations
-- (deploy/clickhouse/schema) when it starts and records them in agentid.schema_migrations.
CREATE DATABASE IF NOT EXISTS agentid;
