//! Reading the database's health: one figure per optidb_core::health::Metric that describes
//! the database as a whole, from the statistics views, with details naming what is behind a
//! figure (blocked and blocking sessions, the oldest transaction, the tables overdue for
//! vacuum, registered sources). Query texts in details are cut to 300 characters and have secrets redacted.

use crate::postgres::rows;
use optidb_core::health::Metric;
use optidb_core::redact::redact_secrets;
use pgrx::pg_sys;
use serde_json::Value;

/// One figure as read now.
pub struct Reading {
    pub metric: Metric,
    pub value: Option<f64>,
    pub details: Value,
}

/// Checkpoint and buffer counters moved to pg_stat_checkpointer in PostgreSQL 17.
fn checkpoints_sql() -> &'static str {
    if pg_sys::PG_VERSION_NUM >= 170000 {
        "SELECT (c.num_timed + c.num_requested)::float8 AS checkpoints, \
                (c.buffers_written + b.buffers_clean)::float8 AS buffers \
         FROM pg_catalog.pg_stat_checkpointer c, pg_catalog.pg_stat_bgwriter b"
    } else {
        "SELECT (checkpoints_timed + checkpoints_req)::float8 AS checkpoints, \
                (buffers_checkpoint + buffers_clean + buffers_backend)::float8 AS buffers \
         FROM pg_catalog.pg_stat_bgwriter"
    }
}

/// Every figure in one statement (one snapshot of the statistics), as rows (item, value,
/// details). Sessions are client backends other than the caller's own.
fn health_sql() -> String {
    format!(
        "WITH d AS (SELECT * FROM pg_catalog.pg_stat_database \
                    WHERE datname = pg_catalog.current_database()), \
              a AS (SELECT pid, state, query_start, xact_start, state_change, \
                           usename::text AS usename, pg_catalog.left(query, 300) AS query \
                    FROM pg_catalog.pg_stat_activity \
                    WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()), \
              w AS (SELECT pid, min(coalesce(waitstart, pg_catalog.clock_timestamp())) AS since \
                    FROM pg_catalog.pg_locks WHERE NOT granted GROUP BY pid), \
              t AS (SELECT s.schemaname::text AS schema, s.relname::text AS name, s.n_dead_tup, \
                           s.n_dead_tup > pg_catalog.current_setting('autovacuum_vacuum_threshold')::float8 \
                             + pg_catalog.current_setting('autovacuum_vacuum_scale_factor')::float8 \
                               * greatest(c.reltuples, 0) AS overdue \
                    FROM pg_catalog.pg_stat_all_tables s \
                    JOIN pg_catalog.pg_class c ON c.oid = s.relid \
                    WHERE s.schemaname !~ '^pg_toast'), \
              cp AS ({checkpoints}), \
              r AS (SELECT count(*)::float8 AS n, \
                           max(extract(epoch FROM replay_lag))::float8 AS lag \
                    FROM pg_catalog.pg_stat_replication), \
              lim AS (SELECT greatest(pg_catalog.current_setting('max_connections')::int \
                                      - pg_catalog.current_setting('superuser_reserved_connections')::int, 1) AS n), \
              now AS (SELECT pg_catalog.clock_timestamp() AS at), \
              src AS (SELECT name, state, pg_catalog.left(last_error, 300) AS error, \
                             extract(epoch FROM (SELECT at FROM now) \
                               - coalesce(last_pulled_at, added_at))::float8 AS age, \
                             extract(epoch FROM (SELECT at FROM now) - last_tried_at)::float8 AS tried \
                      FROM optidb.monitor_sources) \
         SELECT v.item, v.value, v.details FROM now, LATERAL (VALUES \
           ('cache_hit_pct', (SELECT 100.0 * blks_hit / NULLIF(blks_hit + blks_read, 0) FROM d)::float8, NULL::jsonb), \
           ('commits_total', (SELECT xact_commit FROM d)::float8, NULL), \
           ('rollbacks_total', (SELECT xact_rollback FROM d)::float8, NULL), \
           ('rollback_pct', (SELECT 100.0 * xact_rollback / NULLIF(xact_commit + xact_rollback, 0) FROM d)::float8, NULL), \
           ('connections', (SELECT count(*) FROM a)::float8, \
              (SELECT pg_catalog.jsonb_build_object('available_to_ordinary_roles', n) FROM lim)), \
           ('connections_active', (SELECT count(*) FROM a WHERE state = 'active')::float8, NULL), \
           ('connections_idle', (SELECT count(*) FROM a WHERE state = 'idle')::float8, NULL), \
           ('connections_idle_in_transaction', \
              (SELECT count(*) FROM a WHERE state LIKE 'idle in transaction%')::float8, NULL), \
           ('connections_used_pct', (SELECT 100.0 * (SELECT count(*) FROM a) / n FROM lim)::float8, NULL), \
           ('lock_waits', (SELECT count(*) FROM w)::float8, NULL), \
           ('lock_wait_max_s', (SELECT extract(epoch FROM now.at - min(since)) FROM w)::float8, \
              (SELECT pg_catalog.jsonb_build_object('waits', pg_catalog.jsonb_agg( \
                   pg_catalog.jsonb_build_object( \
                     'blocked_pid', w.pid, \
                     'waiting_s', round(extract(epoch FROM now.at - w.since)::numeric, 1), \
                     'blocked_user', b.usename, 'blocked_query', b.query, \
                     'blocking_pids', pg_catalog.to_jsonb(pg_catalog.pg_blocking_pids(w.pid)), \
                     'blocking_queries', (SELECT pg_catalog.jsonb_agg(x.query) FROM a x \
                                          WHERE x.pid = ANY (pg_catalog.pg_blocking_pids(w.pid)))) \
                   ORDER BY w.since)) \
               FROM w LEFT JOIN a b ON b.pid = w.pid HAVING count(*) > 0)), \
           ('longest_query_s', (SELECT extract(epoch FROM now.at - min(query_start)) FROM a \
                                WHERE state = 'active')::float8, \
              (SELECT pg_catalog.jsonb_build_object('pid', pid, 'user', usename, 'query', query) \
               FROM a WHERE state = 'active' ORDER BY query_start LIMIT 1)), \
           ('longest_transaction_s', (SELECT extract(epoch FROM now.at - min(xact_start)) FROM a)::float8, \
              (SELECT pg_catalog.jsonb_build_object('pid', pid, 'user', usename, 'state', state, 'query', query) \
               FROM a WHERE xact_start IS NOT NULL ORDER BY xact_start LIMIT 1)), \
           ('idle_in_transaction_max_s', (SELECT extract(epoch FROM now.at - min(state_change)) FROM a \
                                          WHERE state LIKE 'idle in transaction%')::float8, NULL), \
           ('deadlocks_total', (SELECT deadlocks FROM d)::float8, NULL), \
           ('temp_files_total', (SELECT temp_files FROM d)::float8, NULL), \
           ('temp_bytes_total', (SELECT temp_bytes FROM d)::float8, NULL), \
           ('dead_tuples', (SELECT sum(n_dead_tup) FROM t)::float8, NULL), \
           ('tables_overdue_vacuum', (SELECT count(*) FROM t WHERE overdue)::float8, \
              (SELECT pg_catalog.jsonb_build_object('worst', pg_catalog.jsonb_agg(o)) FROM ( \
                 SELECT schema, name, n_dead_tup AS dead_rows FROM t WHERE overdue \
                 ORDER BY n_dead_tup DESC LIMIT 5) o HAVING count(*) > 0)), \
           ('checkpoints_total', (SELECT checkpoints FROM cp), NULL), \
           ('buffers_written_total', (SELECT buffers FROM cp), NULL), \
           ('wal_bytes_total', CASE WHEN NOT pg_catalog.pg_is_in_recovery() \
              THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::float8 END, NULL), \
           ('database_bytes', pg_catalog.pg_database_size(pg_catalog.current_database())::float8, NULL), \
           ('replicas', (SELECT n FROM r), NULL), \
           ('replication_lag_max_s', (SELECT lag FROM r), NULL), \
           ('sources_unreachable', (SELECT count(*) FILTER (WHERE state IN ('unreachable', 'refused')) FROM src)::float8, \
              (SELECT pg_catalog.jsonb_build_object('sources', pg_catalog.jsonb_agg( \
                   pg_catalog.jsonb_build_object('source', name, 'state', state, 'error', error, \
                     'pulled_s_ago', round(age::numeric, 1), 'tried_s_ago', round(tried::numeric, 1)) \
                   ORDER BY name)) FROM src HAVING count(*) > 0)), \
           ('source_pull_age_max_s', (SELECT max(age) FROM src), NULL) \
         ) AS v(item, value, details)",
        checkpoints = checkpoints_sql()
    )
}

/// Every database-wide figure, read now.
pub fn read() -> Vec<Reading> {
    let sql = health_sql();
    let mut readings = rows::select("health", &sql, &[], |row| {
        let item: String = row.get("item");
        let metric = Metric::parse(&item)
            .unwrap_or_else(|| pgrx::error!("optidb's health query returned unknown item {item}"));
        Reading {
            metric,
            value: row.opt::<f64>("value").filter(|v| v.is_finite()),
            details: row
                .opt::<pgrx::JsonB>("details")
                .map_or(Value::Object(Default::default()), |j| redacted(j.0)),
        }
    });
    readings.push(failures_dropped());
    readings
}

/// Failures the shared-memory slots dropped since the previous pass, per role: read from
/// shared memory, so a monitor sees it without reading optidb.scan_log (which keeps it per
/// pass).
fn failures_dropped() -> Reading {
    let by_role = crate::postgres::failing::dropped_so_far();
    let total: f64 = by_role
        .as_object()
        .map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum());
    Reading {
        metric: Metric::FailuresDropped,
        value: Some(total),
        details: match total > 0.0 {
            true => serde_json::json!({ "by_role": by_role }),
            false => Value::Object(Default::default()),
        },
    }
}

/// Query texts anywhere in `details` with their secrets redacted.
fn redacted(details: Value) -> Value {
    match details {
        Value::String(s) => Value::String(redact_secrets(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, redacted(v))).collect())
        }
        other => other,
    }
}
