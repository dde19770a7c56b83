//! Reading pg_stat_statements: checking it is usable (with a message that says exactly what to
//! change when it is not), fetching the current database's entries with what optidb knows of
//! each (optidb.pgss_state: its statement, or its fingerprint until that statement is filed,
//! and the counters optidb last recorded), and keeping that knowledge current.

use crate::postgres::errors::raise;
use crate::postgres::rows::{self, Row};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use std::collections::HashMap;

/// Where pg_stat_statements lives (its schema, already quoted for use in SQL text).
pub struct PgssView {
    schema: String,
}

impl PgssView {
    pub fn statements(&self) -> String {
        format!("{}.pg_stat_statements", self.schema)
    }

    pub fn info(&self) -> String {
        format!("{}.pg_stat_statements_info", self.schema)
    }
}

const SETUP_HINT: &str = "Add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf \
     (keep any libraries already listed), restart PostgreSQL, then run \
     CREATE EXTENSION pg_stat_statements; in this database.";

/// Fail with SQLSTATE 55000 unless pg_stat_statements is both preloaded and installed here.
pub fn locate() -> PgssView {
    // Read in C, not with current_setting(): that needs pg_read_all_settings, which
    // optidb_admin does not have (and does not need just to learn this).
    // SAFETY: a guarded call with a NUL-terminated name; missing_ok makes an unknown name come
    // back as NULL (checked). A non-null result points to the setting's NUL-terminated value,
    // which cannot change while this runs, and is copied at once.
    let preload = unsafe {
        let value = pg_sys::GetConfigOption(c"shared_preload_libraries".as_ptr(), true, false);
        if value.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(value)
                .to_string_lossy()
                .into_owned()
        }
    };
    let preloaded = preload
        .split(',')
        .map(|lib| lib.trim().trim_matches('"'))
        .any(|lib| lib == "pg_stat_statements" || lib.ends_with("/pg_stat_statements"));
    if !preloaded {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_stat_statements is not loaded: it must be listed in shared_preload_libraries",
            Some(SETUP_HINT),
        );
    }
    let schema = rows::value::<String>(
        "pg_stat_statements schema",
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'pg_stat_statements'",
        &[],
    )
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "the pg_stat_statements extension is not installed in this database",
            Some("Run CREATE EXTENSION pg_stat_statements; in this database, then retry."),
        )
    });
    PgssView {
        schema: quote_identifier(schema),
    }
}

/// Cumulative counters of one pg_stat_statements entry (or of its stored baseline).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub calls: i64,
    pub total_ms: f64,
    pub rows: i64,
    pub shared_blks_hit: i64,
    pub shared_blks_read: i64,
    pub temp_blks_read: i64,
    pub temp_blks_written: i64,
}

impl Counters {
    /// What happened since `baseline`. Counters only grow between resets, so if any went down
    /// the entry was reset or evicted and re-created: the whole current value is new work.
    /// This is what keeps deltas from ever being negative.
    pub fn since(&self, baseline: Option<&Counters>) -> Counters {
        let Some(b) = baseline else { return *self };
        let went_down = self.calls < b.calls
            || self.total_ms < b.total_ms
            || self.rows < b.rows
            || self.shared_blks_hit < b.shared_blks_hit
            || self.shared_blks_read < b.shared_blks_read
            || self.temp_blks_read < b.temp_blks_read
            || self.temp_blks_written < b.temp_blks_written;
        if went_down {
            return *self;
        }
        Counters {
            calls: self.calls - b.calls,
            total_ms: self.total_ms - b.total_ms,
            rows: self.rows - b.rows,
            shared_blks_hit: self.shared_blks_hit - b.shared_blks_hit,
            shared_blks_read: self.shared_blks_read - b.shared_blks_read,
            temp_blks_read: self.temp_blks_read - b.temp_blks_read,
            temp_blks_written: self.temp_blks_written - b.temp_blks_written,
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.calls += other.calls;
        self.total_ms += other.total_ms;
        self.rows += other.rows;
        self.shared_blks_hit += other.shared_blks_hit;
        self.shared_blks_read += other.shared_blks_read;
        self.temp_blks_read += other.temp_blks_read;
        self.temp_blks_written += other.temp_blks_written;
    }
}

/// One pg_stat_statements entry of the current database.
pub struct PgssEntry {
    pub queryid: i64,
    pub userid: i64,
    pub dbid: i64,
    pub toplevel: bool,
    pub text: String,
    pub current: Counters,
    /// optidb has seen this entry before (it has a row in optidb.pgss_state): it is never
    /// parsed again.
    pub known: bool,
    /// The statement (optidb.query id) it belongs to, if that statement is filed.
    pub query_id: Option<i64>,
    /// The fingerprint of its statement, for a known entry not recorded yet (None: not a
    /// statement at all, such as boilerplate or a call of optidb, or recorded).
    pub fingerprint: Option<String>,
    /// The counters optidb last recorded for this entry; None if it never recorded it (so all
    /// of `current` is still to be recorded).
    pub baseline: Option<Counters>,
}

/// Statements that only manage the session are never worth a row; this cheap text filter trims
/// them before the parser classifies what is left (and recognises statements about optidb).
pub const SKIP_PATTERN: &str = r"^\s*(begin|commit|rollback|end|abort|start\s+transaction|savepoint|release|set|reset|show|discard|deallocate|listen|unlisten|notify)\M";

/// Every entry of this database, costliest (total execution time) first, with what optidb
/// knows of it (optidb.pgss_state). Every entry, not the top ones: entries are grouped into
/// statements before any is chosen (src/api/scan.rs), so one statement's many entries count
/// once. pg_stat_statements.max bounds their number (5000 by default).
pub fn read_all(view: &PgssView) -> Vec<PgssEntry> {
    // An entry never recorded belongs to a filed statement when its fingerprint does (a new
    // variant of a statement, or one filed since the entry was first seen).
    let sql = format!(
        "WITH db AS (SELECT oid FROM pg_catalog.pg_database \
                     WHERE datname = pg_catalog.current_database()) \
         SELECT s.queryid, s.userid::int8 AS userid, s.dbid::int8 AS dbid, s.toplevel, s.query, \
                s.calls, s.total_exec_time, s.rows, s.shared_blks_hit, s.shared_blks_read, \
                s.temp_blks_read, s.temp_blks_written, \
                b.queryid IS NOT NULL AS known, b.query_id IS NOT NULL AS recorded, \
                COALESCE(b.query_id, q.id) AS query_id, b.fingerprint, \
                b.calls AS base_calls, b.total_exec_time AS base_total_exec_time, \
                b.rows AS base_rows, b.shared_blks_hit AS base_shared_blks_hit, \
                b.shared_blks_read AS base_shared_blks_read, \
                b.temp_blks_read AS base_temp_blks_read, \
                b.temp_blks_written AS base_temp_blks_written \
         FROM {view} s \
         LEFT JOIN optidb.pgss_state b \
           ON b.queryid = s.queryid AND b.userid = s.userid AND b.dbid = s.dbid \
          AND b.toplevel = s.toplevel \
         LEFT JOIN optidb.query q \
           ON b.query_id IS NULL AND q.fingerprint = b.fingerprint AND q.userid = s.userid \
          AND q.dbid = s.dbid AND q.source = 'local' \
         WHERE s.dbid = (SELECT oid FROM db) \
           AND s.queryid IS NOT NULL \
           AND s.query !~* $1 \
         ORDER BY s.total_exec_time DESC",
        view = view.statements()
    );
    rows::select(
        "pg_stat_statements entries",
        &sql,
        &[SKIP_PATTERN.into()],
        |row| {
            let recorded: bool = row.get("recorded");
            PgssEntry {
                queryid: row.get("queryid"),
                userid: row.get("userid"),
                dbid: row.get("dbid"),
                toplevel: row.get("toplevel"),
                // NULL for a role that may not see other roles' texts: kept as no text.
                text: row.opt("query").unwrap_or_default(),
                current: counters(row, ""),
                known: row.get("known"),
                query_id: row.opt("query_id"),
                fingerprint: row.opt("fingerprint").filter(|_| !recorded),
                baseline: recorded.then(|| counters(row, "base_")),
            }
        },
    )
}

/// A row's counters, under the column names pg_stat_statements and optidb.pgss_state use
/// (after `prefix`).
pub fn counters(row: &Row, prefix: &str) -> Counters {
    Counters {
        calls: row.get(&format!("{prefix}calls")),
        total_ms: row.get(&format!("{prefix}total_exec_time")),
        rows: row.get(&format!("{prefix}rows")),
        shared_blks_hit: row.get(&format!("{prefix}shared_blks_hit")),
        shared_blks_read: row.get(&format!("{prefix}shared_blks_read")),
        temp_blks_read: row.get(&format!("{prefix}temp_blks_read")),
        temp_blks_written: row.get(&format!("{prefix}temp_blks_written")),
    }
}

/// pg_stat_statements was reset since the previous pass: every entry restarted from zero, so
/// every stored baseline of this database becomes zero (what is in an entry now all happened
/// since). Baselines of entries a pass does not record stay stored until their statement is
/// chosen; a pre-reset value left there would hide the work done since the reset.
pub fn forget_baselines() {
    Spi::run(
        "UPDATE optidb.pgss_state SET calls = 0, total_exec_time = 0, rows = 0, \
             shared_blks_hit = 0, shared_blks_read = 0, temp_blks_read = 0, \
             temp_blks_written = 0 \
         WHERE dbid = (SELECT oid FROM pg_catalog.pg_database \
                       WHERE datname = pg_catalog.current_database())",
    )
    .unwrap_or_else(|e| error!("clearing pg_stat_statements baselines failed: {e}"));
}

/// The entries' key in optidb.pgss_state (queryid, userid, dbid, toplevel) as four arrays,
/// for the statements that write rows of it from unnest().
pub fn key_arrays<'a>(
    entries: impl Iterator<Item = &'a PgssEntry> + Clone,
) -> [pgrx::datum::DatumWithOid<'static>; 4] {
    let col = |f: fn(&PgssEntry) -> i64| entries.clone().map(f).collect::<Vec<_>>();
    [
        col(|e| e.queryid).into(),
        col(|e| e.userid).into(),
        col(|e| e.dbid).into(),
        entries.map(|e| e.toplevel).collect::<Vec<_>>().into(),
    ]
}

/// Remember entries seen for the first time and not recorded: with the fingerprint of their
/// statement, or None for an entry that is no statement (boilerplate, a call of optidb), so no
/// later pass parses them again. They have no statement and no baseline yet.
pub fn remember(entries: &[(&PgssEntry, Option<&str>)], seen_at: &TimestampWithTimeZone) {
    if entries.is_empty() {
        return;
    }
    let [queryid, userid, dbid, toplevel] = key_arrays(entries.iter().map(|(e, _)| *e));
    Spi::run_with_args(
        "INSERT INTO optidb.pgss_state (queryid, userid, dbid, toplevel, query_id, fingerprint, \
             calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, temp_blks_read, \
             temp_blks_written, seen_at) \
         SELECT u.queryid, u.userid::oid, u.dbid::oid, u.toplevel, NULL, u.fingerprint, \
                0, 0, 0, 0, 0, 0, 0, $6 \
         FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bool[], $5::text[]) \
              AS u(queryid, userid, dbid, toplevel, fingerprint) \
         ON CONFLICT (queryid, userid, dbid, toplevel) DO NOTHING",
        &[
            queryid,
            userid,
            dbid,
            toplevel,
            entries
                .iter()
                .map(|(_, f)| f.map(str::to_string))
                .collect::<Vec<_>>()
                .into(),
            (*seen_at).into(),
        ],
    )
    .unwrap_or_else(|e| error!("remembering pg_stat_statements entries failed: {e}"));
}

/// Forget the entries remembered but never recorded that pg_stat_statements no longer holds
/// (evicted or reset), so optidb.pgss_state stays as small as pg_stat_statements. `present`
/// is every entry this pass read.
pub fn forget_gone(present: &[PgssEntry]) {
    let col = |f: &dyn Fn(&PgssEntry) -> i64| present.iter().map(f).collect::<Vec<_>>();
    Spi::run_with_args(
        "DELETE FROM optidb.pgss_state b \
         WHERE b.query_id IS NULL \
           AND b.dbid = (SELECT oid FROM pg_catalog.pg_database \
                         WHERE datname = pg_catalog.current_database()) \
           AND NOT EXISTS ( \
               SELECT FROM unnest($1::int8[], $2::int8[], $3::bool[]) AS u(queryid, userid, toplevel) \
               WHERE u.queryid = b.queryid AND u.userid::oid = b.userid \
                 AND u.toplevel = b.toplevel)",
        &[
            col(&|e| e.queryid).into(),
            col(&|e| e.userid).into(),
            present.iter().map(|e| e.toplevel).collect::<Vec<_>>().into(),
        ],
    )
    .unwrap_or_else(|e| error!("forgetting pg_stat_statements entries failed: {e}"));
}

/// pg_stat_statements_info.stats_reset: changes whenever all entries were reset.
pub fn stats_reset(view: &PgssView) -> Option<String> {
    rows::value(
        "pg_stat_statements reset",
        &format!("SELECT stats_reset::text FROM {}", view.info()),
        &[],
    )
}

/// The statement (optidb.query id) each (queryid, userid) of database `dbid` belongs to, for
/// the statements optidb records (entries of optidb.pgss_state with a statement).
pub fn owners(dbid: u32) -> HashMap<(i64, u32), i64> {
    rows::select(
        "statement of each latency entry",
        "SELECT DISTINCT ON (queryid, userid) queryid, userid::int8 AS userid, query_id \
         FROM optidb.pgss_state WHERE dbid = $1::int8::oid AND query_id IS NOT NULL",
        &[(dbid as i64).into()],
        |row| {
            (
                (row.get("queryid"), row.get::<i64>("userid") as u32),
                row.get("query_id"),
            )
        },
    )
    .into_iter()
    .collect()
}
