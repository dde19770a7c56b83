//! Read replicas as sources (issue 26): `optidb.add_source()` / `optidb.drop_source()` register
//! a standby by the foreign server (dblink) that reaches it, and every snapshot and scan pulls
//! what was recorded there into this database's history, as statements of that source.
//!
//! A standby replays the primary's catalogs, so optidb's functions and roles exist there, with
//! the same OIDs; with optidb preloaded on it, its hooks record into the standby's own shared
//! memory. A pull reads, through dblink, that standby's pg_stat_statements entries (with their
//! role names), its latency table (`optidb.latency_entries()`, a read of shared memory: a
//! standby is read-only), and drains its samples and failed statements
//! (src/api/source_samples.rs), and stores here what changed since the previous pull, against
//! baselines kept per source (optidb.source_pgss_state, optidb.source_latency_state). Roles map
//! by name, as restored statements do (src/postgres/identity.rs), so row-level security holds
//! on pulled rows as on local ones. Texts are parsed here (the standby runs none of optidb's
//! SQL), and a source's statements are planned here as their owners, like local ones: the
//! schema and data are the primary's.
//!
//! Each source is pulled in a subtransaction of its own, within optidb.statement_timeout: one
//! that cannot be reached (or fails) leaves its state (`unreachable`, or `refused` when it fails
//! the identity checks), error and time in optidb.source and a health item, and the pass goes
//! on.

use crate::api::scan;
use crate::api::source_samples;
use crate::postgres::errors::raise;
use crate::postgres::guarded;
use crate::postgres::gucs;
use crate::postgres::ingest::{self, NewStatement};
use crate::postgres::latency::history;
use crate::postgres::latency::sample_store;
use crate::postgres::latency::table::{self, EntryCopy, Key};
use crate::postgres::pgss::{self, Counters, PgssEntry, PgssView};
use crate::postgres::rows;
use optidb_core::histogram::BUCKETS;
use optidb_core::vocabulary::SourceState;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::JsonB;
use std::collections::HashMap;

/// A statement a pull recorded work of: what a scan plans (as its owner, here).
pub struct Pulled {
    pub query_id: i64,
    pub userid: i64,
    pub raw_sql: String,
}

const SERVER_HINT: &str = "Create the foreign server and a user mapping first, for example: \
     CREATE EXTENSION dblink; CREATE SERVER replica1 FOREIGN DATA WRAPPER dblink_fdw \
     OPTIONS (host 'replica1.internal', dbname 'app', connect_timeout '5'); CREATE USER MAPPING \
     FOR PUBLIC SERVER replica1 OPTIONS (user 'optidb_pull', password '...'); \
     see docs/fleet.md.";

/// Register a standby as a source of statements. `server` names a foreign server (of dblink_fdw
/// or postgres_fdw) whose user mapping reaches the standby's copy of this database.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn add_source(
    name: &str,
    server: &str,
) -> TableIterator<
    'static,
    (
        name!(source, String),
        name!(foreign_server, String),
        name!(state, String),
    ),
> {
    if !valid_name(name) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid source name {name:?}"),
            Some(
                "Use lower-case letters, digits and underscores, starting with a letter (at \
                  most 63 characters); 'local' names this server's own statements.",
            ),
        );
    }
    dblink_schema();
    let known = rows::value::<bool>(
        "foreign server",
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_foreign_server WHERE srvname = $1)",
        &[server.into()],
    )
    .unwrap_or(false);
    if !known {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("foreign server \"{server}\" does not exist"),
            Some(SERVER_HINT),
        );
    }
    // SAFETY: a plain read of a backend global: the role that called this SECURITY DEFINER
    // function.
    let caller = unsafe { pg_sys::GetOuterUserId() };
    if let Some(refusal) = server_refusal(server, Some(caller)) {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("foreign server \"{server}\" cannot be a source: {refusal}"),
            Some(
                "A pull connects as optidb's owner, a superuser: only a server a superuser owns, \
                  and that you may use (GRANT USAGE ON FOREIGN SERVER), can be registered; see \
                  docs/fleet.md.",
            ),
        );
    }
    let added = rows::value::<bool>(
        "register source",
        "WITH added AS (INSERT INTO optidb.source (name, server) VALUES ($1, $2) \
                        ON CONFLICT (name) DO NOTHING RETURNING 1) \
         SELECT EXISTS (SELECT FROM added)",
        &[name.into(), server.into()],
    )
    .unwrap_or(false);
    if !added {
        raise(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("source \"{name}\" is already registered"),
            Some("Call optidb.drop_source() first to register it with another server."),
        );
    }
    TableIterator::once((
        name.to_string(),
        server.to_string(),
        SourceState::New.as_str().to_string(),
    ))
}

/// Stop pulling from a source. Its statements and their history stay (pruned with the rest);
/// its baselines go, so registering it again starts afresh.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn drop_source(name: &str) -> bool {
    let dropped = rows::value::<bool>(
        "drop source",
        "WITH gone AS (DELETE FROM optidb.source WHERE name = $1 RETURNING 1) \
         SELECT EXISTS (SELECT FROM gone)",
        &[name.into()],
    )
    .unwrap_or(false);
    if !dropped {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("source \"{name}\" is not registered"),
            Some("SELECT name FROM optidb.source; lists the registered sources."),
        );
    }
    true
}

/// optidb's latency table of this database, raw (cumulative histograms), for a primary's pull
/// (src/api/sources.rs). It only reads shared memory, so it runs on a standby. On a standby,
/// where no snapshot runs, it also takes the per-interval extremes (the pull is the snapshot).
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn latency_entries() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(userid, i64),
        name!(calls, i64),
        name!(errors, i64),
        name!(error_classes, JsonB),
        name!(sum_ns, i64),
        name!(min_ns, i64),
        name!(max_ns, i64),
        name!(interval_min_ns, i64),
        name!(interval_max_ns, i64),
        name!(buckets, Vec<i32>),
        name!(counts, Vec<i64>),
    ),
> {
    // SAFETY: plain reads: a backend global set at connection, and shared state set at startup.
    let (dbid, standby) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::RecoveryInProgress()) };
    let rows: Vec<_> = table::read_all(Some(dbid), standby)
        .into_iter()
        .map(|e| {
            let (buckets, counts): (Vec<i32>, Vec<i64>) = e
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i as i32, *n as i64))
                .unzip();
            let classes: HashMap<String, u64> = e.error_classes.into_iter().collect();
            // u64 counters travel as their bit pattern (an unset minimum is u64::MAX).
            (
                e.key.queryid as i64,
                e.key.userid as i64,
                e.calls as i64,
                e.errors as i64,
                JsonB(serde_json::to_value(classes).unwrap_or_default()),
                e.sum_ns as i64,
                e.min_ns as i64,
                e.max_ns as i64,
                e.interval_min_ns as i64,
                e.interval_max_ns as i64,
                buckets,
                counts,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Why `server` may not be pulled from (None: it may), on behalf of `caller` when one
/// registers it. A pull's dblink call runs as optidb's owner, a superuser, whom dblink lets
/// connect without a password: so the server (its host, database and options) and its user
/// mappings must be a superuser's choice, never a registering admin's, and that admin must be
/// allowed to use the server. The owner is checked again before every pull.
fn server_refusal(server: &str, caller: Option<pg_sys::Oid>) -> Option<String> {
    let caller = caller.map(|c| c.to_u32() as i64);
    let (owner_is_superuser, caller_may_use) = rows::first(
        "a source's foreign server",
        "SELECT o.rolsuper AS owner_is_superuser, \
                $2::oid IS NULL \
                OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = $2::oid) \
                OR pg_catalog.has_server_privilege($2::oid, s.oid, 'USAGE') AS caller_may_use \
         FROM pg_catalog.pg_foreign_server s \
         JOIN pg_catalog.pg_roles o ON o.oid = s.srvowner WHERE s.srvname = $1",
        &[server.into(), caller.into()],
        |row| {
            (
                row.opt::<bool>("owner_is_superuser") == Some(true),
                row.opt::<bool>("caller_may_use") == Some(true),
            )
        },
    )?;
    if !owner_is_superuser {
        Some("its owner is not a superuser".into())
    } else if !caller_may_use {
        Some("you have no USAGE privilege on it".into())
    } else {
        None
    }
}

/// Why the session behind `server` is not this database on a standby of this cluster (None:
/// it is). Checked before every pull, so that a server pointing anywhere else (this primary,
/// another database, another cluster) gives nothing, whatever its credentials reach.
fn remote_refusal(server: &str, dblink: &str) -> Option<String> {
    let remote = "SELECT pg_catalog.pg_is_in_recovery(), \
                         (pg_catalog.pg_control_system()).system_identifier, \
                         pg_catalog.current_database()::pg_catalog.text";
    let sql = format!(
        "SELECT r.standby, \
                r.system_identifier OPERATOR(pg_catalog.=) $3 AS same_cluster, \
                r.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()::text \
                    AS same_database \
         FROM {dblink}.dblink($1, $2) AS r(standby bool, system_identifier int8, datname text)"
    );
    // SAFETY: a read of the cluster's identifier, set at startup.
    let system_identifier = unsafe { pg_sys::GetSystemIdentifier() } as i64;
    let flag = |row: &rows::Row, column: &str| row.opt::<bool>(column) == Some(true);
    let (standby, same_cluster, same_database) = rows::first(
        "a source's identity",
        &sql,
        &[server.into(), remote.into(), system_identifier.into()],
        |row| {
            (
                flag(row, "standby"),
                flag(row, "same_cluster"),
                flag(row, "same_database"),
            )
        },
    )
    .unwrap_or_default();
    if !standby {
        Some("it is not a server in recovery (a standby)".into())
    } else if !same_cluster {
        Some("it is not a standby of this cluster (another system identifier)".into())
    } else if !same_database {
        Some("its database is not this one".into())
    } else {
        None
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name != ingest::LOCAL
        && name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// dblink's schema, quoted; raises 55000 when dblink is not installed in this database.
fn dblink_schema() -> String {
    let schema = rows::value::<String>(
        "dblink schema",
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'dblink'",
        &[],
    )
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "the dblink extension is not installed in this database",
            Some(
                "Run CREATE EXTENSION dblink; (contrib) in this database: optidb reaches \
                  standbys through it.",
            ),
        )
    });
    quote_identifier(schema)
}

/// Pull every registered source; returns the statements whose work was recorded. Never
/// raises for a source: its failure is recorded on its row.
pub fn pull_all(view: &PgssView, captured_at: &TimestampWithTimeZone) -> Vec<Pulled> {
    let sources = rows::select(
        "sources",
        "SELECT name, server::text AS server FROM optidb.source ORDER BY name",
        &[],
        |row| (row.get::<String>("name"), row.get::<String>("server")),
    );
    let mut pulled = Vec::new();
    for (name, server) in sources {
        let statements = view.statements();
        let at = *captured_at;
        let (source, srv) = (name.clone(), server.clone());
        let outcome = guarded::run(Some(gucs::statement_limit()), move || {
            // As scan()'s stages: a new subtransaction has no xid, and SPI reads would not see
            // what the pass wrote before it.
            // SAFETY: a guarded call inside the subtransaction of a pass that writes anyway.
            unsafe { pg_sys::GetCurrentTransactionId() };
            pull_one(&source, &srv, &statements, &at)
        });
        let (state, error) = match outcome {
            Ok(Ok(p)) => {
                pulled.extend(p);
                (SourceState::Ok, None)
            }
            Ok(Err(refusal)) => (SourceState::Refused, Some(refusal)),
            Err(failure) => (SourceState::Unreachable, Some(failure.to_string())),
        };
        if let Some(error) = &error {
            warning!("optidb: source \"{name}\" (server \"{server}\") was not pulled: {error}");
        }
        record_state(&name, captured_at, state, error);
    }
    pulled
}

fn record_state(name: &str, at: &TimestampWithTimeZone, state: SourceState, error: Option<String>) {
    Spi::run_with_args(
        "UPDATE optidb.source SET last_tried_at = $2, state = $4, last_error = $3, \
             last_pulled_at = CASE WHEN $3::text IS NULL THEN $2 ELSE last_pulled_at END \
         WHERE name = $1",
        &[
            name.into(),
            (*at).into(),
            error.into(),
            state.as_str().into(),
        ],
    )
    .unwrap_or_else(|e| error!("recording the state of a source failed: {e}"));
}

/// One source's pull: pg_stat_statements deltas, then latency deltas, failures and samples,
/// under its statements. Err: the source failed the identity checks (its state is `refused`,
/// not `unreachable`); nothing was read from it.
fn pull_one(
    source: &str,
    server: &str,
    statements_view: &str,
    captured_at: &TimestampWithTimeZone,
) -> Result<Vec<Pulled>, String> {
    let dblink = dblink_schema();
    if let Some(refusal) = server_refusal(server, None).or_else(|| remote_refusal(server, &dblink))
    {
        return Err(format!(
            "refused: foreign server \"{server}\" cannot be a source: {refusal}"
        ));
    }
    let entries = remote_entries(source, server, &dblink, statements_view);
    let ids = file_statements(source, &entries);
    let owned: Vec<(&PgssEntry, i64)> = entries
        .iter()
        .zip(&ids)
        .filter_map(|(e, id)| Some((e, (*id)?)))
        .collect();

    let mut per_query: HashMap<i64, (Counters, &PgssEntry)> = HashMap::new();
    for (e, id) in &owned {
        let delta = e.current.since(e.baseline.as_ref());
        // Entries come costliest first: a statement's first one gives its text.
        per_query
            .entry(*id)
            .or_insert((Counters::default(), e))
            .0
            .add(&delta);
    }
    let mut deltas: Vec<(i64, Counters)> = per_query
        .iter()
        .map(|(id, (d, _))| (*id, *d))
        .filter(|(_, d)| d.calls > 0)
        .collect();
    deltas.sort_by_key(|(id, _)| *id);
    scan::store_metric_deltas(&deltas, captured_at);
    store_baselines(source, &owned);

    let mut owners: HashMap<(i64, u32), i64> = owned
        .iter()
        .map(|(e, id)| ((e.queryid, e.userid as u32), *id))
        .collect();
    let latency = remote_latency(server, &dblink);
    // Statements that failed there: some never completed, so they have no entry above.
    let failed = source_samples::remote_failures(server, &dblink);
    let failing = source_samples::file_failures(source, &failed, &mut owners, captured_at);
    history::store_source_deltas(source, &latency, &failed, &owners, captured_at);
    let samples = source_samples::remote_samples(server, &dblink);
    sample_store::store_pulled(samples, &failed, &owners);

    let mut pulled: Vec<Pulled> = deltas
        .iter()
        .map(|(id, _)| {
            let e = per_query[id].1;
            Pulled {
                query_id: *id,
                userid: e.userid,
                raw_sql: e.text.clone(),
            }
        })
        .collect();
    for (query_id, userid, raw_sql) in failing {
        if !pulled.iter().any(|p| p.query_id == query_id) {
            pulled.push(Pulled {
                query_id,
                userid,
                raw_sql,
            });
        }
    }
    Ok(pulled)
}

/// In the text of the reads a pull runs on a standby.
const PULL_MARK: &str = "optidb source pull";

/// The standby's pg_stat_statements entries of its copy of this database, costliest first,
/// under this server's role OIDs (by name) and with the baselines of the previous pull.
fn remote_entries(source: &str, server: &str, dblink: &str, view: &str) -> Vec<PgssEntry> {
    // Marked, so that this read (which the standby's pg_stat_statements records too) is not
    // pulled back as the standby's workload.
    let remote = format!(
        "/* {PULL_MARK} */ \
         SELECT s.queryid, a.rolname::pg_catalog.text, s.toplevel, s.query, s.calls, \
                s.total_exec_time, s.rows, s.shared_blks_hit, s.shared_blks_read, \
                s.temp_blks_read, s.temp_blks_written \
         FROM {view} s JOIN pg_catalog.pg_roles a ON a.oid OPERATOR(pg_catalog.=) s.userid \
         WHERE s.dbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database \
                 WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) \
           AND s.queryid IS NOT NULL \
           AND pg_catalog.strpos(s.query, '{PULL_MARK}') OPERATOR(pg_catalog.=) 0"
    );
    let sql = format!(
        "SELECT r.queryid, a.oid::int8 AS userid, r.toplevel, r.query, r.calls, \
                r.total_exec_time, r.rows, r.shared_blks_hit, r.shared_blks_read, \
                r.temp_blks_read, r.temp_blks_written, b.query_id, \
                b.calls AS base_calls, b.total_exec_time AS base_total_exec_time, \
                b.rows AS base_rows, b.shared_blks_hit AS base_shared_blks_hit, \
                b.shared_blks_read AS base_shared_blks_read, \
                b.temp_blks_read AS base_temp_blks_read, \
                b.temp_blks_written AS base_temp_blks_written \
         FROM {dblink}.dblink($1, $2) AS r(queryid int8, role_name text, toplevel bool, \
              query text, calls int8, total_exec_time float8, rows int8, shared_blks_hit int8, \
              shared_blks_read int8, temp_blks_read int8, temp_blks_written int8) \
         JOIN pg_catalog.pg_roles a ON a.rolname = r.role_name \
         LEFT JOIN optidb.source_pgss_state b \
           ON b.source = $3 AND b.queryid = r.queryid AND b.userid = a.oid \
          AND b.toplevel = r.toplevel \
         WHERE r.query !~* $4 \
         ORDER BY r.total_exec_time DESC"
    );
    // SAFETY: a plain global of this backend, set when it connected.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() } as i64;
    rows::select(
        "a source's pg_stat_statements entries",
        &sql,
        &[
            server.into(),
            remote.into(),
            source.into(),
            pgss::SKIP_PATTERN.into(),
        ],
        |row| {
            let query_id: Option<i64> = row.opt("query_id");
            PgssEntry {
                queryid: row.get("queryid"),
                userid: row.get("userid"),
                dbid,
                toplevel: row.get("toplevel"),
                text: row.opt("query").unwrap_or_default(),
                current: pgss::counters(row, ""),
                known: query_id.is_some(),
                query_id,
                fingerprint: None,
                baseline: query_id.map(|_| pgss::counters(row, "base_")),
            }
        },
    )
}

/// The statement of each entry (None: not a statement, such as boilerplate): entries pulled
/// before keep theirs; the others are parsed here and filed as statements of `source`.
fn file_statements(source: &str, entries: &[PgssEntry]) -> Vec<Option<i64>> {
    let mut new: HashMap<(String, i64), NewStatement> = HashMap::new();
    let mut keys: Vec<Option<(String, i64)>> = vec![None; entries.len()];
    for (i, e) in entries.iter().enumerate().filter(|(_, e)| !e.known) {
        if let Some(s) = ingest::analyze(e) {
            let key = (s.fingerprint.clone(), s.userid);
            new.entry(key.clone()).or_insert(s);
            keys[i] = Some(key);
        }
    }
    let statements: Vec<&NewStatement> = new.values().collect();
    ingest::insert_into(source, &statements);
    let ids = ingest::filed_ids_of(source, statements.into_iter());
    entries
        .iter()
        .zip(keys)
        .map(|(e, key)| e.query_id.or_else(|| ids.get(&key?).copied()))
        .collect()
}

/// Each recorded entry's counters now: the baselines of the next pull.
fn store_baselines(source: &str, owned: &[(&PgssEntry, i64)]) {
    let col = |f: &dyn Fn(&PgssEntry) -> i64| owned.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
    Spi::run_with_args(
        "INSERT INTO optidb.source_pgss_state AS s (source, queryid, userid, toplevel, query_id, \
             calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, temp_blks_read, \
             temp_blks_written) \
         SELECT $1, u.queryid, u.userid::oid, u.toplevel, u.query_id, u.calls, u.total, u.rows, \
                u.hit, u.read, u.tread, u.twritten \
         FROM unnest($2::int8[], $3::int8[], $4::bool[], $5::int8[], $6::int8[], \
                     $7::float8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], \
                     $12::int8[]) \
              AS u(queryid, userid, toplevel, query_id, calls, total, rows, hit, read, \
                   tread, twritten) \
         ON CONFLICT (source, queryid, userid, toplevel) DO UPDATE SET \
             query_id = excluded.query_id, calls = excluded.calls, \
             total_exec_time = excluded.total_exec_time, rows = excluded.rows, \
             shared_blks_hit = excluded.shared_blks_hit, \
             shared_blks_read = excluded.shared_blks_read, \
             temp_blks_read = excluded.temp_blks_read, \
             temp_blks_written = excluded.temp_blks_written",
        &[
            source.into(),
            col(&|e| e.queryid).into(),
            col(&|e| e.userid).into(),
            owned
                .iter()
                .map(|(e, _)| e.toplevel)
                .collect::<Vec<_>>()
                .into(),
            owned.iter().map(|(_, id)| *id).collect::<Vec<_>>().into(),
            col(&|e| e.current.calls).into(),
            owned
                .iter()
                .map(|(e, _)| e.current.total_ms)
                .collect::<Vec<_>>()
                .into(),
            col(&|e| e.current.rows).into(),
            col(&|e| e.current.shared_blks_hit).into(),
            col(&|e| e.current.shared_blks_read).into(),
            col(&|e| e.current.temp_blks_read).into(),
            col(&|e| e.current.temp_blks_written).into(),
        ],
    )
    .unwrap_or_else(|e| error!("storing a source's pg_stat_statements baselines failed: {e}"));
}

/// The standby's latency table (optidb.latency_entries() there), under this server's role
/// OIDs (by name). Empty when optidb is not preloaded on the standby.
fn remote_latency(server: &str, dblink: &str) -> Vec<EntryCopy> {
    let remote = "SELECT a.rolname::pg_catalog.text, e.queryid, e.calls, e.errors, \
                         e.error_classes, e.sum_ns, e.min_ns, e.max_ns, e.interval_min_ns, \
                         e.interval_max_ns, e.buckets, e.counts \
                  FROM optidb.latency_entries() e JOIN pg_catalog.pg_roles a \
                    ON a.oid OPERATOR(pg_catalog.=) e.userid::pg_catalog.oid";
    let sql = format!(
        "SELECT r.*, a.oid::int8 AS userid \
         FROM {dblink}.dblink($1, $2) AS r(role_name text, queryid int8, calls int8, \
              errors int8, error_classes jsonb, sum_ns int8, min_ns int8, max_ns int8, \
              interval_min_ns int8, interval_max_ns int8, buckets int4[], counts int8[]) \
         JOIN pg_catalog.pg_roles a ON a.rolname = r.role_name"
    );
    // SAFETY: a plain global of this backend, set when it connected.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    rows::select(
        "a source's latency entries",
        &sql,
        &[server.into(), remote.into()],
        |row| {
            let mut buckets = vec![0u32; BUCKETS];
            let idx: Vec<i32> = row.get("buckets");
            let counts: Vec<i64> = row.get("counts");
            for (b, c) in idx.iter().zip(&counts) {
                if let Some(slot) = usize::try_from(*b).ok().and_then(|b| buckets.get_mut(b)) {
                    *slot = *c as u32;
                }
            }
            let classes: HashMap<String, u64> = row.json("error_classes").unwrap_or_default();
            let bits = |c: &str| row.get::<i64>(c) as u64;
            EntryCopy {
                key: Key {
                    queryid: row.get::<i64>("queryid") as u64,
                    userid: row.get::<i64>("userid") as u32,
                    dbid,
                },
                calls: bits("calls"),
                errors: bits("errors"),
                error_classes: classes.into_iter().collect(),
                sum_ns: bits("sum_ns"),
                min_ns: bits("min_ns"),
                max_ns: bits("max_ns"),
                interval_min_ns: bits("interval_min_ns"),
                interval_max_ns: bits("interval_max_ns"),
                buckets,
                slowest: None,
            }
        },
    )
}
