//! Reading pg_stat_statements: checking it is usable (with a message that says exactly what to
//! change when it is not) and fetching the current database's top entries with the baseline
//! optidb stored for each at the previous scan.

use crate::errors::raise;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

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
    let schema = Spi::get_one::<String>(
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'pg_stat_statements'",
    )
    .ok()
    .flatten()
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
pub struct Entry {
    pub queryid: i64,
    pub userid: i64,
    pub dbid: i64,
    pub toplevel: bool,
    pub text: String,
    pub current: Counters,
    /// optidb's stored baseline for this entry, if it was seen before.
    pub known_query_id: Option<i64>,
    pub baseline: Option<Counters>,
}

/// Statements that only manage the session are never worth a row; this cheap text filter trims
/// them before the parser classifies what is left (and recognises statements about optidb).
const SKIP_PATTERN: &str = r"^\s*(begin|commit|rollback|end|abort|start\s+transaction|savepoint|release|set|reset|show|discard|deallocate|listen|unlisten|notify)\M";

/// The top `limit` entries of this database by total execution time. `reset_since_last` drops
/// stored baselines (pg_stat_statements_reset() was called since the previous scan).
pub fn read_top(view: &PgssView, limit: i64, reset_since_last: bool) -> Vec<Entry> {
    let sql = format!(
        "SELECT s.queryid, s.userid::int8, s.dbid::int8, s.toplevel, s.query, \
                s.calls, s.total_exec_time, s.rows, s.shared_blks_hit, s.shared_blks_read, \
                s.temp_blks_read, s.temp_blks_written, \
                b.query_id, b.calls, b.total_exec_time, b.rows, b.shared_blks_hit, \
                b.shared_blks_read, b.temp_blks_read, b.temp_blks_written \
         FROM {view} s \
         LEFT JOIN optidb.pgss_state b \
           ON b.queryid = s.queryid AND b.userid = s.userid AND b.dbid = s.dbid \
          AND b.toplevel = s.toplevel \
         WHERE s.dbid = (SELECT oid FROM pg_catalog.pg_database \
                         WHERE datname = pg_catalog.current_database()) \
           AND s.queryid IS NOT NULL \
           AND s.query !~* $1 \
         ORDER BY s.total_exec_time DESC \
         LIMIT $2",
        view = view.statements()
    );
    Spi::connect(|client| {
        let rows = client
            .select(&sql, None, &[SKIP_PATTERN.into(), limit.into()])
            .unwrap_or_else(|e| error!("reading pg_stat_statements failed: {e}"));
        rows.map(|row| {
            let get_i = |i: usize| row.get::<i64>(i).ok().flatten().unwrap_or(0);
            let get_f = |i: usize| row.get::<f64>(i).ok().flatten().unwrap_or(0.0);
            let known_query_id = row.get::<i64>(13).ok().flatten();
            let baseline = known_query_id
                .filter(|_| !reset_since_last)
                .map(|_| Counters {
                    calls: get_i(14),
                    total_ms: get_f(15),
                    rows: get_i(16),
                    shared_blks_hit: get_i(17),
                    shared_blks_read: get_i(18),
                    temp_blks_read: get_i(19),
                    temp_blks_written: get_i(20),
                });
            Entry {
                queryid: get_i(1),
                userid: get_i(2),
                dbid: get_i(3),
                toplevel: row.get::<bool>(4).ok().flatten().unwrap_or(true),
                text: row.get::<String>(5).ok().flatten().unwrap_or_default(),
                current: Counters {
                    calls: get_i(6),
                    total_ms: get_f(7),
                    rows: get_i(8),
                    shared_blks_hit: get_i(9),
                    shared_blks_read: get_i(10),
                    temp_blks_read: get_i(11),
                    temp_blks_written: get_i(12),
                },
                known_query_id,
                baseline,
            }
        })
        .collect()
    })
}

/// pg_stat_statements_info.stats_reset: changes whenever all entries were reset.
pub fn stats_reset(view: &PgssView) -> Option<String> {
    Spi::get_one::<String>(&format!("SELECT stats_reset::text FROM {}", view.info()))
        .ok()
        .flatten()
}
