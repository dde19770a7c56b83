SET LOCAL pg_stat_statements.track = none;
-- optidb 0.6.0 -> 0.7.0, hand-written. tests/e2e/test_upgrade.py checks that an install
-- upgraded with it has exactly the schema of a fresh 0.7.0 install and keeps its data.
--
-- 0.7.0: advice on real workloads (issue 23): index advice is chosen for the whole workload by
-- hypothetical-index costs, net of the write cost each index adds; bottlenecks() gains the
-- family and anomaly columns (issue 25).

-- The first line: none of this script reaches pg_stat_statements, whatever its track setting
-- (why and how: the top of sql/bootstrap.sql); set back at the end.

-- Resolve every name below in pg_catalog first (what pgspot checks for).
SET LOCAL search_path TO pg_catalog, pg_temp;

-- Index advice is chosen for the whole workload (issue 23): each advised index keeps its
-- saving, write cost, rank and size; each scan keeps what the advised set does.
ALTER TABLE optidb.recommendation ADD COLUMN saving_ms_per_hour double precision,
    ADD COLUMN write_ms_per_hour double precision, ADD COLUMN rank integer,
    ADD COLUMN index_bytes bigint;
ALTER TABLE optidb.scan_log ADD COLUMN advice jsonb;
-- Failure slots shared fairly between roles: what each role had dropped since the previous pass.
ALTER TABLE optidb.scan_log ADD COLUMN failures_dropped jsonb NOT NULL DEFAULT '{}';
DROP FUNCTION optidb.recommend(bigint);
-- It also takes a source (issue 26): the advice serving statements of that source.
CREATE FUNCTION optidb.recommend("query_id" bigint DEFAULT NULL, "source" text DEFAULT NULL)
RETURNS TABLE (
    "rec_id" bigint, "kind" text, "table_name" text, "columns" text[], "ddl" text,
    "rationale" text, "confidence" double precision, "risk" text, "query_ids" bigint[],
    "est_saved_ms" double precision, "improvement_pct" double precision,
    "node_changes" text[], "note" text, "evidence" jsonb,
    "saving_ms_per_hour" double precision, "write_ms_per_hour" double precision,
    "net_ms_per_hour" double precision, "rank" integer, "index_mb" double precision)
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'recommend_wrapper';
CREATE FUNCTION optidb.advice_summary() RETURNS TABLE (
    "scanned_at" timestamp with time zone, "statements_searched" integer,
    "candidates" integer, "indexes" integer, "index_mb" double precision,
    "budget_mb" double precision, "workload_cost_before" double precision,
    "workload_cost_after" double precision, "saving_ms_per_hour" double precision,
    "write_ms_per_hour" double precision, "net_negative" integer,
    "search_ms" double precision)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'advice_summary_wrapper';

-- Schema-per-tenant and role-per-tenant workloads (issue 27): the same index advice in many
-- tenant schemas, once per tenant family (src/api/tenant_advice.rs).
CREATE FUNCTION optidb.tenant_advice() RETURNS TABLE (
    "family" text, "kind" text, "table_name" text, "columns" text[], "lacking" integer,
    "already_indexed" integer, "schemas" text[], "indexed_schemas" text[],
    "untrusted_schemas" text[], "script" text,
    "rec_ids" bigint[], "query_ids" bigint[], "confidence" double precision,
    "improvement_pct" double precision, "saving_ms_per_hour" double precision,
    "evidence" jsonb)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'tenant_advice_wrapper';

-- Statements that never complete are first-class (issue 23): the latency history keeps, of
-- each interval's failures, the time until failure, the statement_timeout cancels and the
-- latest SQLSTATE.
ALTER TABLE optidb.latency
    ADD COLUMN failed_ms double precision NOT NULL DEFAULT 0 CHECK (failed_ms >= 0),
    ADD COLUMN timeouts bigint NOT NULL DEFAULT 0 CHECK (timeouts >= 0),
    ADD COLUMN sqlstate text;

-- Trigram (GIN) index advice has a kind of its own; it was filed as 'rewrite'. Old rows keep
-- their kind and go stale at the next scan (rec_key starts with the kind).
ALTER TABLE optidb.recommendation DROP CONSTRAINT recommendation_kind_check;
ALTER TABLE optidb.recommendation ADD CONSTRAINT recommendation_kind_check
    CHECK (kind IN ('missing_index', 'composite_index', 'expression_index', 'redundant_index',
                    'unused_index', 'stats', 'rewrite', 'trigram_index'));

-- bottlenecks() shows each statement's family and anomaly kinds as columns (issue 25), not only
-- inside evidence: a changed RETURNS TABLE needs DROP and CREATE (grants and the comment come
-- back from apply_surface below). Nothing in the schema depends on the function.
DROP FUNCTION optidb.bottlenecks(integer);
-- It also takes a source and shows where each statement ran (issue 26; below).
CREATE FUNCTION optidb.bottlenecks("lim" integer DEFAULT 20, "source" text DEFAULT NULL)
RETURNS TABLE (
    "query_id" bigint, "fingerprint" text, "query" text, "calls" bigint,
    "mean_ms" double precision, "p95_ms" double precision, "p99_ms" double precision,
    "total_ms" double precision, "share_pct" double precision, "reason" text,
    "evidence" jsonb, "ddl" text, "confidence" double precision, "family_id" bigint,
    "family_label" text, "anomalies" text[], "source" text)
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'bottlenecks_wrapper';

-- A role for monitoring systems (postgres_exporter, docs/monitoring.md): health figures, open
-- alerts and every statement's aggregate figures, nothing else.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'optidb_monitor') THEN
        CREATE ROLE optidb_monitor NOLOGIN;
    END IF;
END
$roles$;
GRANT optidb_monitor TO optidb_admin;

-- For monitoring systems (0.7.0; postgres_exporter's query file, docs/monitoring.md), read by
-- optidb_monitor: every statement's aggregate figures with a one-line 60-character snippet of
-- its normalized text (no parameter values, plans or samples), and open alerts per severity.
-- Owned by the extension's owner, they read what that role reads; optidb_monitor may read
-- these two views and nothing else of optidb's tables.
-- The snippet: comments removed (they are kept verbatim), whitespace collapsed; of a statement
-- that is not a query or DML, only its leading keywords, since normalization keeps the
-- literals of utility statements (COMMENT ... IS '...', COPY ... TO PROGRAM '...').
-- optidb.monitor_statements: below, once optidb.query has its source column.
CREATE VIEW optidb.monitor_alerts WITH (security_barrier) AS
SELECT s.severity, count(a.id) AS open
FROM pg_catalog.unnest(ARRAY['info', 'warning', 'critical']) AS s(severity)
LEFT JOIN optidb.alert a ON a.severity = s.severity AND a.resolved_at IS NULL
GROUP BY s.severity;

-- Read replicas as sources (0.7.0, issue 26; src/postgres/sources.rs): each standby an admin
-- registers with optidb.add_source() is reached through a foreign server of its own (dblink;
-- the credentials stay in its user mapping, never here). Each scan and snapshot pulls what
-- optidb and pg_stat_statements recorded there and keeps it as history of that source; a pull
-- that fails is recorded here (state, last_error), never a failed scan.
CREATE TABLE optidb.source (
    name           text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$' AND name <> 'local'),
    server         name        NOT NULL,
    added_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    added_by       name        NOT NULL DEFAULT SESSION_USER,
    state          text        NOT NULL DEFAULT 'new'
                               CHECK (state IN ('new', 'ok', 'unreachable', 'refused')),
    last_error     text,
    last_pulled_at timestamptz,
    last_tried_at  timestamptz
);
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
-- Statements are keyed by source too: the same statement on the primary ('local') and on a
-- replica are two rows, shown apart and together (bottlenecks(source => ...)).
ALTER TABLE optidb.query ADD COLUMN source text NOT NULL DEFAULT 'local';
ALTER TABLE optidb.query DROP CONSTRAINT query_fingerprint_userid_dbid_key,
    ADD CONSTRAINT query_fingerprint_userid_dbid_source_key
        UNIQUE (fingerprint, userid, dbid, source);
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
-- The last cumulative counters pulled from each source, the baselines of its next pull (as
-- pgss_state and latency_state are the primary's own). Keyed by the standby's role OIDs,
-- which are the primary's (physical replication); statements map roles by name.
CREATE TABLE optidb.source_pgss_state (
    source           text             NOT NULL REFERENCES optidb.source (name) ON DELETE CASCADE,
    queryid          bigint           NOT NULL,
    userid           oid              NOT NULL,
    toplevel         boolean          NOT NULL,
    query_id         bigint           REFERENCES optidb.query (id) ON DELETE CASCADE,
    calls            bigint           NOT NULL,
    total_exec_time  double precision NOT NULL,
    rows             bigint           NOT NULL,
    shared_blks_hit  bigint           NOT NULL,
    shared_blks_read bigint           NOT NULL,
    temp_blks_read   bigint           NOT NULL,
    temp_blks_written bigint          NOT NULL,
    PRIMARY KEY (source, queryid, userid, toplevel)
);
CREATE TABLE optidb.source_latency_state (
    source    text     NOT NULL REFERENCES optidb.source (name) ON DELETE CASCADE,
    queryid   bigint   NOT NULL,
    userid    oid      NOT NULL,
    calls     bigint   NOT NULL,
    errors    bigint   NOT NULL,
    error_classes jsonb NOT NULL,
    sum_ns    bigint   NOT NULL,
    buckets   integer[] NOT NULL,
    counts    bigint[] NOT NULL,
    PRIMARY KEY (source, queryid, userid)
);
-- Registering sources, and what a primary reads from a standby's shared memory; statistics
-- of one source.
CREATE FUNCTION optidb.add_source("name" text, "server" text) RETURNS TABLE (
    "source" text, "foreign_server" text, "state" text)
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'add_source_wrapper';
CREATE FUNCTION optidb.drop_source("name" text) RETURNS bool
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'drop_source_wrapper';
CREATE FUNCTION optidb.latency_entries() RETURNS TABLE (
    "queryid" bigint, "userid" bigint, "calls" bigint, "errors" bigint,
    "error_classes" jsonb, "sum_ns" bigint, "min_ns" bigint, "max_ns" bigint,
    "interval_min_ns" bigint, "interval_max_ns" bigint, "buckets" integer[],
    "counts" bigint[])
STRICT VOLATILE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'latency_entries_wrapper';
-- What a standby's hooks sampled and the statements that failed there, drained by a
-- primary's pull (src/api/source_samples.rs); on a primary they return nothing.
CREATE FUNCTION optidb.sample_entries() RETURNS TABLE (
    "queryid" bigint, "userid" bigint, "started_us" bigint, "elapsed_ns" bigint,
    "slowest" boolean, "typical" boolean, "search_path" text, "search_path_oids" bigint[],
    "sql_text" text, "param_types" bigint[], "param_values" text[], "param_unknown" boolean[],
    "relation_oids" bigint[])
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'sample_entries_wrapper';
CREATE FUNCTION optidb.failure_entries() RETURNS TABLE (
    "queryid" bigint, "userid" bigint, "failures" bigint, "timeouts" bigint,
    "sum_us" bigint, "max_us" bigint, "sqlstate" text, "started_us" bigint,
    "sql_text" text, "replayable" boolean, "search_path_oids" bigint[])
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'failure_entries_wrapper';
DROP FUNCTION optidb.execution_time_stats(bigint, timestamp with time zone,
                                          timestamp with time zone);
CREATE FUNCTION optidb.execution_time_stats("query_id" bigint DEFAULT NULL,
    "start_at" timestamp with time zone DEFAULT NULL,
    "end_at" timestamp with time zone DEFAULT NULL, "source" text DEFAULT NULL)
RETURNS TABLE (
    "query_id" bigint, "count" bigint, "mean_ms" double precision,
    "median_ms" double precision, "min_ms" double precision, "max_ms" double precision,
    "p95_ms" double precision, "p99_ms" double precision, "error_count" bigint,
    "error_rate" double precision)
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'execution_time_stats_wrapper';

-- metrics() and report() keep one source's statements (issue 26), and metrics() labels each
-- statement with its source; a NULL days or top still gives NULL, as when they were STRICT.
DROP FUNCTION optidb.metrics(integer);
CREATE FUNCTION optidb.metrics("top" integer DEFAULT 10, "source" text DEFAULT NULL)
RETURNS text
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'metrics_wrapper';
DROP FUNCTION optidb.report(integer, integer);
CREATE FUNCTION optidb.report("days" integer DEFAULT 7, "top" integer DEFAULT 10,
    "source" text DEFAULT NULL)
RETURNS text
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'report_wrapper';

-- An unreachable or stale source is a health item (health(): sources_unreachable,
-- source_pull_age_max_s) that alert rules watch; one default rule, as a fresh install has.
ALTER TABLE optidb.alert_rule DROP CONSTRAINT alert_rule_metric_check;
ALTER TABLE optidb.alert_rule ADD CONSTRAINT alert_rule_metric_check CHECK (metric IN (
    'cache_hit_pct', 'commits_total', 'rollbacks_total', 'rollback_pct',
    'connections', 'connections_active', 'connections_idle',
    'connections_idle_in_transaction', 'connections_used_pct', 'lock_waits',
    'lock_wait_max_s', 'longest_query_s', 'longest_transaction_s',
    'idle_in_transaction_max_s', 'deadlocks_total', 'temp_files_total',
    'temp_bytes_total', 'dead_tuples', 'tables_overdue_vacuum',
    'checkpoints_total', 'buffers_written_total', 'wal_bytes_total',
    'database_bytes', 'replicas', 'replication_lag_max_s',
    'sources_unreachable', 'source_pull_age_max_s', 'failures_dropped',
    'high_confidence_recommendation', 'statement_p95_ratio'));
INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, hold, clear_for, severity, builtin, description) VALUES
    ('source_unreachable', 'sources_unreachable', '>', 0, '0 s', '1 min', 'warning', true,
     'A registered read replica could not be pulled: unreachable or refused (optidb.source.last_error says why)')
ON CONFLICT (name) DO NOTHING;

-- History for every statement (issue 27): the rows with failures have an index of their own,
-- so bottlenecks() and report() sum them without reading every statement's history.
CREATE INDEX latency_errors ON optidb.latency (query_id, captured_at) WHERE errors > 0;
-- The metric views' refresh over a large history may be planned in parallel, and
-- latency_rollup() reads through SPI, which cannot start in parallel mode: no parallel plan
-- may call it.
ALTER FUNCTION optidb.latency_rollup(text) PARALLEL UNSAFE;

-- History rollup (issue 27, part 3): per statement and UTC day, the merge of its optidb.latency
-- rows of that day; execution_time_stats() over days reads a row per day instead of every
-- snapshot's. Empty here: the next passes build it (src/postgres/latency/rollup.rs).
CREATE TABLE optidb.latency_day (
    query_id      bigint      NOT NULL REFERENCES optidb.query (id) ON DELETE CASCADE,
    day           timestamptz NOT NULL,
    calls         bigint      NOT NULL CHECK (calls >= 0),
    errors        bigint      NOT NULL CHECK (errors >= 0),
    error_classes jsonb       NOT NULL DEFAULT '{}',
    sum_us        double precision NOT NULL CHECK (sum_us >= 0),
    min_us        double precision,
    max_us        double precision,
    buckets       integer[]   NOT NULL,
    counts        bigint[]    NOT NULL,
    failed_ms     double precision NOT NULL DEFAULT 0 CHECK (failed_ms >= 0),
    timeouts      bigint      NOT NULL DEFAULT 0 CHECK (timeouts >= 0),
    sqlstate      text,
    PRIMARY KEY (query_id, day),
    CHECK (pg_catalog.cardinality(buckets) OPERATOR(pg_catalog.=) pg_catalog.cardinality(counts))
);
CREATE INDEX latency_day_day ON optidb.latency_day (day);
-- The compaction's own lock (src/postgres/locks.rs): made here, so the first pass that takes it
-- does not hold an uncommitted row another pass would wait for.
INSERT INTO optidb.job_lock (name) VALUES ('compaction') ON CONFLICT (name) DO NOTHING;
-- The tables each statement's plan used, by schema and name (0.7.0, issue 27 part 2): recorded
-- once per pg_stat_statements entry by optidb's hooks and stored by each snapshot and scan
-- (src/postgres/latency/relations.rs), so a tenant family lists every schema where its
-- statements ran, not only those a kept sample names. Names, not OIDs: the same after pg_dump
-- and restore. User data: visible, like the statement, only to those who may see it.
CREATE TABLE optidb.statement_relation (
    query_id    bigint NOT NULL REFERENCES optidb.query (id) ON DELETE CASCADE,
    schema_name text   NOT NULL,
    table_name  text   NOT NULL,
    PRIMARY KEY (query_id, schema_name, table_name)
);

-- missing_ok: a newer library may list objects a later upgrade script creates.
SELECT optidb.apply_surface(true);

SET LOCAL search_path TO optidb, pg_temp;

-- Statements after the script are tracked again as the session's settings say (see the top).
SET LOCAL pg_stat_statements.track TO DEFAULT;

