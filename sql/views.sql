-- optidb (since 0.2.0): materialized metric views, refreshed by optidb.refresh() (CONCURRENTLY once
-- populated, so readers are never blocked). Each has a unique index, which CONCURRENTLY needs.
-- Materialized views cannot have row-level security, so they are revoked from everyone and
-- served through the security-barrier views at the end, which apply optidb.can_see() (see
-- sql/security.sql). Every name is schema-qualified: REFRESH runs with search_path pinned to
-- pg_catalog, pg_temp.
--
-- Sources: latency figures come from optidb's own histograms (optidb.latency, merged by
-- optidb.latency_rollup); rows and buffer hits from pg_stat_statements deltas (optidb.metric).
-- When optidb is not preloaded there is no latency history, and count, mean and total fall back
-- to pg_stat_statements. Periods are UTC hours and days.

-- Resolve every name of the views below in pg_catalog first (what pgspot checks for); the
-- end of this file restores the extension's own search_path for the generated definitions.
-- LOCAL: a plain SET in an extension script would outlive CREATE EXTENSION in the session.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- Per statement, over all retained history.
CREATE MATERIALIZED VIEW optidb.mv_query_metrics AS
WITH met AS (
    SELECT query_id, sum(calls) AS calls, sum(total_ms) AS total_ms, sum(rows) AS rows,
           sum(shared_blks_hit) AS hit, sum(shared_blks_read) AS read
    FROM optidb.metric GROUP BY query_id
)
SELECT q.id AS query_id, q.userid, q.dbid, q.kind, q.norm_sql AS query,
       COALESCE(l.calls + l.errors, m.calls) AS execution_count,
       COALESCE(l.mean_ms, m.total_ms / NULLIF(m.calls, 0)) AS mean_ms,
       l.median_ms AS p50_ms, l.p95_ms, l.p99_ms, l.min_ms, l.max_ms,
       COALESCE(l.total_ms, m.total_ms) AS total_ms,
       l.calls::float8 / NULLIF(l.calls + l.errors, 0) AS success_rate,
       l.errors::float8 / NULLIF(l.calls + l.errors, 0) AS failure_rate,
       m.rows,
       m.hit::float8 / NULLIF(m.hit + m.read, 0) AS shared_hit_ratio,
       pg_catalog.now() AS last_updated
FROM optidb.query q
LEFT JOIN optidb.latency_rollup(NULL) l ON l.query_id = q.id
LEFT JOIN met m ON m.query_id = q.id
WHERE l.query_id IS NOT NULL OR m.query_id IS NOT NULL;
CREATE UNIQUE INDEX mv_query_metrics_key ON optidb.mv_query_metrics (query_id);

-- Per statement per UTC hour and per UTC day (trends): one definition, two grains.
CREATE FUNCTION optidb.query_metrics_by(grain text)
RETURNS TABLE (query_id bigint, userid oid, period timestamptz, execution_count numeric,
               mean_ms float8, p50_ms float8, p95_ms float8, p99_ms float8, min_ms float8,
               max_ms float8, total_ms float8, failure_rate float8, rows numeric,
               last_updated timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH met AS (
    SELECT query_id, pg_catalog.date_trunc(grain, captured_at, 'UTC') AS period,
           sum(calls) AS calls, sum(total_ms) AS total_ms, sum(rows) AS rows
    FROM optidb.metric GROUP BY 1, 2
)
SELECT q.id, q.userid, COALESCE(l.period, m.period),
       COALESCE(l.calls + l.errors, m.calls),
       COALESCE(l.mean_ms, m.total_ms / NULLIF(m.calls, 0)),
       l.median_ms, l.p95_ms, l.p99_ms, l.min_ms, l.max_ms,
       COALESCE(l.total_ms, m.total_ms),
       l.errors::float8 / NULLIF(l.calls + l.errors, 0),
       m.rows,
       pg_catalog.now()
FROM optidb.latency_rollup(grain) l
FULL JOIN met m ON m.query_id = l.query_id AND m.period = l.period
JOIN optidb.query q ON q.id = COALESCE(l.query_id, m.query_id)
$$;

CREATE MATERIALIZED VIEW optidb.mv_query_metrics_hourly AS
    SELECT * FROM optidb.query_metrics_by('hour');
CREATE UNIQUE INDEX mv_query_metrics_hourly_key ON optidb.mv_query_metrics_hourly (query_id, period);

CREATE MATERIALIZED VIEW optidb.mv_query_metrics_daily AS
    SELECT * FROM optidb.query_metrics_by('day');
CREATE UNIQUE INDEX mv_query_metrics_daily_key ON optidb.mv_query_metrics_daily (query_id, period);

-- Per table: size, sequential vs index scans, dead tuples, maintenance (latest catalog facts).
CREATE MATERIALIZED VIEW optidb.mv_table_metrics AS
SELECT relid, schemaname, relname, bytes, rows_est, n_live_tup, n_dead_tup,
       n_dead_tup::float8 / NULLIF(n_live_tup + n_dead_tup, 0) AS dead_ratio,
       seq_scan, idx_scan,
       seq_scan::float8 / NULLIF(seq_scan + COALESCE(idx_scan, 0), 0) AS seq_scan_ratio,
       n_mod_since_analyze, last_analyze, last_vacuum, captured_at,
       pg_catalog.now() AS last_updated
FROM optidb.schema_table;
CREATE UNIQUE INDEX mv_table_metrics_key ON optidb.mv_table_metrics (relid);

-- What readers query. security_barrier keeps a caller's own functions in WHERE clauses from
-- seeing rows before can_see() filtered them.
CREATE VIEW optidb.query_metrics WITH (security_barrier) AS
    SELECT * FROM optidb.mv_query_metrics WHERE optidb.can_see(userid);
CREATE VIEW optidb.query_metrics_hourly WITH (security_barrier) AS
    SELECT * FROM optidb.mv_query_metrics_hourly WHERE optidb.can_see(userid);
CREATE VIEW optidb.query_metrics_daily WITH (security_barrier) AS
    SELECT * FROM optidb.mv_query_metrics_daily WHERE optidb.can_see(userid);
CREATE VIEW optidb.table_metrics WITH (security_barrier) AS
    SELECT * FROM optidb.mv_table_metrics;

-- Per query family (0.5.0): the statements the caller may see, summed per family, with their
-- anomaly tags.
CREATE VIEW optidb.family_metrics WITH (security_barrier) AS
SELECT f.id AS family_id, f.label, f.verb, f.tables,
       count(*) AS statements,
       sum(m.execution_count) AS execution_count,
       sum(m.total_ms) AS total_ms,
       sum(m.total_ms) / NULLIF(sum(m.execution_count), 0) AS mean_ms,
       max(m.p95_ms) AS max_p95_ms,
       (SELECT pg_catalog.array_agg(DISTINCT a.kind ORDER BY a.kind)
        FROM optidb.anomaly a JOIN optidb.query aq ON aq.id = a.query_id
        WHERE aq.family_id = f.id AND optidb.can_see(aq.userid)) AS anomalies,
       max(m.last_updated) AS last_updated
FROM optidb.query_metrics m
JOIN optidb.query q ON q.id = m.query_id
JOIN optidb.family f ON f.id = q.family_id
GROUP BY f.id, f.label, f.verb, f.tables;

-- For monitoring systems (0.7.0; postgres_exporter's query file, docs/monitoring.md), read by
-- optidb_monitor: every statement's aggregate figures with a one-line 60-character snippet of
-- its normalized text (no parameter values, plans or samples), and open alerts per severity.
-- Owned by the extension's owner, they read what that role reads; optidb_monitor may read
-- these two views and nothing else of optidb's tables.
-- The snippet: comments removed (they are kept verbatim), whitespace collapsed; of a statement
-- that is not a query or DML, only its leading keywords, since normalization keeps the
-- literals of utility statements (COMMENT ... IS '...', COPY ... TO PROGRAM '...').
CREATE VIEW optidb.monitor_statements WITH (security_barrier) AS
SELECT query_id,
       CASE WHEN kind = ANY (ARRAY['select', 'insert', 'update', 'delete', 'merge'])
            THEN pg_catalog.left(bare, 60)
            ELSE pg_catalog.upper(pg_catalog.substring(bare, '^[A-Za-z]+(?: [A-Za-z]+)?'))
       END AS query,
       execution_count, total_ms, mean_ms, p95_ms, failure_rate, source
FROM optidb.mv_query_metrics m
-- Where it ran ('local' or a registered source, issue 26): a bounded label.
JOIN LATERAL (SELECT q.source FROM optidb.query q WHERE q.id = m.query_id) s ON true,
     LATERAL (SELECT pg_catalog.btrim(pg_catalog.regexp_replace(pg_catalog.regexp_replace(
                  COALESCE(m.query, ''), '/\*.*?\*/|--[^\n]*', ' ', 'g'), '\s+', ' ', 'g'))
              AS bare) b;
-- Registered sources as optidb_monitor reads them (health()): a failed pull's error names the
-- standby's host, port and user, which only optidb_admin reads; a monitor gets the state and
-- a fixed reason (a refusal's text is optidb's own and names no connection detail).
CREATE VIEW optidb.monitor_sources WITH (security_barrier) AS
SELECT name, state, added_at, last_pulled_at, last_tried_at,
       CASE WHEN last_error IS NULL OR pg_catalog.pg_has_role('optidb_admin', 'USAGE')
                 OR state = 'refused'
            THEN last_error
            ELSE 'could not be pulled (optidb_admin reads the error in optidb.source.last_error)'
       END AS last_error
FROM optidb.source;
CREATE VIEW optidb.monitor_alerts WITH (security_barrier) AS
SELECT s.severity, count(a.id) AS open
FROM pg_catalog.unnest(ARRAY['info', 'warning', 'critical']) AS s(severity)
LEFT JOIN optidb.alert a ON a.severity = s.severity AND a.resolved_at IS NULL
GROUP BY s.severity;

COMMENT ON MATERIALIZED VIEW optidb.mv_query_metrics IS
    'Per statement over retained history; read it through optidb.query_metrics';
COMMENT ON MATERIALIZED VIEW optidb.mv_query_metrics_hourly IS
    'Per statement per UTC hour; read it through optidb.query_metrics_hourly';
COMMENT ON MATERIALIZED VIEW optidb.mv_query_metrics_daily IS
    'Per statement per UTC day; read it through optidb.query_metrics_daily';
COMMENT ON MATERIALIZED VIEW optidb.mv_table_metrics IS
    'Per table; read it through optidb.table_metrics';

SET LOCAL search_path TO optidb, pg_temp;
