//! The SQL surface in one place: who may call each function, who may read each relation and
//! how, what pg_dump keeps, and the text `\df+`, `\dd` and `\d+` show. `optidb.apply_surface()`
//! turns it into GRANTs, row-level security policies, `pg_extension_config_dump` registrations
//! and COMMENTs (run by the install script, sql/security.sql, and by upgrade scripts), and
//! `optidb.surface()` lists it, so tests/e2e/test_surface.py can check the catalog against it:
//! a function, table or view nobody classified here fails the suite instead of silently getting
//! no access, no RLS or no backup.

use crate::postgres::errors::raise;
use crate::postgres::rows;
use optidb_core::vocabulary;
use pgrx::prelude::*;

/// Who may call a function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// optidb_reader (and so optidb_admin, a member of it).
    Reader,
    /// optidb_monitor (and so optidb_admin, a member of it): what a monitoring system reads.
    Monitor,
    /// optidb_admin only.
    Admin,
    /// Nobody but the extension's owner (the install and upgrade scripts, the views).
    Internal,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Audience::Reader => "reader",
            Audience::Monitor => "monitor",
            Audience::Admin => "admin",
            Audience::Internal => "internal",
        }
    }
}

pub struct Function {
    /// As `regprocedure` prints it.
    pub signature: &'static str,
    pub audience: Audience,
    pub comment: &'static str,
}

/// Which rows of a table optidb_reader sees (optidb_admin sees every row of every table).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Rows of statements it may see (the `query` table itself: by its role, while the role
    /// with that OID carries the name the statement ran under).
    OwnStatements,
    /// Rows whose `query_id` is a statement it may see.
    ByStatement,
    /// Advice whose every statement it may see (schema-level advice serves none: visible).
    Advice,
    /// Query families with at least one statement it may see (labels and tables come from
    /// the statements' text).
    ByFamily,
    /// Every row: no statement text in it.
    All,
    /// Column statistics of columns it may read, as pg_stats shows them.
    ReadableColumns,
    /// Nothing: admin-only bookkeeping.
    None,
}

impl Readers {
    fn as_str(self) -> &'static str {
        match self {
            Readers::OwnStatements => "own_statements",
            Readers::ByStatement => "by_statement",
            Readers::Advice => "advice",
            Readers::ByFamily => "by_family",
            Readers::All => "all",
            Readers::ReadableColumns => "readable_columns",
            Readers::None => "none",
        }
    }

    /// The columns of its own table the reader policy reads.
    fn columns(self) -> &'static [&'static str] {
        match self {
            Readers::OwnStatements => &["userid", "role_name"],
            Readers::ByStatement => &["query_id"],
            Readers::Advice => &["query_ids"],
            Readers::ByFamily => &["id"],
            Readers::ReadableColumns => &["relid", "attname"],
            Readers::All | Readers::None => &[],
        }
    }

    /// The reader policy's name and USING expression (every name schema-qualified).
    fn policy(self) -> Option<(&'static str, &'static str)> {
        match self {
            // An OID is trusted only while its role carries the stored name: restored from
            // another cluster it may be another role until snapshot() re-maps it by name
            // (src/postgres/identity.rs). pg_read_all_stats members see every statement anyway.
            Readers::OwnStatements => Some((
                "reader_own",
                "optidb.can_see(userid) \
                 AND (pg_catalog.pg_get_userbyid(userid) OPERATOR(pg_catalog.=) role_name \
                      OR pg_catalog.pg_has_role('pg_read_all_stats', 'MEMBER'))",
            )),
            Readers::ByStatement => Some((
                "reader_own",
                "EXISTS (SELECT FROM optidb.query q WHERE q.id OPERATOR(pg_catalog.=) query_id)",
            )),
            Readers::Advice => Some((
                "reader_own",
                "NOT EXISTS (SELECT FROM pg_catalog.unnest(query_ids) AS served(id) \
                 WHERE NOT EXISTS (SELECT FROM optidb.query q \
                                   WHERE q.id OPERATOR(pg_catalog.=) served.id))",
            )),
            // The query table's own policy decides which statements it may see.
            Readers::ByFamily => Some((
                "reader_own",
                "EXISTS (SELECT FROM optidb.query q \
                         WHERE q.family_id OPERATOR(pg_catalog.=) family.id)",
            )),
            Readers::All => Some(("reader_all", "true")),
            Readers::ReadableColumns => Some((
                "reader_readable",
                "pg_catalog.has_column_privilege(relid, attname::text, 'SELECT')",
            )),
            Readers::None => None,
        }
    }
}

/// What becomes of a table's rows in pg_dump.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// History, advice and settings: dumped with its identity sequences
    /// (pg_extension_config_dump), the rows this filter keeps ('' for all; rows the install
    /// script makes would collide with the restored ones).
    Dumped(&'static str),
    /// Not dumped: the reason (part of the table's comment), e.g. a cache scan() rebuilds.
    NotDumped(&'static str),
}

pub struct Table {
    pub name: &'static str,
    pub readers: Readers,
    pub kept: Kept,
    /// optidb_admin may insert, update and delete its rows (settings, such as alert rules, that
    /// nothing replays as another role); every other table only optidb's functions write.
    pub admin_edits: bool,
    pub comment: &'static str,
}

/// Views readers query (security barrier over the materialized views, filtered by can_see).
const READER_VIEWS: [&str; 5] = [
    "query_metrics",
    "query_metrics_hourly",
    "query_metrics_daily",
    "table_metrics",
    "family_metrics",
];

/// Views a monitoring system reads (optidb_monitor, and optidb_admin through it): aggregate
/// figures of every statement with a short snippet, open alerts per severity, the registered
/// sources' states (their connection errors only for optidb_admin).
pub const MONITOR_VIEWS: [&str; 3] = ["monitor_statements", "monitor_alerts", "monitor_sources"];

/// Tables optidb_monitor reads whole, for health() (the alert rules give each figure its
/// status) and metrics() (the metric views' ages): no statement text in any.
pub const MONITOR_TABLES: [&str; 2] = ["alert_rule", "refresh_log"];

/// Materialized views: not RLS-capable, so nobody but the owner reads them directly. The one
/// list of them: refresh() refreshes them in this order (per-statement views first, tables
/// last), test_surface checks it against the catalog.
pub const MATERIALIZED_VIEWS: [&str; 4] = [
    "mv_query_metrics",
    "mv_query_metrics_hourly",
    "mv_query_metrics_daily",
    "mv_table_metrics",
];

pub const FUNCTIONS: &[Function] = &[
    Function {
        signature: "optidb.bottlenecks(integer,text)",
        audience: Audience::Reader,
        comment: "The statements with the largest total execution time, each with reason, evidence, DDL, confidence, family and anomaly kinds",
    },
    Function {
        signature: "optidb.query(bigint)",
        audience: Audience::Reader,
        comment: "Everything optidb knows about one statement (jsonb): text, metrics, latency, plans, samples, advice, simulations",
    },
    Function {
        signature: "optidb.recommend(bigint,text)",
        audience: Audience::Reader,
        comment: "Open recommendations (all, or those serving one statement or one source) with DDL, rationale, evidence and simulated gain",
    },
    Function {
        signature: "optidb.tenant_advice()",
        audience: Audience::Reader,
        comment: "Index advice that is the same in several tenant schemas, once per tenant family: schemas lacking it, schemas already indexed, a script, the tenants simulated",
    },
    Function {
        signature: "optidb.advice_summary()",
        audience: Audience::Admin,
        comment: "What the latest scan's advised index set does to the whole workload: planned cost before and after, MB against optidb.index_budget_mb, time saved and write cost per hour",
    },
    Function {
        signature: "optidb.execution_time_stats(bigint,timestamp with time zone,timestamp with time zone,text)",
        audience: Audience::Reader,
        comment: "Execution-time statistics per statement over a time range, from optidb's own histograms",
    },
    Function {
        signature: "optidb.can_see(oid)",
        audience: Audience::Reader,
        comment: "True when the current user may see statements of role owner (member of it, of optidb_admin or of pg_read_all_stats)",
    },
    Function {
        signature: "optidb.surface()",
        audience: Audience::Reader,
        comment: "optidb's SQL surface: each function's audience, each table's reader rule and whether pg_dump keeps it, each enumerated column's values",
    },
    Function {
        signature: "optidb.scan(integer)",
        audience: Audience::Admin,
        comment: "Store pg_stat_statements and latency deltas, catalog facts and samples, capture plans as each statement's owner, refresh advice, query families and anomaly tags",
    },
    Function {
        signature: "optidb.snapshot(integer)",
        audience: Audience::Admin,
        comment: "The light half of scan(): store pg_stat_statements and latency deltas, catalog facts and samples",
    },
    Function {
        signature: "optidb.prune()",
        audience: Audience::Admin,
        comment: "Delete history older than optidb.retention days (but the latest plans, simulations and log rows) and plans, simulations and logs beyond their row caps; returns the rows deleted",
    },
    Function {
        signature: "optidb.refresh(text)",
        audience: Audience::Admin,
        comment: "Refresh the materialized metric views (all, or the one named), each within optidb.refresh_timeout",
    },
    Function {
        signature: "optidb.simulate(bigint,bigint,text)",
        audience: Audience::Admin,
        comment: "Try a recommendation on a statement before touching anything: hypothetical index (hypopg) or a real one, rolled back",
    },
    Function {
        signature: "optidb.latency_counters()",
        audience: Audience::Admin,
        comment: "The live shared-memory latency counters of this database (no history)",
    },
    Function {
        signature: "optidb.memory()",
        audience: Audience::Admin,
        comment: "optidb's own shared memory: entries used, capacity, bytes, evictions",
    },
    Function {
        signature: "optidb.latency_rollup(text)",
        audience: Audience::Admin,
        comment: "Latency history merged per statement and hour or day (what the metric views are built from)",
    },
    Function {
        signature: "optidb.query_metrics_by(text)",
        audience: Audience::Admin,
        comment: "pg_stat_statements metrics and latency per statement and hour or day (body of the hourly and daily views)",
    },
    Function {
        signature: "optidb.health()",
        audience: Audience::Monitor,
        comment: "The database's health now: one row per figure (connections, locks, cache, transactions, vacuum, WAL, replication...) with a status from the alert rules",
    },
    Function {
        signature: "optidb.record_health()",
        audience: Audience::Admin,
        comment: "Store the current health figures in optidb.health_history (the worker runs it every optidb.snapshot_interval)",
    },
    Function {
        signature: "optidb.check_alerts()",
        audience: Audience::Admin,
        comment: "Evaluate the alert rules now: returns the alerts that fired or resolved; firing writes optidb.alert, sends NOTIFY optidb_alerts and logs a WARNING",
    },
    Function {
        signature: "optidb.sample_waits()",
        audience: Audience::Admin,
        comment: "Store the wait events of statements running now in optidb.wait_sample (the worker runs it every optidb.alert_interval; scan() suspects lock contention from it)",
    },
    Function {
        signature: "optidb.ask(text,bigint)",
        audience: Audience::Reader,
        comment: "Answer a question about the workload (why is query N slow, what index, show impact, what changed, top bottlenecks, is the database healthy) from stored facts only, each cited with the query that reads it",
    },
    Function {
        signature: "optidb.metrics(integer,text)",
        audience: Audience::Monitor,
        comment: "Key figures in Prometheus text exposition format: health figures, open alerts, metric view ages and the top statements (low cardinality)",
    },
    Function {
        signature: "optidb.report(integer,integer,text)",
        audience: Audience::Admin,
        comment: "One self-contained HTML page (inline CSS and SVG, no JavaScript): bottlenecks and advice, latency trends and histogram, errors, health, alerts, view freshness",
    },
    Function {
        signature: "optidb.add_source(text,text)",
        audience: Audience::Admin,
        comment: "Register a read replica as a source of statements, reached through a foreign server (dblink) and its user mapping; scan() and snapshot() pull from it",
    },
    Function {
        signature: "optidb.drop_source(text)",
        audience: Audience::Admin,
        comment: "Stop pulling from a source; its statements and history stay",
    },
    Function {
        signature: "optidb.latency_entries()",
        audience: Audience::Admin,
        comment: "The raw shared-memory latency histograms of this database: what a primary pulls from a standby (read-only, runs on a standby)",
    },
    Function {
        signature: "optidb.sample_entries()",
        audience: Audience::Admin,
        comment: "Drain this database's sampled executions (search_path, parameter values) from shared memory on a standby: what a primary pulls (nothing on a primary)",
    },
    Function {
        signature: "optidb.failure_entries()",
        audience: Audience::Admin,
        comment: "Drain this database's failed statements (text, search_path, failures, time until failure) from shared memory on a standby: what a primary pulls (nothing on a primary)",
    },
    Function {
        signature: "optidb.apply_surface(boolean)",
        audience: Audience::Internal,
        comment: "Install and upgrade scripts only: grants, row-level security, dump registration and comments from optidb's surface registry",
    },
];

const CACHE: &str = "not dumped: a cache of the catalog that every scan() rebuilds";

pub const TABLES: &[Table] = &[
    Table {
        name: "query",
        readers: Readers::OwnStatements,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "One row per distinct statement (fingerprint, role, database) seen in pg_stat_statements; its role by OID and by name, re-mapped by name when restored into another cluster",
    },
    Table {
        name: "metric",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Per-snapshot deltas of pg_stat_statements counters per statement",
    },
    Table {
        name: "sample",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Sampled executions: text as run, search_path, parameter values and relations used (user data, visible like the statement)",
    },
    Table {
        name: "statement_relation",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "The tables (schema and name) each statement's plan used, recorded once per statement: where a tenant family's statements ran (visible like the statement)",
    },
    Table {
        name: "plan",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "EXPLAIN captures (generic and custom plans) and the facts derived from them, or why a statement could not be explained",
    },
    Table {
        name: "latency",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Per-snapshot deltas of optidb's own execution-time histograms per statement, with its failures (time until failure, statement_timeout cancels, latest SQLSTATE)",
    },
    Table {
        name: "latency_day",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "optidb.latency merged per statement and UTC day, complete from its earliest day: what execution_time_stats() reads for whole days",
    },
    Table {
        name: "simulation",
        readers: Readers::ByStatement,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Before/after of one recommendation on one statement (hypothetical or real index)",
    },
    Table {
        name: "recommendation",
        readers: Readers::Advice,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Advice derived by scan(): DDL, rationale, evidence, confidence, status",
    },
    Table {
        name: "scan_log",
        readers: Readers::All,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "One row per scan() or snapshot() run, with the stages of a scan that failed and were rolled back alone (stage_errors)",
    },
    Table {
        name: "refresh_log",
        readers: Readers::All,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "One row per materialized view refresh by refresh()",
    },
    Table {
        name: "schema_table",
        readers: Readers::All,
        kept: Kept::NotDumped(CACHE),
        admin_edits: false,
        comment: "Catalog facts per table: size, rows, scans, vacuum and analyze times",
    },
    Table {
        name: "schema_index",
        readers: Readers::All,
        kept: Kept::NotDumped(CACHE),
        admin_edits: false,
        comment: "Catalog facts per index: definition, columns, size, scans",
    },
    Table {
        name: "schema_column",
        readers: Readers::ReadableColumns,
        kept: Kept::NotDumped(CACHE),
        admin_edits: false,
        comment: "Column statistics from pg_stats (no values), used to judge selectivity",
    },
    Table {
        name: "pgss_state",
        readers: Readers::None,
        kept: Kept::NotDumped(
            "not dumped: this server's last pg_stat_statements counters, the baseline the next snapshot() starts from",
        ),
        admin_edits: false,
        comment: "Last cumulative pg_stat_statements counters per entry",
    },
    Table {
        name: "latency_state",
        readers: Readers::None,
        kept: Kept::NotDumped(
            "not dumped: this server's last shared-memory latency counters, the baseline the next snapshot() starts from",
        ),
        admin_edits: false,
        comment: "Last cumulative latency counters per entry",
    },
    Table {
        name: "health_history",
        readers: Readers::None,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Health figures over time, one row per figure per optidb.record_health() (session details with query texts: admins only)",
    },
    Table {
        name: "alert_rule",
        readers: Readers::None,
        kept: Kept::Dumped("WHERE NOT builtin"),
        admin_edits: true,
        comment: "Alert rules: metric, comparison, threshold, hold, clear_for, severity, enabled (optidb_admin edits them)",
    },
    Table {
        name: "alert",
        readers: Readers::None,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Alerts, one per incident of a rule and subject: fired_at, resolved_at, value, peak, details",
    },
    Table {
        name: "alert_state",
        readers: Readers::None,
        kept: Kept::NotDumped(
            "not dumped: where each rule stands between evaluations; the next evaluation starts afresh",
        ),
        admin_edits: false,
        comment: "Per rule and subject: since when its condition holds or has been clear, and its open alert",
    },
    Table {
        name: "family",
        readers: Readers::ByFamily,
        // Dumped: optidb.query.family_id references it (every scan() rebuilds it, keeping ids).
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Query families: statements grouped by the shape of their SQL, with a label",
    },
    Table {
        name: "anomaly",
        readers: Readers::ByStatement,
        kept: Kept::NotDumped("not dumped: every scan() recomputes the tags"),
        admin_edits: false,
        comment: "Anomaly tags per statement (latency spike, family outlier, plan change, lock contention) with their evidence",
    },
    Table {
        name: "wait_sample",
        readers: Readers::None,
        kept: Kept::NotDumped(
            "not dumped: this server's sessions, by its pg_stat_statements query ids and role OIDs, which mean other statements and roles elsewhere; lock contention is judged on the last hour",
        ),
        admin_edits: false,
        comment: "Wait events of running statements sampled by the worker (lock contention evidence)",
    },
    Table {
        name: "source",
        readers: Readers::None,
        kept: Kept::Dumped(""),
        admin_edits: false,
        comment: "Registered read replicas (add_source()): the foreign server that reaches each, and the state, error and time of its last pull",
    },
    Table {
        name: "source_pgss_state",
        readers: Readers::None,
        kept: Kept::NotDumped(
            "not dumped: a source's last pg_stat_statements counters, the baseline its next pull starts from",
        ),
        admin_edits: false,
        comment: "Last cumulative pg_stat_statements counters pulled per source and entry",
    },
    Table {
        name: "source_latency_state",
        readers: Readers::None,
        kept: Kept::NotDumped(
            "not dumped: a source's last shared-memory latency counters, the baseline its next pull starts from",
        ),
        admin_edits: false,
        comment: "Last cumulative latency counters pulled per source and entry",
    },
    Table {
        name: "job_lock",
        readers: Readers::None,
        kept: Kept::NotDumped("not dumped: CREATE EXTENSION makes its rows"),
        admin_edits: false,
        comment: "The row locks that keep optidb's jobs apart",
    },
];

/// Each enumerated column's allowed values, from the Rust types the code uses; the test
/// compares them with the tables' CHECK constraints.
fn enumerations() -> Vec<(&'static str, Vec<&'static str>)> {
    vocabulary::COLUMNS
        .iter()
        .map(|(column, values)| (*column, values()))
        .collect()
}

/// The registry as rows: kind (function, table, view, materialized view, enum), name, who may
/// use it and how (audience or reader rule), whether pg_dump keeps it, comment or values.
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn surface() -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(name, String),
        name!(access, String),
        name!(dumped, Option<bool>),
        name!(description, String),
    ),
> {
    let functions = FUNCTIONS.iter().map(|f| {
        (
            "function".to_string(),
            f.signature.to_string(),
            f.audience.as_str().to_string(),
            None,
            f.comment.to_string(),
        )
    });
    let tables = TABLES.iter().map(|t| {
        (
            "table".to_string(),
            format!("optidb.{}", t.name),
            std::iter::once(t.readers.as_str())
                .chain(t.admin_edits.then_some("admin_edits"))
                .chain(MONITOR_TABLES.contains(&t.name).then_some("monitor_reads"))
                .collect::<Vec<_>>()
                .join(","),
            Some(matches!(t.kept, Kept::Dumped(_))),
            table_comment(t),
        )
    });
    let views = READER_VIEWS.iter().map(|v| {
        (
            "view".to_string(),
            format!("optidb.{v}"),
            "own_statements".to_string(),
            None,
            String::new(),
        )
    });
    let monitor_views = MONITOR_VIEWS.iter().map(|v| {
        (
            "view".to_string(),
            format!("optidb.{v}"),
            "monitor".to_string(),
            None,
            String::new(),
        )
    });
    let materialized = MATERIALIZED_VIEWS.iter().map(|v| {
        (
            "materialized view".to_string(),
            format!("optidb.{v}"),
            "none".to_string(),
            None,
            String::new(),
        )
    });
    let enums = enumerations().into_iter().map(|(column, values)| {
        (
            "enum".to_string(),
            format!("optidb.{column}"),
            String::new(),
            None,
            values.join(","),
        )
    });
    let rows: Vec<_> = functions
        .chain(tables)
        .chain(views)
        .chain(monitor_views)
        .chain(materialized)
        .chain(enums)
        .collect();
    TableIterator::new(rows)
}

fn table_comment(t: &Table) -> String {
    match t.kept {
        Kept::Dumped(_) => t.comment.to_string(),
        Kept::NotDumped(why) => format!("{} ({why})", t.comment),
    }
}

/// Make the catalog match the registry: EXECUTE by audience, SELECT and row-level security by
/// reader rule, pg_dump registration, comments. Idempotent. `missing_ok`: skip objects that do
/// not exist yet (an upgrade script run by a newer library, before the later script creates
/// them); the install script passes false, so a registry entry without its object fails it.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apply_surface(missing_ok: bool) {
    let exists = |sql: &str, name: &str| {
        rows::value::<bool>("surface object exists", sql, &[name.into()]).unwrap_or(false)
    };
    let missing = |what: &str| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("optidb's surface registry names {what}, which does not exist"),
            Some("Add the object to the install script or remove it from src/api/surface.rs."),
        )
    };
    run("GRANT USAGE ON SCHEMA optidb TO optidb_reader, optidb_monitor");
    for f in FUNCTIONS {
        if !exists(
            "SELECT pg_catalog.to_regprocedure($1) IS NOT NULL",
            f.signature,
        ) {
            if missing_ok {
                continue;
            }
            missing(f.signature);
        }
        let sig = f.signature;
        run(&format!("REVOKE ALL ON FUNCTION {sig} FROM PUBLIC"));
        run(&format!(
            "COMMENT ON FUNCTION {sig} IS {}",
            spi::quote_literal(f.comment)
        ));
        match f.audience {
            Audience::Reader => run(&format!("GRANT EXECUTE ON FUNCTION {sig} TO optidb_reader")),
            Audience::Monitor => run(&format!(
                "GRANT EXECUTE ON FUNCTION {sig} TO optidb_monitor"
            )),
            Audience::Admin => run(&format!("GRANT EXECUTE ON FUNCTION {sig} TO optidb_admin")),
            Audience::Internal => {}
        }
    }
    for t in TABLES {
        let table = format!("optidb.{}", spi::quote_identifier(t.name));
        if !exists(REGCLASS_EXISTS, &table) {
            if missing_ok {
                continue;
            }
            missing(&table);
        }
        run(&format!("REVOKE ALL ON {table} FROM PUBLIC"));
        run(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"));
        run(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"));
        // Admins read everything and write nothing: what optidb stores is replayed as other
        // roles, so only its own (SECURITY DEFINER) functions write it.
        run(&format!("GRANT SELECT ON {table} TO optidb_admin"));
        run(&format!("DROP POLICY IF EXISTS admin_reads_all ON {table}"));
        run(&format!(
            "CREATE POLICY admin_reads_all ON {table} FOR SELECT TO optidb_admin USING (true)"
        ));
        run(&format!("DROP POLICY IF EXISTS admin_edits ON {table}"));
        run(&format!(
            "DROP POLICY IF EXISTS monitor_reads_all ON {table}"
        ));
        if MONITOR_TABLES.contains(&t.name) {
            run(&format!("GRANT SELECT ON {table} TO optidb_monitor"));
            run(&format!(
                "CREATE POLICY monitor_reads_all ON {table} FOR SELECT TO optidb_monitor USING (true)"
            ));
        }
        if t.admin_edits {
            run(&format!(
                "GRANT INSERT, UPDATE, DELETE ON {table} TO optidb_admin"
            ));
            run(&format!(
                "CREATE POLICY admin_edits ON {table} TO optidb_admin USING (true) WITH CHECK (true)"
            ));
            for sequence in identity_sequences(&table) {
                run(&format!(
                    "GRANT USAGE ON SEQUENCE {sequence} TO optidb_admin"
                ));
            }
        }
        // An upgrade from an older version runs every script with the newest library: a
        // policy over columns a later script adds is left to that script's apply_surface().
        if !missing_ok || has_columns(&table, t.readers.columns()) {
            for name in ["reader_own", "reader_all", "reader_readable"] {
                run(&format!("DROP POLICY IF EXISTS {name} ON {table}"));
            }
            if let Some((name, using)) = t.readers.policy() {
                run(&format!("GRANT SELECT ON {table} TO optidb_reader"));
                run(&format!(
                    "CREATE POLICY {name} ON {table} FOR SELECT TO optidb_reader USING ({using})"
                ));
            }
        }
        if let Kept::Dumped(filter) = t.kept {
            run(&format!(
                "SELECT pg_catalog.pg_extension_config_dump({}, {})",
                spi::quote_literal(&table),
                spi::quote_literal(filter)
            ));
            // Its identity sequences too, or restored rows collide with the next ids.
            for sequence in identity_sequences(&table) {
                run(&format!(
                    "SELECT pg_catalog.pg_extension_config_dump({}, '')",
                    spi::quote_literal(&sequence)
                ));
            }
        }
        run(&format!(
            "COMMENT ON TABLE {table} IS {}",
            spi::quote_literal(table_comment(t))
        ));
    }
    // Views: revoked from everyone but their audience, which may read them (materialized
    // views: nobody but the owner).
    let views: [(&[&str], &str, Option<&str>); 3] = [
        (&READER_VIEWS, "PUBLIC, optidb_admin", Some("optidb_reader")),
        (
            &MONITOR_VIEWS,
            "PUBLIC, optidb_reader, optidb_admin",
            Some("optidb_monitor"),
        ),
        (
            &MATERIALIZED_VIEWS,
            "PUBLIC, optidb_reader, optidb_admin",
            None,
        ),
    ];
    for (list, revoked_from, readers) in views {
        for view in list {
            if missing_ok && !exists(REGCLASS_EXISTS, &format!("optidb.{view}")) {
                continue;
            }
            run(&format!("REVOKE ALL ON optidb.{view} FROM {revoked_from}"));
            if let Some(readers) = readers {
                run(&format!("GRANT SELECT ON optidb.{view} TO {readers}"));
            }
        }
    }
}

/// Does `table` have every one of these columns?
fn has_columns(table: &str, columns: &[&str]) -> bool {
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    rows::value::<bool>(
        "table has columns",
        "SELECT count(*) = pg_catalog.cardinality($2) FROM pg_catalog.pg_attribute \
         WHERE attrelid = pg_catalog.to_regclass($1) AND attname = ANY ($2::name[]) \
           AND NOT attisdropped",
        &[table.into(), columns.into()],
    )
    .unwrap_or(false)
}

fn identity_sequences(table: &str) -> Vec<String> {
    rows::select(
        "identity sequences",
        "SELECT pg_catalog.pg_get_serial_sequence($1, a.attname::text) AS sequence \
         FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attidentity <> ''",
        &[table.into()],
        |row| row.get("sequence"),
    )
}

const REGCLASS_EXISTS: &str = "SELECT pg_catalog.to_regclass($1) IS NOT NULL";

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| error!("{sql}: {e}"));
}
