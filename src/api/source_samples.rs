//! Samples and failures of a standby (issue 26), for a primary's pull (src/api/sources.rs).
//!
//! optidb's hooks run on a standby too: they sample executions (search_path, parameter values:
//! src/postgres/latency/samples.rs) and keep the statements that failed (timed out, were
//! cancelled: src/postgres/latency/failed.rs) in the standby's shared memory. No snapshot runs
//! there (it is read-only), so the pull drains them: `optidb.sample_entries()` and
//! `optidb.failure_entries()` read and empty this database's slots, on a standby only (on a
//! primary, its own snapshot drains them). What is drained by a pull that then fails is lost,
//! as a snapshot's would be.
//!
//! On the primary, samples join the source's statements and are planned with their real
//! search_path and values; a statement that only ever failed there (no pg_stat_statements
//! entry) is filed from its text as the local path files one (src/postgres/failing.rs), with
//! its failures in its latency history.

use crate::postgres::failing;
use crate::postgres::ingest::{self, NewStatement};
use crate::postgres::latency::failed::{self, Failed};
use crate::postgres::latency::samples::{self, Param, Sample, SearchPath, Value};
use crate::postgres::latency::table::Key;
use crate::postgres::rows;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::collections::HashMap;

/// This database's slots, drained: on a standby only (None on a primary).
fn standby_dbid() -> Option<u32> {
    // SAFETY: plain reads: a backend global set at connection, and shared state.
    let (dbid, standby) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::RecoveryInProgress()) };
    standby.then_some(dbid)
}

fn oids(list: &[u32]) -> Vec<i64> {
    list.iter().map(|o| *o as i64).collect()
}

/// The sampled executions of this database since the previous call, drained from shared
/// memory, on a standby (a primary's snapshot drains its own: nothing here).
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn sample_entries() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(userid, i64),
        name!(started_us, i64),
        name!(elapsed_ns, i64),
        name!(slowest, bool),
        name!(typical, bool),
        name!(search_path, Option<String>),
        name!(search_path_oids, Option<Vec<i64>>),
        name!(sql_text, Option<String>),
        name!(param_types, Vec<i64>),
        name!(param_values, Vec<Option<String>>),
        name!(param_unknown, Vec<bool>),
        name!(relation_oids, Vec<i64>),
    ),
> {
    let drained = standby_dbid().map(samples::drain).unwrap_or_default();
    TableIterator::new(drained.into_iter().map(|s| {
        let values = s.params.iter().map(|p| match &p.value {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        });
        (
            s.key.queryid as i64,
            s.key.userid as i64,
            s.started_us,
            s.elapsed_ns as i64,
            s.slowest,
            s.typical,
            s.search_path.as_ref().map(|p| p.text.clone()),
            s.search_path.as_ref().map(|p| oids(&p.oids)),
            s.text,
            s.params.iter().map(|p| p.type_oid as i64).collect(),
            values.collect(),
            s.params.iter().map(|p| p.value == Value::Unknown).collect(),
            oids(&s.relations),
        )
    }))
}

/// The statements of this database that failed since the previous call (text, search_path,
/// failures, time until failure), drained from shared memory, on a standby.
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn failure_entries() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(userid, i64),
        name!(failures, i64),
        name!(timeouts, i64),
        name!(sum_us, i64),
        name!(max_us, i64),
        name!(sqlstate, String),
        name!(started_us, i64),
        name!(sql_text, Option<String>),
        name!(replayable, bool),
        name!(search_path_oids, Vec<i64>),
    ),
> {
    let drained = standby_dbid().map(failed::drain).unwrap_or_default();
    TableIterator::new(drained.into_iter().map(|f| {
        (
            f.key.queryid as i64,
            f.key.userid as i64,
            f.failures as i64,
            f.timeouts as i64,
            f.sum_us,
            f.max_us,
            f.sqlstate,
            f.started_us,
            f.text,
            f.replayable,
            oids(&f.path_oids),
        )
    }))
}

/// Run `remote` (naming the standby's role as `role_name`) on the standby behind `server`,
/// keeping the rows whose role exists here, under this server's role OID.
fn remote_rows<T>(
    what: &str,
    server: &str,
    dblink: &str,
    remote: &str,
    columns: &str,
    map: impl Fn(&rows::Row, Key) -> T,
) -> Vec<T> {
    let sql = format!(
        "SELECT r.*, a.oid::int8 AS role_oid \
         FROM {dblink}.dblink($1, $2) AS r(role_name text, {columns}) \
         JOIN pg_catalog.pg_roles a ON a.rolname = r.role_name"
    );
    // SAFETY: a plain global of this backend, set when it connected.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    rows::select(what, &sql, &[server.into(), remote.into()], |row| {
        let key = Key {
            queryid: row.get::<i64>("queryid") as u64,
            userid: row.get::<i64>("role_oid") as u32,
            dbid,
        };
        map(row, key)
    })
}

fn u32s(list: Vec<i64>) -> Vec<u32> {
    list.into_iter().map(|o| o as u32).collect()
}

/// The standby's sampled executions since the previous pull (its sample_entries()).
pub fn remote_samples(server: &str, dblink: &str) -> Vec<Sample> {
    let remote = "SELECT a.rolname::pg_catalog.text, e.queryid, e.started_us, e.elapsed_ns, \
                         e.slowest, e.typical, e.search_path, e.search_path_oids, e.sql_text, \
                         e.param_types, e.param_values, e.param_unknown, e.relation_oids \
                  FROM optidb.sample_entries() e JOIN pg_catalog.pg_roles a \
                    ON a.oid OPERATOR(pg_catalog.=) e.userid::pg_catalog.oid";
    let columns = "queryid int8, started_us int8, elapsed_ns int8, slowest bool, typical bool, \
                   search_path text, search_path_oids int8[], sql_text text, \
                   param_types int8[], param_values text[], param_unknown bool[], \
                   relation_oids int8[]";
    remote_rows(
        "a source's samples",
        server,
        dblink,
        remote,
        columns,
        |row, key| {
            let types: Vec<i64> = row.get("param_types");
            let values: Vec<Option<String>> = row.get("param_values");
            let unknown: Vec<bool> = row.get("param_unknown");
            let params = types
                .iter()
                .zip(values)
                .zip(unknown)
                .map(|((t, v), unknown)| Param {
                    type_oid: *t as u32,
                    value: match (unknown, v) {
                        (true, _) => Value::Unknown,
                        (false, Some(text)) => Value::Text(text),
                        (false, None) => Value::Null,
                    },
                })
                .collect();
            let path: Option<String> = row.opt("search_path");
            let path_oids: Vec<i64> = row.opt("search_path_oids").unwrap_or_default();
            Sample {
                key,
                elapsed_ns: row.get::<i64>("elapsed_ns") as u64,
                started_us: row.get("started_us"),
                slowest: row.get("slowest"),
                typical: row.get("typical"),
                search_path: path.map(|text| SearchPath {
                    text,
                    oids: u32s(path_oids),
                }),
                text: row.opt("sql_text"),
                params,
                relations: u32s(row.get("relation_oids")),
            }
        },
    )
}

/// The standby's failed statements since the previous pull (its failure_entries()).
pub fn remote_failures(server: &str, dblink: &str) -> Vec<Failed> {
    let remote = "SELECT a.rolname::pg_catalog.text, e.queryid, e.failures, e.timeouts, \
                         e.sum_us, e.max_us, e.sqlstate, e.started_us, e.sql_text, \
                         e.replayable, e.search_path_oids \
                  FROM optidb.failure_entries() e JOIN pg_catalog.pg_roles a \
                    ON a.oid OPERATOR(pg_catalog.=) e.userid::pg_catalog.oid";
    let columns = "queryid int8, failures int8, timeouts int8, sum_us int8, max_us int8, \
                   sqlstate text, started_us int8, sql_text text, replayable bool, \
                   search_path_oids int8[]";
    remote_rows(
        "a source's failed statements",
        server,
        dblink,
        remote,
        columns,
        |row, key| Failed {
            key,
            failures: row.get::<i64>("failures") as u64,
            timeouts: row.get::<i64>("timeouts") as u64,
            sum_us: row.get("sum_us"),
            max_us: row.get("max_us"),
            sqlstate: row.get("sqlstate"),
            started_us: row.get("started_us"),
            text: row.opt("sql_text"),
            replayable: row.get("replayable"),
            path_oids: u32s(row.get("search_path_oids")),
        },
    )
}

/// Give each failure of `failed` its statement of `source` in `owners`: the one of its
/// pg_stat_statements entry there, or the one it was filed under before, or one filed now
/// from its text (with a zero baseline in optidb.source_pgss_state, so later pulls find it).
/// Returns the statements that failed in this pull and that have a text to plan; each is
/// marked seen at `seen_at` (a statement that never completes has no counters to do it).
pub fn file_failures(
    source: &str,
    failed: &[Failed],
    owners: &mut HashMap<(i64, u32), i64>,
    seen_at: &TimestampWithTimeZone,
) -> Vec<(i64, i64, String)> {
    let key = |f: &Failed| (f.key.queryid as i64, f.key.userid);
    if failed.iter().any(|f| !owners.contains_key(&key(f))) {
        owners.extend(filed_before(source));
    }
    let parsed: Vec<(&Failed, NewStatement)> = failed
        .iter()
        .filter(|f| !owners.contains_key(&key(f)))
        .filter_map(|f| Some((f, failing::analyze(f)?)))
        .collect();
    let statements: Vec<&NewStatement> = parsed.iter().map(|(_, s)| s).collect();
    ingest::insert_into(source, &statements);
    let ids = ingest::filed_ids_of(source, statements.into_iter());
    let new: Vec<(i64, i64, i64)> = parsed
        .iter()
        .filter_map(|(f, s)| {
            let id = ids.get(&(s.fingerprint.clone(), s.userid))?;
            Some((key(f).0, key(f).1 as i64, *id))
        })
        .collect();
    map_keys(source, &new);
    owners.extend(new.iter().map(|(q, u, id)| ((*q, *u as u32), *id)));
    let failing: Vec<i64> = failed
        .iter()
        .filter_map(|f| owners.get(&key(f)).copied())
        .collect();
    rows::select(
        "a source's failed statements",
        "WITH seen AS (UPDATE optidb.query SET last_seen = $2 WHERE id = ANY ($1) \
                       RETURNING id, userid, raw_sql) \
         SELECT id, userid::int8 AS userid, raw_sql FROM seen \
         WHERE raw_sql IS NOT NULL ORDER BY id",
        &[failing.into(), (*seen_at).into()],
        |row| (row.get("id"), row.get("userid"), row.get("raw_sql")),
    )
}

/// The statements of `source` its earlier pulls filed, by (queryid, role).
fn filed_before(source: &str) -> HashMap<(i64, u32), i64> {
    rows::select(
        "a source's filed statements",
        "SELECT DISTINCT ON (queryid, userid) queryid, userid::int8 AS userid, query_id \
         FROM optidb.source_pgss_state WHERE source = $1 AND query_id IS NOT NULL",
        &[source.into()],
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

/// A zero baseline for each statement filed from a failure alone (no pg_stat_statements entry
/// on the standby): later pulls map its queryid to it, and its first completed execution
/// counts from zero.
fn map_keys(source: &str, new: &[(i64, i64, i64)]) {
    if new.is_empty() {
        return;
    }
    let col = |f: fn(&(i64, i64, i64)) -> i64| new.iter().map(f).collect::<Vec<_>>();
    Spi::run_with_args(
        "INSERT INTO optidb.source_pgss_state (source, queryid, userid, toplevel, query_id, \
             calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, temp_blks_read, \
             temp_blks_written) \
         SELECT $1, u.queryid, u.userid::oid, true, u.query_id, 0, 0, 0, 0, 0, 0, 0 \
         FROM unnest($2::int8[], $3::int8[], $4::int8[]) AS u(queryid, userid, query_id) \
         ON CONFLICT (source, queryid, userid, toplevel) DO NOTHING",
        &[
            source.into(),
            col(|r| r.0).into(),
            col(|r| r.1).into(),
            col(|r| r.2).into(),
        ],
    )
    .unwrap_or_else(|e| error!("filing a source's failed statements failed: {e}"));
}
