//! Statements that fail (time out, are cancelled, raise an error) in a snapshot or scan pass
//! (src/postgres/ingest.rs). pg_stat_statements records only completed statements, so a
//! statement that never completes has no entry there; optidb's hooks keep its text,
//! search_path and failures (src/postgres/latency/failed.rs), and here it becomes a statement
//! like any other:
//! - each failure drained from shared memory joins the statement of its (queryid, role): the
//!   one of a pg_stat_statements entry, or the one it was filed under before
//!   (optidb.pgss_state), or the one its own text's fingerprint names (filed or not);
//! - its cost for the choice of the `top` statements (and the order plans are captured in) is
//!   the time until failure of its failures: this pass's, and for the cumulative rank also
//!   those optidb stored before (optidb.latency.failed_ms), so a statement that only ever
//!   times out competes with what it really costs, count x time until failure;
//! - a statement with no entry at all is filed from its normalized text, and its queryid is
//!   listed under it in optidb.pgss_state (with zero counters), so its latency history and
//!   samples are stored like any other statement's (pgss::owners).

use crate::postgres::ingest::{filed_ids, Group, NewStatement, Owner};
use crate::postgres::latency::failed::{self, Failed};
use crate::postgres::pgss::{self, PgssEntry};
use crate::postgres::rows;
use optidb_core::selection::Candidate;
use optidb_core::statement::{self, StatementKind};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::collections::HashMap;

fn dbid() -> u32 {
    // SAFETY: the current database's oid, set at connection.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// The failures of this database since the previous pass.
pub fn drain() -> Vec<Failed> {
    failed::drain(dbid())
}

/// This database's failures that found no room in the shared-memory slots since the previous
/// pass, per role name, taken out of the store (optidb.scan_log.failures_dropped).
pub fn drain_dropped() -> serde_json::Value {
    by_role_name(failed::drain_dropped(dbid()))
}

/// The same, left in the store: what the current interval dropped so far (optidb.health()).
pub fn dropped_so_far() -> serde_json::Value {
    by_role_name(failed::peek_dropped(dbid()))
}

/// {"role name": failures}: a role since dropped by its oid, role 0 as "other roles" (the
/// roles beyond those counted apart).
fn by_role_name(counts: Vec<(u32, u64)>) -> serde_json::Value {
    if counts.is_empty() {
        return serde_json::json!({});
    }
    let (roles, failures): (Vec<pg_sys::Oid>, Vec<i64>) = counts
        .into_iter()
        .map(|(role, n)| (pg_sys::Oid::from(role), n as i64))
        .unzip();
    rows::first(
        "failures dropped per role",
        "SELECT COALESCE(pg_catalog.jsonb_object_agg( \
                    COALESCE(r.rolname::pg_catalog.text, \
                             CASE WHEN d.u OPERATOR(pg_catalog.=) 0 THEN 'other roles' \
                                  ELSE d.u::pg_catalog.text END), d.n), '{}') AS by_role \
         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), \
                         pg_catalog.unnest($2::pg_catalog.int8[])) AS d(u, n) \
         LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) d.u",
        &[roles.into(), failures.into()],
        |row| row.get::<pgrx::JsonB>("by_role").0,
    )
    .unwrap_or_else(|| serde_json::json!({}))
}

/// A failed statement as the parser sees its text (None: no text, not a statement of the
/// workload, or text the parser rejects: it cannot be filed without a pg_stat_statements
/// entry).
pub(crate) fn analyze(f: &Failed) -> Option<NewStatement> {
    let info = statement::analyze(f.text.as_deref()?).ok()?;
    if info.kind == StatementKind::Boilerplate || info.touches_optidb {
        return None;
    }
    Some(NewStatement {
        fingerprint: info.fingerprint,
        userid: f.key.userid as i64,
        dbid: f.key.dbid as i64,
        kind: info.kind.as_str().to_string(),
        // As pg_stat_statements would show it: literals are placeholders.
        raw_sql: info.normalized.clone(),
        norm_sql: Some(info.normalized),
        parse_error: None,
        tables: info.tables,
    })
}

/// Add the failures to the pass's statements (new ones for statements that only failed), and
/// the failure time optidb stored before to every statement's cumulative cost. Returns the
/// statement of each failure (None: it cannot be filed).
pub fn add_to_groups(
    groups: &mut Vec<Group>,
    entries: &[PgssEntry],
    owners: &[Option<Owner>],
    drained: &[Failed],
) -> Vec<Option<Owner>> {
    let of_entry: HashMap<(i64, u32), &Owner> = entries
        .iter()
        .zip(owners)
        .filter_map(|(e, o)| Some(((e.queryid, e.userid as u32), o.as_ref()?)))
        .collect();
    let mapped = pgss::owners(dbid());
    let key = |f: &Failed| (f.key.queryid as i64, f.key.userid);
    let mut parsed: HashMap<usize, NewStatement> = drained
        .iter()
        .enumerate()
        .filter(|(_, f)| !of_entry.contains_key(&key(f)) && !mapped.contains_key(&key(f)))
        .filter_map(|(i, f)| Some((i, analyze(f)?)))
        .collect();
    let filed = filed_ids(parsed.values());
    let mut index: HashMap<Owner, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.owner.clone(), i))
        .collect();
    let mut failure_owners = Vec::with_capacity(drained.len());
    for (i, f) in drained.iter().enumerate() {
        let owner = if let Some(o) = of_entry.get(&key(f)) {
            (*o).clone()
        } else if let Some(id) = mapped.get(&key(f)) {
            Owner::Filed(*id)
        } else if let Some(s) = parsed.get(&i) {
            match filed.get(&(s.fingerprint.clone(), s.userid)) {
                Some(id) => Owner::Filed(*id),
                None => Owner::Unfiled(s.fingerprint.clone(), s.userid),
            }
        } else {
            failure_owners.push(None);
            continue;
        };
        let g = *index.entry(owner.clone()).or_insert_with(|| {
            groups.push(new_group(owner.clone(), f.key.userid));
            groups.len() - 1
        });
        let group = &mut groups[g];
        if group.entries.is_empty() && group.failing.is_none() {
            group.failing = parsed.remove(&i);
        }
        let ms = f.sum_us as f64 / 1000.0;
        group.candidate.interval_ms += ms;
        group.candidate.interval_calls += f.failures as i64;
        group.candidate.cumulative_ms += ms;
        failure_owners.push(Some(owner));
    }
    add_stored(groups, &mut index);
    failure_owners
}

fn new_group(owner: Owner, role: u32) -> Group {
    Group {
        owner,
        candidate: Candidate {
            role,
            interval_ms: 0.0,
            interval_calls: 0,
            cumulative_ms: 0.0,
        },
        entries: Vec::new(),
        failing: None,
    }
}

/// Filed statements' stored failure time (optidb.latency.failed_ms) joins their cumulative
/// cost; a filed statement with stored failures and no entry in this pass is a candidate too
/// (with its filed text), as a pg_stat_statements entry idle in the interval is.
fn add_stored(groups: &mut Vec<Group>, index: &mut HashMap<Owner, usize>) {
    // Filed statements of this pass with neither an entry nor a text yet.
    let textless: Vec<i64> = groups
        .iter()
        .filter(|g| g.entries.is_empty() && g.failing.is_none())
        .filter_map(|g| match g.owner {
            Owner::Filed(id) => Some(id),
            Owner::Unfiled(..) => None,
        })
        .collect();
    let stored = rows::select(
        "stored failures",
        "SELECT q.id, q.userid::int8 AS userid, q.raw_sql, q.fingerprint, q.kind, \
                COALESCE(f.failed_ms, 0) AS failed_ms \
         FROM optidb.query q \
         LEFT JOIN (SELECT query_id, sum(failed_ms) AS failed_ms FROM optidb.latency \
                    WHERE failed_ms > 0 GROUP BY query_id) f ON f.query_id = q.id \
         WHERE q.dbid = $1::int8::oid AND q.userid IS NOT NULL AND q.raw_sql IS NOT NULL \
           AND (f.failed_ms IS NOT NULL OR q.id = ANY ($2))",
        &[(dbid() as i64).into(), textless.into()],
        |row| {
            (
                row.get::<i64>("id"),
                row.get::<f64>("failed_ms"),
                NewStatement {
                    fingerprint: row.get("fingerprint"),
                    userid: row.get("userid"),
                    dbid: dbid() as i64,
                    kind: row.get("kind"),
                    raw_sql: row.get("raw_sql"),
                    norm_sql: None,
                    parse_error: None,
                    tables: Vec::new(),
                },
            )
        },
    );
    for (id, failed_ms, statement) in stored {
        let owner = Owner::Filed(id);
        let g = *index.entry(owner.clone()).or_insert_with(|| {
            groups.push(new_group(owner, statement.userid as u32));
            groups.len() - 1
        });
        let group = &mut groups[g];
        group.candidate.cumulative_ms += failed_ms;
        if group.entries.is_empty() && group.failing.is_none() {
            group.failing = Some(statement);
        }
    }
}

/// List the queryid of each failure whose statement is filed under it (optidb.pgss_state, with
/// zero counters when pg_stat_statements has no entry for it, and optidb.query.queryids), so
/// its latency history and samples are stored with that statement.
pub fn map_keys(
    owners: &[Option<Owner>],
    ids: &HashMap<Owner, i64>,
    drained: &[Failed],
    seen_at: &TimestampWithTimeZone,
) {
    let mapped: Vec<(&Failed, i64)> = drained
        .iter()
        .zip(owners)
        .filter_map(|(f, o)| Some((f, *ids.get(o.as_ref()?)?)))
        .collect();
    if mapped.is_empty() {
        return;
    }
    let col = |get: &dyn Fn(&(&Failed, i64)) -> i64| mapped.iter().map(get).collect::<Vec<_>>();
    Spi::run_with_args(
        "WITH u AS ( \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) \
                 AS u(queryid, userid, dbid, query_id)), \
         state AS ( \
             INSERT INTO optidb.pgss_state AS s (queryid, userid, dbid, toplevel, query_id, \
                 calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, \
                 temp_blks_read, temp_blks_written, seen_at) \
             SELECT u.queryid, u.userid::oid, u.dbid::oid, true, u.query_id, \
                    0, 0, 0, 0, 0, 0, 0, $5 FROM u \
             ON CONFLICT (queryid, userid, dbid, toplevel) DO UPDATE \
                 SET query_id = COALESCE(s.query_id, excluded.query_id)) \
         UPDATE optidb.query q SET last_seen = $5, \
             queryids = CASE WHEN u.queryid = ANY (q.queryids) THEN q.queryids \
                             ELSE q.queryids || u.queryid END \
         FROM (SELECT DISTINCT ON (query_id) * FROM u) u WHERE q.id = u.query_id",
        &[
            col(&|(f, _)| f.key.queryid as i64).into(),
            col(&|(f, _)| f.key.userid as i64).into(),
            col(&|(f, _)| f.key.dbid as i64).into(),
            col(&|(_, id)| *id).into(),
            (*seen_at).into(),
        ],
    )
    .unwrap_or_else(|e| error!("filing failed statements failed: {e}"));
}
