//! The workload-level index search. For every statement with a plan: the candidates its plan
//! suggests (optidb_core::advisor::candidates), tried as hypothetical indexes in the
//! statement's own replay worker, one worker per owner for all its statements (the what-if
//! job of src/postgres/replay_worker.rs). Then one selection over the whole workload
//! (optidb_core::advisor::workload): the indexes that save the most recorded execution time net
//! of what they cost their tables' writes (optidb_core::advisor::write_cost), within
//! `optidb.index_budget_mb`. An index whose writes cost more than it saves is kept as rejected
//! advice that says so, never as open advice.

use crate::api::simulate;
use crate::postgres::gucs;
use crate::postgres::hypopg::Hypopg;
use crate::postgres::replay;
use crate::postgres::replay::Which;
use crate::postgres::replay_worker::{self, Answer, Job, WhatIf};
use crate::postgres::rows;
use optidb_core::advisor::candidates::{self, Candidate, StatementCandidates};
use optidb_core::advisor::index_size;
use optidb_core::advisor::workload::{
    self, KeptWide, Limits, Measured, Narrowed, Pick, Price, Selection,
};
use optidb_core::advisor::write_cost::{self, Write, WriteCost};
use optidb_core::advisor::{Catalog, Recommendation, Statement};
use optidb_core::bottleneck::fmt_count;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// Share of a statement's planned cost an index set must remove to count as helping it:
/// smaller planned gains are where plans the planner costs lower often run slower.
pub const MIN_GAIN: f64 = 0.3;
/// Largest share of the saving of the statements an index serves that its size may buy over
/// a narrower index (or the rest of the set): below it the narrower one is advised.
pub const SIZE_SHARE: f64 = 0.1;
/// Largest rise of any served statement's planned cost that advising the narrower index may
/// cause (0.2 = 1.2x, the benchmark's own bar for "slower").
pub const MAX_COST_RISE: f64 = 0.2;
/// Without `optidb.index_budget_mb`, advised indexes may take as much as the database's size
/// (at most double it), and at least this much: a small database may need indexes as large as
/// its tables.
const MIN_DEFAULT_BUDGET_BYTES: f64 = 1024.0 * 1_048_576.0;
/// Size assumed for an index hypopg did not size (bytes per table row).
const BYTES_PER_ROW: f64 = 32.0;

/// Figures stored beside a recommendation (per hour of the recorded window).
pub struct Figures {
    pub saving_ms_per_hour: f64,
    pub write_ms_per_hour: f64,
    pub rank: Option<i32>,
    pub index_bytes: i64,
}

pub struct Advice {
    pub rec: Recommendation,
    pub figures: Figures,
    /// False: its writes cost more than it saves (stored as rejected).
    pub open: bool,
}

pub struct Search {
    pub advice: Vec<Advice>,
    pub summary: Value,
    /// Statements whose what-if job could not run (no worker slot, a replay error): the search
    /// says nothing about them, so their advice must not vanish for it.
    pub unmeasured: Vec<i64>,
}

/// One statement searched in one resolution of its names: its figures, its candidates there,
/// and the share of its recorded time that resolution stands for.
struct Searched<'a> {
    stmt: &'a Statement,
    candidates: StatementCandidates,
    share: f64,
}

pub fn search(hypopg: &Hypopg, statements: &[Statement], catalog: &Catalog) -> Search {
    let started = Instant::now();
    let mut searched: Vec<Searched> = Vec::new();
    // Other resolutions of a statement that cannot be replayed (the summary says why).
    let mut refused: Vec<Value> = Vec::new();
    let mut batches = Vec::new();
    for stmt in statements {
        let Some(plan) = &stmt.plan else { continue };
        // Without the names first (no load): a partition's candidates exist only if its
        // partitioned table's do.
        let candidates = candidates::for_statement(plan, catalog, &[]);
        if candidates.singles.is_empty() && candidates.multis.is_empty() {
            continue;
        }
        let Some(Ok(stored)) = replay::load(stmt.query_id) else {
            continue;
        };
        let candidates = candidates::for_statement(plan, catalog, &stored.info.tables);
        for (stored, candidates, share) in
            resolved(stmt.query_id, stored, candidates, catalog, &mut refused)
        {
            let sqls = |list: &[Candidate]| list.iter().map(Candidate::index_sql).collect();
            let job = Job::WhatIf {
                statement: simulate::basis_statement(&stored),
                singles: sqls(&candidates.singles),
                multis: sqls(&candidates.multis),
                hypopg_schema: hypopg.schema_name(),
            };
            batches.push((stored.context, vec![job]));
            searched.push(Searched {
                stmt,
                candidates,
                share,
            });
        }
    }
    let answers = replay_worker::run_batches(batches);

    let mut pool: Vec<Candidate> = Vec::new();
    let mut bytes: HashMap<usize, f64> = HashMap::new();
    let mut measured: Vec<Measured> = Vec::new();
    let mut failures: Vec<Value> = refused;
    let mut unmeasured: Vec<i64> = Vec::new();
    for (s, answer) in searched.iter().zip(answers) {
        match answer.into_iter().next() {
            Some(Ok(Answer::WhatIf(w))) => {
                measured.push(measure(s, &w, &mut pool, &mut bytes));
            }
            Some(Err(f)) => {
                failures.push(json!({"query_id": s.stmt.query_id, "error": f.to_string()}));
                unmeasured.push(s.stmt.query_id);
            }
            _ => {}
        }
    }

    let writes = load_writes(catalog);
    let hours = window_hours();
    // Each candidate's write cost, once: it prices the selection and is the advice's evidence.
    let upkeep: Vec<Option<WriteCost>> = pool
        .iter()
        .map(|c| {
            catalog
                .table(&c.table, Some(&c.schema))
                .map(|t| write_cost::of_index(catalog, t, &c.labels, &writes))
        })
        .collect();
    let prices: Vec<Price> = pool
        .iter()
        .enumerate()
        .map(|(i, c)| Price {
            bytes: built_bytes(c, bytes.get(&i).copied(), catalog),
            write_ms: upkeep[i].as_ref().map_or(0.0, |w| w.ms),
            covers: (0..pool.len()).filter(|j| c.covers(&pool[*j])).collect(),
            stand_ins: (0..pool.len())
                .filter(|j| c.covers(&pool[*j]))
                .filter(|j| {
                    c.roles
                        .iter()
                        .skip(pool[*j].labels.len())
                        .all(|r| !matches!(*r, "order by" | "group by"))
                })
                .collect(),
        })
        .collect();
    let budget_bytes = budget_bytes();
    let limits = Limits {
        budget_bytes,
        min_gain: MIN_GAIN,
        size_share: SIZE_SHARE,
        max_cost_rise: MAX_COST_RISE,
        storage_price: gucs::storage_price(),
    };
    let selection = workload::select(&measured, &prices, limits);
    let total = selection.picks.len();
    // The advised set, then the indexes whose writes cost more than they save (rejected).
    let mut advice: Vec<Advice> = selection
        .picks
        .iter()
        .map(|p| (p, true))
        .chain(selection.net_negative.iter().map(|p| (p, false)))
        .map(|(p, open)| {
            advise(
                p,
                &pool[p.candidate],
                catalog,
                &upkeep[p.candidate],
                hours,
                total,
                open,
            )
        })
        .collect();
    let mut summary = summary(
        &selection,
        &measured,
        pool.len(),
        budget_bytes,
        hours,
        failures,
        started,
    );
    summary["narrowed"] = selection
        .narrowed
        .iter()
        .map(|n| narrowed_evidence(n, &pool, hours))
        .collect();
    summary["kept_wide"] = selection
        .kept_wide
        .iter()
        .map(|k| kept_evidence(k, &pool, hours))
        .collect();
    let advised = |advice: &[Advice], i: usize| -> Option<usize> {
        advice
            .iter()
            .position(|a| a.open && a.rec.index_sql.as_deref() == Some(&pool[i].index_sql()))
    };
    // A pick advised in place of a wider index says so: what its size saves, what it loses.
    for n in &selection.narrowed {
        let Some(narrow) = n.narrow else { continue };
        if let Some(a) = advised(&advice, narrow) {
            advice[a].rec.evidence["instead_of"] = narrowed_evidence(n, &pool, hours);
        }
    }
    // A wide pick that kept its size says what its extra bytes save against their price.
    for k in &selection.kept_wide {
        if let Some(a) = advised(&advice, k.wide) {
            advice[a].rec.evidence["storage"] = kept_evidence(k, &pool, hours);
        }
    }
    Search {
        advice,
        unmeasured,
        summary,
    }
}

/// The resolutions of a statement's names to search it in: the one its plan was captured in
/// (`stored`, with the plan's candidates), then each other one its kept samples show (the same
/// text run in another schema), with the candidates moved to the tables of the same names
/// there. Each stands for its share of the kept samples.
fn resolved(
    query_id: i64,
    stored: replay::Stored,
    candidates: StatementCandidates,
    catalog: &Catalog,
    refused: &mut Vec<Value>,
) -> Vec<(replay::Stored, StatementCandidates, f64)> {
    // Samples whose plans used other partitions of the same tables are one resolution.
    let mut groups: Vec<Group> = Vec::new();
    for r in replay::resolutions(query_id) {
        let tables = tables_of(&r.relations, catalog);
        match groups.iter_mut().find(|g| g.tables == tables) {
            Some(g) => {
                g.members.push(r.relations);
                g.samples += r.samples;
            }
            None => groups.push(Group {
                tables,
                members: vec![r.relations],
                samples: r.samples,
            }),
        }
    }
    let total = groups.iter().map(|g| g.samples).sum::<i64>() as f64;
    let Some(own) = groups
        .iter()
        .position(|g| g.members.contains(&stored.relations))
    else {
        return vec![(stored, candidates, 1.0)];
    };
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if i == own {
            continue;
        }
        // The group's latest sample is replayed (resolutions come the latest first).
        let there = match replay::load_in(query_id, Which::Relations(&g.members[0])) {
            Some(Ok(there)) => there,
            Some(Err(f)) => {
                refused.push(json!({"query_id": query_id, "resolution": g.tables,
                                    "error": f.to_string()}));
                continue;
            }
            None => continue,
        };
        // A candidate on a partition the statement names moves to the partition of that name.
        let partitions = replay::relation_names(&g.members[0]);
        let moved = candidates.resolved_in(|c| {
            let mut schemas = g
                .tables
                .iter()
                .chain(partitions.iter().filter(|p| !g.tables.contains(p)))
                .filter(|(_, name)| *name == c.table)
                .map(|(schema, _)| schema);
            match (schemas.next(), schemas.next()) {
                (Some(schema), None) => Some(schema.clone()),
                _ => None,
            }
        });
        if !moved.singles.is_empty() || !moved.multis.is_empty() {
            out.push((there, moved, g.samples as f64 / total));
        }
    }
    out.insert(0, (stored, candidates, groups[own].samples as f64 / total));
    out
}

/// One resolution of a statement's names: the tables its samples' plans used, the relation
/// lists seen (the latest first) and how many kept samples it has.
struct Group {
    tables: Vec<(String, String)>,
    members: Vec<Vec<u32>>,
    samples: i64,
}

/// The tables these relations are, by schema and name, a partition as its partitioned table
/// (as the plan's candidates name it).
fn tables_of(relations: &[u32], catalog: &Catalog) -> Vec<(String, String)> {
    let mut tables: Vec<(String, String)> = replay::relation_names(relations)
        .into_iter()
        .map(|(schema, name)| {
            catalog
                .table(&name, Some(&schema))
                .and_then(|t| t.root.clone())
                .unwrap_or((schema, name))
        })
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

/// A statement's what-if answer in the pool's numbering (one number per distinct index).
fn measure(
    s: &Searched,
    w: &WhatIf,
    pool: &mut Vec<Candidate>,
    bytes: &mut HashMap<usize, f64>,
) -> Measured {
    let local: Vec<&Candidate> = s
        .candidates
        .singles
        .iter()
        .chain(&s.candidates.multis)
        .collect();
    let mut global = |i: usize| -> usize {
        let c = local[i];
        match pool.iter().position(|p| p.key() == c.key()) {
            Some(at) => at,
            None => {
                pool.push(c.clone());
                pool.len() - 1
            }
        }
    };
    let configs = w
        .configs
        .iter()
        .map(|(set, cost)| (set.iter().map(|i| global(*i)).collect(), *cost))
        .collect();
    for (i, b) in &w.bytes {
        let at = global(*i);
        let known = bytes.entry(at).or_insert(0.0);
        *known = known.max(*b as f64);
    }
    Measured {
        query_id: s.stmt.query_id,
        total_ms: s.stmt.total_ms * s.share,
        calls: s.stmt.calls as f64 * s.share,
        base_cost: w.base_cost,
        configs,
    }
}

fn advise(
    pick: &Pick,
    candidate: &Candidate,
    catalog: &Catalog,
    write: &Option<WriteCost>,
    hours: f64,
    advised: usize,
    open: bool,
) -> Advice {
    let kind = candidate.kind();
    let (saving_h, write_h) = (pick.saving_ms / hours, pick.write_ms / hours);
    let served: Vec<String> = pick
        .serves
        .iter()
        .map(|s| {
            format!(
                "query {} from cost {:.0} to {:.0}",
                s.query_id, s.before_cost, s.after_cost
            )
        })
        .collect();
    let columns = candidate.labels.join(", ");
    let rationale = if open {
        format!(
            "An index on {}.{} ({columns}) serves {} statement(s) ({}): with it, the advised set \
             saves ~{:.1} ms of execution time per hour; it costs the table's writes ~{:.1} ms \
             per hour; net ~{:.1} ms per hour, rank {} of {advised}.",
            candidate.schema,
            candidate.table,
            pick.serves.len(),
            served.join("; "),
            saving_h,
            write_h,
            saving_h - write_h,
            pick.rank,
        )
    } else {
        format!(
            "An index on {}.{} ({columns}) would speed up {} ({}), saving ~{:.1} ms per hour, \
             but maintaining it on the table's writes costs ~{:.1} ms per hour: net {:.1} ms \
             per hour, so it is not advised.",
            candidate.schema,
            candidate.table,
            if pick.serves.len() == 1 {
                "one statement".to_string()
            } else {
                format!("{} statements", pick.serves.len())
            },
            served.join("; "),
            saving_h,
            write_h,
            saving_h - write_h,
        )
    };
    let confidence = if open {
        let net_share = (pick.net_ms() / pick.saving_ms.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
        kind.base_confidence() * (0.7 + 0.3 * net_share)
    } else {
        0.2
    };
    let evidence = json!({
        "search": "hypopg what-if: the plan's single-column candidates, then the columns \
                   lists, then the best set's indexes alone",
        "columns": candidate.labels.iter().zip(&candidate.roles)
            .map(|(c, r)| json!({"column": c, "role": r})).collect::<Vec<_>>(),
        "serves": pick.serves.iter().map(|s| json!({
            "query_id": s.query_id, "cost_before": s.before_cost, "cost_after": s.after_cost,
        })).collect::<Vec<_>>(),
        "saving_ms": pick.saving_ms,
        "write_ms": pick.write_ms,
        "window_hours": hours,
        "saving_ms_per_hour": saving_h,
        "write_ms_per_hour": write_h,
        "net_ms_per_hour": saving_h - write_h,
        "index_bytes": pick.bytes,
        "writes": write.as_ref().map(|w| w.evidence.clone()),
        "rank": open.then_some(pick.rank),
    });
    let partitioned = catalog
        .table(&candidate.table, Some(&candidate.schema))
        .is_some_and(|t| catalog.is_partitioned(t));
    // PostgreSQL builds no index on a partitioned table CONCURRENTLY.
    let (create, build) = if partitioned {
        (
            "CREATE INDEX ON",
            "blocks writes to every partition while it builds (a partitioned table's index \
             cannot be built CONCURRENTLY; to avoid the lock: CREATE INDEX ON ONLY the table, \
             CREATE INDEX CONCURRENTLY on each partition, ALTER INDEX ... ATTACH PARTITION)",
        )
    } else {
        (
            "CREATE INDEX CONCURRENTLY ON",
            "built CONCURRENTLY (no write lock)",
        )
    };
    let risk = match &write {
        Some(w) if w.entries > 0.0 => format!(
            "{build}; ~{} MB; adds {} index entries over the recorded window to {}'s writes \
             (~{:.1} ms per hour)",
            fmt_mb(pick.bytes),
            fmt_count(w.entries),
            candidate.table,
            write_h
        ),
        _ => format!(
            "{build}; ~{} MB; no writes to {} were recorded",
            fmt_mb(pick.bytes),
            candidate.table
        ),
    };
    let elements = candidate.elements.join(", ");
    Advice {
        rec: Recommendation {
            kind,
            schema: candidate.schema.clone(),
            table: candidate.table.clone(),
            columns: candidate.labels.clone(),
            ddl: format!("{create} {} ({elements});", candidate.qualified),
            index_sql: Some(candidate.index_sql()),
            rationale,
            evidence,
            confidence,
            risk,
            // Once each, though it may serve a statement in several of its resolutions.
            query_ids: {
                let mut ids: Vec<i64> = Vec::new();
                for s in &pick.serves {
                    if !ids.contains(&s.query_id) {
                        ids.push(s.query_id);
                    }
                }
                ids
            },
            simulable: true,
            not_simulable_reason: None,
        },
        figures: Figures {
            saving_ms_per_hour: saving_h,
            write_ms_per_hour: write_h,
            rank: open.then_some(pick.rank as i32),
            index_bytes: pick.bytes as i64,
        },
        open,
    }
}

fn narrowed_evidence(n: &Narrowed, pool: &[Candidate], hours: f64) -> Value {
    json!({
        "dropped": pool[n.wide].index_sql(),
        "instead": n.narrow.map(|i| pool[i].index_sql()),
        "rule": n.rule.name(),
        "loss_ms_per_hour": n.loss_ms / hours,
        "served_ms_per_hour": n.served_ms / hours,
        "bytes_saved": n.bytes_saved,
        "storage_price_ms_per_hour": n.price_ms / hours,
    })
}

/// Why a wide pick kept its size: the narrower set it was weighed against, what that set
/// would lose, and what the bytes it frees are worth at the storage price.
fn kept_evidence(k: &KeptWide, pool: &[Candidate], hours: f64) -> Value {
    json!({
        "kept": pool[k.wide].index_sql(),
        "against": k.narrow.map(|i| pool[i].index_sql()),
        "extra_bytes": k.bytes_saved,
        "extra_saving_ms_per_hour": k.loss_ms / hours,
        "storage_price_ms_per_hour": k.price_ms / hours,
    })
}

/// The bytes PostgreSQL builds for a candidate: hypopg's estimate (or `BYTES_PER_ROW` per
/// row when hypopg did not size it), less what B-tree deduplication saves on its keys.
fn built_bytes(c: &Candidate, estimated: Option<f64>, catalog: &Catalog) -> f64 {
    let Some(table) = catalog.table(&c.table, Some(&c.schema)) else {
        return estimated.unwrap_or(0.0);
    };
    let rows = catalog.rows_with_partitions(table);
    let estimated = estimated.unwrap_or(rows * BYTES_PER_ROW);
    let distinct = index_size::distinct_keys(catalog, &c.schema, &c.table, &c.labels);
    index_size::deduplicated(estimated, rows, distinct)
}

fn fmt_mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1_048_576.0)
}

fn summary(
    selection: &Selection,
    measured: &[Measured],
    candidates: usize,
    budget_bytes: f64,
    hours: f64,
    failures: Vec<Value>,
    started: Instant,
) -> Value {
    json!({
        "statements_searched": measured.len(),
        "candidates": candidates,
        "indexes": selection.picks.len(),
        "net_negative": selection.net_negative.len(),
        "workload_cost_before": selection.cost_before,
        "workload_cost_after": selection.cost_after,
        "index_bytes": selection.bytes,
        "budget_bytes": budget_bytes,
        "saving_ms_per_hour": selection.saving_ms / hours,
        "write_ms_per_hour": selection.write_ms / hours,
        "window_hours": hours,
        "min_gain": MIN_GAIN,
        "size_share": SIZE_SHARE,
        "max_cost_rise": MAX_COST_RISE,
        "storage_price": gucs::storage_price(),
        "storage_price_ms_per_hour_per_mb": selection.price_ms_per_byte * 1_048_576.0 / hours,
        "failures": failures,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Every writing statement recorded (INSERT, UPDATE, DELETE, COPY), with its rows and time. A
/// table it names without a schema is looked up along the search_path its latest sample ran
/// with: the same text may write to `app1.t` for one statement and `app2.t` for another.
fn load_writes(catalog: &Catalog) -> Vec<Write> {
    rows::select(
        "writing statements",
        "SELECT q.norm_sql, sum(m.rows)::float8 AS rows, sum(m.total_ms) AS total_ms, \
                (SELECT s.search_path FROM optidb.sample s \
                 WHERE s.query_id = q.id AND s.search_path IS NOT NULL \
                 ORDER BY s.started_at DESC LIMIT 1) AS search_path \
         FROM optidb.metric m JOIN optidb.query q ON q.id = m.query_id \
         WHERE q.kind IN ('insert', 'update', 'delete', 'utility') AND q.norm_sql IS NOT NULL \
         GROUP BY q.id, q.norm_sql",
        &[],
        |row| {
            (
                row.get::<String>("norm_sql"),
                row.opt::<f64>("rows").unwrap_or(0.0),
                row.opt::<f64>("total_ms").unwrap_or(0.0),
                row.opt::<String>("search_path"),
            )
        },
    )
    .into_iter()
    .filter_map(|(sql, rows, ms, path)| {
        let mut write = Write::of_statement(&sql, rows, ms)?;
        if write.schema.is_none() {
            let path = path.and_then(|p| optidb_core::search_path::identifiers(&p));
            write.schema = path.into_iter().flatten().find(|schema| {
                catalog
                    .tables
                    .iter()
                    .any(|t| &t.schema == schema && t.name == write.table)
            });
        }
        Some(write)
    })
    .collect()
}

/// Hours the recorded metrics span (at least a minute: one snapshot spans none).
fn window_hours() -> f64 {
    rows::value::<f64>(
        "recorded window",
        "SELECT extract(epoch FROM max(captured_at) - min(captured_at))::float8 / 3600 \
         FROM optidb.metric",
        &[],
    )
    .unwrap_or(0.0)
    .max(1.0 / 60.0)
}

fn budget_bytes() -> f64 {
    match gucs::index_budget_mb() {
        Some(mb) => mb as f64 * 1_048_576.0,
        None => rows::value::<i64>(
            "database size",
            "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())",
            &[],
        )
        .map_or(0.0, |b| b as f64)
        .max(MIN_DEFAULT_BUDGET_BYTES),
    }
}
