//! Catalog facts (tables, indexes, column statistics) copied into optidb's schema_* tables so
//! rules and answers cite what the catalog said at capture time. Set-based SQL only: one
//! statement per table, however large the schema.
//!
//! Sizes come from pg_class.relpages (as of the last VACUUM or ANALYZE), not from
//! pg_relation_size(), which takes a lock on every relation: one table locked ACCESS EXCLUSIVE by
//! anyone (a reader can do that to a table of its own) would stall every scan.

use pgrx::prelude::*;

/// Tables and their sizes and activity, keyed by relid.
const TABLE_COLUMNS: &str = "relid, schemaname, relname, rows_est, bytes, seq_scan, seq_tup_read, \
     idx_scan, n_live_tup, n_dead_tup, n_mod_since_analyze, last_analyze, last_vacuum, captured_at";
const TABLES: &str = "
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
WHERE s.schemaname <> 'optidb'";

const FORGET_DROPPED_TABLES: &str = "
DELETE FROM optidb.schema_table t
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_user_tables s WHERE s.relid = t.relid)";

/// Indexes of user tables, keyed by indexrelid.
const INDEX_COLUMNS: &str = "indexrelid, relid, schemaname, tablename, indexname, columns, \
     is_unique, is_primary, is_valid, backs_constraint, has_expressions, predicate, \
     access_method, idx_scan, bytes, definition, captured_at";
const INDEXES: &str = "
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
  AND n.nspname !~ '^pg_toast' AND t.relkind IN ('r', 'm', 'p')";

const FORGET_DROPPED_INDEXES: &str = "
DELETE FROM optidb.schema_index x
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indexrelid = x.indexrelid)";

/// Column statistics, keyed by (relid, attname); the ones pg_stats no longer has go first.
const COLUMN_COLUMNS: &str =
    "relid, attname, type, null_frac, n_distinct, correlation, most_common_freq, captured_at";
const FRESH_COLUMNS: &str = "
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
)";
const COLUMNS: &str = "
SELECT relid, attname, type, null_frac, n_distinct, correlation, most_common_freq,
       pg_catalog.now()
FROM fresh";

/// `with` (a WITH clause, or empty), then the rows `select` returns, in `columns` order,
/// inserted into `table`; a row whose `key` is there already overwrites every other column:
/// the copy says what the catalog says now.
fn replace_rows(with: &str, table: &str, columns: &str, key: &str, select: &str) -> String {
    let keys: Vec<&str> = key.split(',').map(str::trim).collect();
    let set: Vec<String> = columns
        .split(',')
        .map(str::trim)
        .filter(|c| !keys.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let set = set.join(", ");
    format!(
        "{with} INSERT INTO {table} ({columns}) {select} ON CONFLICT ({key}) DO UPDATE SET {set}"
    )
}

/// Bring optidb.schema_table, schema_index and schema_column up to date with the catalog.
pub fn collect() {
    let tables = replace_rows("", "optidb.schema_table", TABLE_COLUMNS, "relid", TABLES);
    let indexes = replace_rows(
        "",
        "optidb.schema_index",
        INDEX_COLUMNS,
        "indexrelid",
        INDEXES,
    );
    let key = "relid, attname";
    let columns = replace_rows(
        FRESH_COLUMNS,
        "optidb.schema_column",
        COLUMN_COLUMNS,
        key,
        COLUMNS,
    );
    for sql in [
        tables.as_str(),
        FORGET_DROPPED_TABLES,
        indexes.as_str(),
        FORGET_DROPPED_INDEXES,
        columns.as_str(),
    ] {
        Spi::run(sql).unwrap_or_else(|e| error!("collecting catalog facts failed: {e}"));
    }
}
