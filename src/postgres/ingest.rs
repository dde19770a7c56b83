//! Which pg_stat_statements entries one snapshot or scan records, and under which statement.
//!
//! Every entry of the database is read and grouped into its statement first (one statement =
//! one fingerprint per role: an IN list of every length, the same text with other literals),
//! and then every statement that ran since it was last recorded is recorded (0.7.0, issue 27:
//! a statement that becomes slow later has its history from before), and at most `top` of
//! them are chosen for plans (optidb_core::selection: by what they cost since optidb last
//! recorded them, with a share for each role). So one statement's many entries count once, and
//! no role can push the others' statements out of the plans, whatever it runs.
//!
//! An entry is parsed once, the first time it is seen: optidb.pgss_state remembers it, with the
//! fingerprint of its statement until that statement is filed in optidb.query, which happens
//! when it is first recorded (so optidb.query holds the statements that ran while optidb
//! recorded, not every text pg_stat_statements ever held).
//!
//! Statements that never complete have no pg_stat_statements entry (it records completed
//! statements only). optidb's hooks keep their text, search_path and failures
//! (src/postgres/latency/failed.rs); each pass drains them and they compete for the `top` slots
//! like any statement (src/postgres/failing.rs): their cost is the time until failure of their
//! failures (this pass's, plus what optidb stored before), and a chosen one is filed from its
//! own text, so it has its optidb.query row, its history and its plans even if it never
//! completes.

use crate::postgres::failing;
use crate::postgres::latency::failed::Failed;
use crate::postgres::pgss::{self, Counters, PgssEntry};
use crate::postgres::rows;
use optidb_core::parser;
use optidb_core::selection::{self, Candidate};
use optidb_core::statement::{self, StatementKind};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use std::collections::HashMap;

/// A statement recorded by a pass, with its entries (costliest first).
pub struct Chosen<'a> {
    pub query_id: i64,
    pub userid: i64,
    /// Among the `top` chosen for plans (the others only have their deltas stored).
    pub top: bool,
    /// Empty for a statement that only failed (no pg_stat_statements entry).
    pub entries: Vec<&'a PgssEntry>,
    /// The text to plan: its costliest entry's, or for a statement that only failed, its
    /// normalized text (as pg_stat_statements would show it).
    pub raw_sql: String,
}

/// What a pass records: its statements (every one that ran since it was last recorded, and
/// the `top`), costliest (by pg_stat_statements' total time plus
/// the time until failure of their failures) first, how many of them were filed for the first
/// time, and the failures drained from shared memory (their history is stored with the
/// latency deltas, src/postgres/latency/history.rs).
pub struct Selection<'a> {
    pub chosen: Vec<Chosen<'a>>,
    pub new_queries: usize,
    pub failed: Vec<Failed>,
}

/// The statement an entry belongs to, as far as a pass knows.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    /// Filed in optidb.query.
    Filed(i64),
    /// Not filed yet: its fingerprint and role.
    Unfiled(String, i64),
}

/// Choose the statements this pass records among every entry of `entries` (as
/// pgss::read_all returns them), file those not filed yet, and remember the entries seen for
/// the first time.
pub fn select<'a>(
    entries: &'a [PgssEntry],
    top: usize,
    seen_at: &TimestampWithTimeZone,
) -> Selection<'a> {
    let (owners, mut parsed) = identify(entries);
    let mut groups = group(entries, &owners);
    let failed = failing::drain();
    let failure_owners = failing::add_to_groups(&mut groups, entries, &owners, &failed);
    let candidates: Vec<Candidate> = groups.iter().map(|g| g.candidate.clone()).collect();
    let mut in_top = vec![false; groups.len()];
    for i in selection::choose(&candidates, top) {
        in_top[i] = true;
    }
    let mut chosen: Vec<(&Group, bool)> = groups
        .iter()
        .zip(&in_top)
        .filter(|(g, top)| **top || g.candidate.active())
        .map(|(g, top)| (g, *top))
        .collect();
    // The slowest first, as pg_stat_statements (and bottlenecks(), over the stored history)
    // rank them, not those that happened to run since the worker's last snapshot. (Which of
    // them get plans is decided over the stored history: optidb_core::plan_targets.)
    chosen.sort_by(|(a, _), (b, _)| {
        b.candidate
            .cumulative_ms
            .total_cmp(&a.candidate.cumulative_ms)
    });
    let top_of: HashMap<&Owner, bool> = chosen.iter().map(|(g, t)| (&g.owner, *t)).collect();
    let chosen: Vec<&Group> = chosen.into_iter().map(|(g, _)| g).collect();

    let (ids, new_queries) = file(entries, &chosen, &mut parsed);
    failing::map_keys(&failure_owners, &ids, &failed, seen_at);
    // Entries of chosen statements get their row when their deltas are stored.
    let mut recorded = vec![false; entries.len()];
    for &i in chosen.iter().flat_map(|g| &g.entries) {
        recorded[i] = true;
    }
    let first_seen: Vec<(&PgssEntry, Option<&str>)> = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| !e.known && !recorded[*i])
        .map(|(i, e)| (e, parsed.get(&i).map(|s| s.fingerprint.as_str())))
        .collect();
    pgss::remember(&first_seen, seen_at);
    pgss::forget_gone(entries);

    let chosen = chosen
        .into_iter()
        .filter_map(|g| {
            let entries: Vec<&PgssEntry> = g.entries.iter().map(|&i| &entries[i]).collect();
            let raw_sql = match entries.first() {
                Some(e) => e.text.clone(),
                None => g.failing.as_ref()?.raw_sql.clone(),
            };
            Some(Chosen {
                query_id: ids.get(&g.owner).copied()?,
                userid: g.candidate.role as i64,
                top: top_of[&g.owner],
                entries,
                raw_sql,
            })
        })
        .collect();
    Selection {
        chosen,
        new_queries,
        failed,
    }
}

/// A statement seen for the first time, as the parser sees it.
pub(crate) struct NewStatement {
    pub fingerprint: String,
    pub userid: i64,
    pub dbid: i64,
    pub kind: String,
    pub raw_sql: String,
    pub norm_sql: Option<String>,
    pub parse_error: Option<String>,
    pub tables: Vec<String>,
}

/// Parse an entry. None for session boilerplate and for statements about optidb itself, which
/// are not recorded at all. Text the parser rejects is still a statement (fingerprint
/// `queryid:N`), with the parse error, so it is visible rather than silently lost.
pub(crate) fn analyze(entry: &PgssEntry) -> Option<NewStatement> {
    let (fingerprint, kind, norm_sql, parse_error, tables) = match statement::analyze(&entry.text) {
        Ok(info) if info.kind == StatementKind::Boilerplate || info.touches_optidb => return None,
        Ok(info) => (
            info.fingerprint,
            info.kind.as_str().to_string(),
            Some(info.normalized),
            None,
            info.tables,
        ),
        Err(e) => (
            format!("queryid:{}", entry.queryid),
            "unparsed".to_string(),
            None,
            Some(e.0),
            Vec::new(),
        ),
    };
    Some(NewStatement {
        fingerprint,
        userid: entry.userid,
        dbid: entry.dbid,
        kind,
        raw_sql: entry.text.clone(),
        norm_sql,
        parse_error,
        tables,
    })
}

/// Parse the entries at `indices`, all on one parsing thread (a thread per call would cost
/// more than the parsing). Returns what each is (None: not a statement).
fn analyze_all(entries: &[PgssEntry], indices: &[usize]) -> Vec<(usize, Option<NewStatement>)> {
    let work = || {
        indices
            .iter()
            .map(|&i| (i, analyze(&entries[i])))
            .collect::<Vec<_>>()
    };
    parser::batch(work).unwrap_or_else(|_| work())
}

/// Every entry's statement (None: not a statement), and the entries parsed in this pass (those
/// seen for the first time) with what they are.
fn identify(entries: &[PgssEntry]) -> (Vec<Option<Owner>>, HashMap<usize, NewStatement>) {
    let mut owners: Vec<Option<Owner>> = entries
        .iter()
        .map(|e| match (e.query_id, &e.fingerprint) {
            (Some(id), _) => Some(Owner::Filed(id)),
            (None, Some(f)) => Some(Owner::Unfiled(f.clone(), e.userid)),
            (None, None) => None,
        })
        .collect();
    let unknown: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].known).collect();
    let parsed: HashMap<usize, NewStatement> = analyze_all(entries, &unknown)
        .into_iter()
        .filter_map(|(i, s)| Some((i, s?)))
        .collect();
    // A new variant of a statement filed before belongs to it.
    let filed = filed_ids(parsed.values());
    for (&i, s) in &parsed {
        let key = (s.fingerprint.clone(), s.userid);
        owners[i] = Some(match filed.get(&key) {
            Some(&id) => Owner::Filed(id),
            None => Owner::Unfiled(key.0, key.1),
        });
    }
    (owners, parsed)
}

/// The ids of the statements among `statements` that are filed, by (fingerprint, userid).
pub(crate) fn filed_ids<'a>(
    statements: impl Iterator<Item = &'a NewStatement>,
) -> HashMap<(String, i64), i64> {
    filed_ids_of(LOCAL, statements)
}

/// This server's own statements' source (optidb.query.source); a replica's is the name it was
/// registered under (src/postgres/sources.rs).
pub const LOCAL: &str = "local";

/// `filed_ids` among the statements of `source`.
pub(crate) fn filed_ids_of<'a>(
    source: &str,
    statements: impl Iterator<Item = &'a NewStatement>,
) -> HashMap<(String, i64), i64> {
    let (fingerprints, (userids, dbids)): (Vec<String>, (Vec<i64>, Vec<i64>)) = statements
        .map(|s| (s.fingerprint.clone(), (s.userid, s.dbid)))
        .unzip();
    if fingerprints.is_empty() {
        return HashMap::new();
    }
    rows::select(
        "filed statements",
        "SELECT q.id, q.fingerprint, q.userid::int8 AS userid \
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(fingerprint, userid, dbid) \
         JOIN optidb.query q ON q.fingerprint = u.fingerprint AND q.userid = u.userid::oid \
                            AND q.dbid = u.dbid::oid AND q.source = $4",
        &[
            fingerprints.into(),
            userids.into(),
            dbids.into(),
            source.into(),
        ],
        |row| {
            (
                (row.get::<String>("fingerprint"), row.get::<i64>("userid")),
                row.get::<i64>("id"),
            )
        },
    )
    .into_iter()
    .collect()
}

/// One statement's entries in a pass and what they cost.
pub(crate) struct Group {
    pub owner: Owner,
    pub candidate: Candidate,
    /// Indices into the pass's entries, costliest first.
    pub entries: Vec<usize>,
    /// For a statement that has no entry, only failures: what it is (src/postgres/failing.rs).
    pub failing: Option<NewStatement>,
}

/// Sum each statement's entries. Since each entry was last recorded: what recording the
/// statement now would store.
///
/// Entries of statements a pass does not record (they did not run since they were last
/// recorded) keep their stored baseline (or have none yet): their next run is recorded by the
/// next pass.
fn group(entries: &[PgssEntry], owners: &[Option<Owner>]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<&Owner, usize> = HashMap::new();
    for (i, (entry, owner)) in entries.iter().zip(owners).enumerate() {
        let Some(owner) = owner else { continue };
        let g = *index.entry(owner).or_insert_with(|| {
            groups.push(Group {
                owner: owner.clone(),
                candidate: Candidate {
                    role: entry.userid as u32,
                    interval_ms: 0.0,
                    interval_calls: 0,
                    cumulative_ms: 0.0,
                },
                entries: Vec::new(),
                failing: None,
            });
            groups.len() - 1
        });
        let delta: Counters = entry.current.since(entry.baseline.as_ref());
        let c = &mut groups[g].candidate;
        c.interval_ms += delta.total_ms;
        c.interval_calls += delta.calls;
        c.cumulative_ms += entry.current.total_ms;
        groups[g].entries.push(i);
    }
    groups
}

/// File the chosen statements not filed yet and list every queryid of the chosen ones under
/// their statement. Returns the id of every chosen statement and how many were new.
fn file(
    entries: &[PgssEntry],
    chosen: &[&Group],
    parsed: &mut HashMap<usize, NewStatement>,
) -> (HashMap<Owner, i64>, usize) {
    let mut ids: HashMap<Owner, i64> = HashMap::new();
    let mut unfiled: Vec<&Group> = Vec::new();
    for g in chosen {
        match g.owner {
            Owner::Filed(id) => {
                ids.insert(g.owner.clone(), id);
            }
            Owner::Unfiled(..) => unfiled.push(g),
        }
    }
    // A statement is filed with the text of its costliest entry, parsed again if it was parsed
    // by an earlier pass (entries seen before, not recorded until now).
    let reparse: Vec<usize> = unfiled
        .iter()
        .filter_map(|g| g.entries.first().copied())
        .filter(|i| !parsed.contains_key(i))
        .collect();
    for (i, s) in analyze_all(entries, &reparse) {
        if let Some(s) = s {
            parsed.insert(i, s);
        }
    }
    let new: Vec<&NewStatement> = unfiled
        .iter()
        .filter_map(|g| match g.entries.first() {
            Some(i) => parsed.get(i),
            None => g.failing.as_ref(),
        })
        .collect();
    let inserted = insert(&new);
    for (key, id) in filed_ids(new.into_iter()) {
        ids.insert(Owner::Unfiled(key.0, key.1), id);
    }
    add_queryids(entries, chosen, &ids);
    (ids, inserted)
}

/// Insert new statements into optidb.query (one round trip); returns how many. Each is filed
/// with its role's name too: across clusters a statement keeps its role by name
/// (src/postgres/identity.rs).
fn insert(new: &[&NewStatement]) -> usize {
    insert_into(LOCAL, new)
}

/// `insert` for the statements of `source`.
pub(crate) fn insert_into(source: &str, new: &[&NewStatement]) -> usize {
    if new.is_empty() {
        return 0;
    }
    let rows = serde_json::Value::Array(
        new.iter()
            .map(|s| {
                json!({
                    "fingerprint": s.fingerprint, "userid": s.userid, "dbid": s.dbid,
                    "kind": s.kind, "raw_sql": s.raw_sql, "norm_sql": s.norm_sql,
                    "parse_error": s.parse_error, "tables": s.tables,
                })
            })
            .collect(),
    );
    rows::value::<i64>(
        "file statements",
        "WITH added AS ( \
             INSERT INTO optidb.query (fingerprint, userid, dbid, kind, raw_sql, norm_sql, \
                 parse_error, tables, role_name, source) \
             SELECT r.fingerprint, r.userid::oid, r.dbid::oid, r.kind, r.raw_sql, r.norm_sql, \
                    r.parse_error, r.tables, a.rolname, $2 \
             FROM pg_catalog.jsonb_to_recordset($1) AS r(fingerprint text, userid int8, \
                  dbid int8, kind text, raw_sql text, norm_sql text, parse_error text, \
                  tables text[]) \
             LEFT JOIN pg_catalog.pg_roles a ON a.oid = r.userid::oid \
             ON CONFLICT (fingerprint, userid, dbid, source) DO NOTHING \
             RETURNING 1) \
         SELECT count(*) FROM added",
        &[JsonB(rows).into(), source.into()],
    )
    .unwrap_or(0) as usize
}

/// Add to each chosen statement's optidb.query.queryids the queryids of its entries it does
/// not list yet. Only entries never recorded can be missing (recording lists them); the
/// comparison is a join, so a statement with thousands of variants costs no more than thousands
/// of statements.
fn add_queryids(entries: &[PgssEntry], chosen: &[&Group], ids: &HashMap<Owner, i64>) {
    let (query_ids, queryids): (Vec<i64>, Vec<i64>) = chosen
        .iter()
        .filter_map(|g| Some((ids.get(&g.owner)?, g)))
        .flat_map(|(id, g)| g.entries.iter().map(move |&i| (*id, &entries[i])))
        .filter(|(_, e)| e.baseline.is_none())
        .map(|(id, e)| (id, e.queryid))
        .unzip();
    if query_ids.is_empty() {
        return;
    }
    Spi::run_with_args(
        "WITH seen AS ( \
             SELECT DISTINCT u.query_id, u.queryid \
             FROM unnest($1::int8[], $2::int8[]) AS u(query_id, queryid)), \
         listed AS ( \
             SELECT q.id AS query_id, x.queryid \
             FROM optidb.query q CROSS JOIN LATERAL pg_catalog.unnest(q.queryids) AS x(queryid) \
             WHERE q.id IN (SELECT query_id FROM seen)), \
         missing AS ( \
             SELECT s.query_id, pg_catalog.array_agg(s.queryid ORDER BY s.queryid) AS queryids \
             FROM seen s LEFT JOIN listed l USING (query_id, queryid) \
             WHERE l.query_id IS NULL \
             GROUP BY s.query_id) \
         UPDATE optidb.query q SET queryids = q.queryids || m.queryids \
         FROM missing m WHERE q.id = m.query_id",
        &[query_ids.into(), queryids.into()],
    )
    .unwrap_or_else(|e| error!("listing the queryids of statements failed: {e}"));
}
