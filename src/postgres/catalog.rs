//! Catalog facts (tables, indexes, column statistics) copied into optidb's schema_* tables so
//! rules and answers cite what the catalog said at capture time. Set-based SQL only: one
//! statement per table, however large the schema.
//!
//! Sizes come from pg_class.relpages (as of the last VACUUM or ANALYZE), not from
//! pg_relation_size(), which takes a lock on every relation: one table locked ACCESS EXCLUSIVE by
//! anyone (a reader can do that to a table of its own) would stall every scan.

use pgrx::prelude::*;

const COLLECT_TABLES: &str = "
INSERT INTO optidb.schema_table AS t
    (relid, schemaname, relname, rows_est, bytes, seq_scan, seq_tup_read, idx_scan, n_live_tup,
     n_dead_tup, n_mod_since_analyze, last_analyze, last_vacuum, captured_at)
SELECT s.relid, s.schemaname, s.relname,
       CASE WHEN c.reltuples < 0 THEN s.n_live_tup ELSE c.reltuples END,
       (c.relpages::bigint + COALESCE(toast.relpages, 0)
        + COALESCE((SELECT sum(ic.relpages) FROM pg_catalog.pg_index x
                    JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid
                    WHERE x.indrelid = c.oid), 0))
       * pg_catalog.current_setting('block_size')::bigint,
       s.seq_scan, s.seq_tup_read, s.idx_scan,
       s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       GREATEST(s.last_analyze, s.last_autoanalyze), GREATEST(s.last_vacuum, s.last_autovacuum),
       pg_catalog.now()
FROM pg_catalog.pg_stat_user_tables s
JOIN pg_catalog.pg_class c ON c.oid = s.relid
LEFT JOIN pg_catalog.pg_class toast ON toast.oid = c.reltoastrelid
WHERE s.schemaname <> 'optidb'
ON CONFLICT (relid) DO UPDATE SET
    schemaname = excluded.schemaname, relname = excluded.relname, rows_est = excluded.rows_est,
    bytes = excluded.bytes, seq_scan = excluded.seq_scan, seq_tup_read = excluded.seq_tup_read,
    idx_scan = excluded.idx_scan, n_live_tup = excluded.n_live_tup,
    n_dead_tup = excluded.n_dead_tup, n_mod_since_analyze = excluded.n_mod_since_analyze,
    last_analyze = excluded.last_analyze, last_vacuum = excluded.last_vacuum,
    captured_at = excluded.captured_at";

const FORGET_DROPPED_TABLES: &str = "
DELETE FROM optidb.schema_table t
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_user_tables s WHERE s.relid = t.relid)";

const COLLECT_INDEXES: &str = "
INSERT INTO optidb.schema_index AS x
    (indexrelid, relid, schemaname, tablename, indexname, columns, is_unique, is_primary,
     is_valid, backs_constraint, has_expressions, predicate, access_method, idx_scan, bytes,
     definition, captured_at)
SELECT i.indexrelid, i.indrelid, n.nspname, t.relname, ic.relname,
       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, true)
             FROM pg_catalog.generate_series(1, i.indnkeyatts) AS k ORDER BY k),
       i.indisunique, i.indisprimary, i.indisvalid,
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid),
       i.indexprs IS NOT NULL,
       pg_catalog.pg_get_expr(i.indpred, i.indrelid),
       am.amname, su.idx_scan, ic.relpages::bigint * pg_catalog.current_setting('block_size')::bigint,
       pg_catalog.pg_get_indexdef(i.indexrelid), pg_catalog.now()
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
LEFT JOIN pg_catalog.pg_stat_user_indexes su ON su.indexrelid = i.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'optidb')
  AND n.nspname !~ '^pg_toast' AND t.relkind IN ('r', 'm', 'p')
ON CONFLICT (indexrelid) DO UPDATE SET
    relid = excluded.relid, schemaname = excluded.schemaname, tablename = excluded.tablename,
    indexname = excluded.indexname, columns = excluded.columns, is_unique = excluded.is_unique,
    is_primary = excluded.is_primary, is_valid = excluded.is_valid,
    backs_constraint = excluded.backs_constraint, has_expressions = excluded.has_expressions,
    predicate = excluded.predicate, access_method = excluded.access_method,
    idx_scan = excluded.idx_scan, bytes = excluded.bytes, definition = excluded.definition,
    captured_at = excluded.captured_at";

const FORGET_DROPPED_INDEXES: &str = "
DELETE FROM optidb.schema_index x
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indexrelid = x.indexrelid)";

const COLLECT_COLUMNS: &str = "
WITH fresh AS (
    SELECT c.oid AS relid, s.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
           s.null_frac, s.n_distinct, s.correlation, s.most_common_freqs[1] AS most_common_freq
    FROM pg_catalog.pg_stats s
    JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = s.attname
    WHERE NOT s.inherited
      AND s.schemaname NOT IN ('pg_catalog', 'information_schema', 'optidb')
), gone AS (
    DELETE FROM optidb.schema_column o
    WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.relid = o.relid AND f.attname = o.attname)
)
INSERT INTO optidb.schema_column
    (relid, attname, type, null_frac, n_distinct, correlation, most_common_freq, captured_at)
SELECT relid, attname, type, null_frac, n_distinct, correlation, most_common_freq,
       pg_catalog.now()
FROM fresh
ON CONFLICT (relid, attname) DO UPDATE SET
    type = excluded.type, null_frac = excluded.null_frac, n_distinct = excluded.n_distinct,
    correlation = excluded.correlation, most_common_freq = excluded.most_common_freq,
    captured_at = excluded.captured_at";

/// Bring optidb.schema_table, schema_index and schema_column up to date with the catalog.
pub fn collect() {
    for sql in [
        COLLECT_TABLES,
        FORGET_DROPPED_TABLES,
        COLLECT_INDEXES,
        FORGET_DROPPED_INDEXES,
        COLLECT_COLUMNS,
    ] {
        Spi::run(sql).unwrap_or_else(|e| error!("collecting catalog facts failed: {e}"));
    }
}
