//! Replaying a user's statement (EXPLAIN, hypothetical and real simulations) in the context it
//! ran in, never in the caller's: as the role that ran it, inside a security-restricted
//! operation, with the search_path it ran with.
//!
//! Why: planning evaluates functions (immutable ones are folded, stable ones are called to
//! estimate selectivity of a custom plan) and EXPLAIN ANALYZE runs everything. Replayed as
//! whoever calls scan() or simulate(), a statement's functions would run with that caller's
//! privileges: a plain role could read pg_authid or run a shell command through an admin's
//! scan. PostgreSQL runs maintenance work on other roles' objects the same way
//! (REFRESH MATERIALIZED VIEW, VACUUM, ANALYZE): `SetUserIdAndSecContext(owner,
//! SECURITY_RESTRICTED_OPERATION)` plus a GUC nest level, so the statement can do exactly what
//! its owner could, minus SET ROLE, temporary tables and the like, and the caller lends nothing.
//!
//! Where the search_path comes from, in order (stored with every plan as `path_source`):
//! 1. `recorded`: what optidb's hooks saw when the statement ran (optidb preloaded), each schema
//!    used only while its name still denotes the schema found then (same OID);
//! 2. `role_database_setting`, `role_setting`, `database_setting`: ALTER ROLE/DATABASE ... SET
//!    search_path (pg_db_role_setting), the way a new session of the owner would get it;
//! 3. `server_default`: PostgreSQL's built-in `"$user", public`;
//! 4. `inferred`: when the relations the statement names do not all resolve under 2/3, the one
//!    schema in which every unresolved relation exists is put first. Several candidates, or
//!    none, is an explanation stored with the statement, never a guess.

use crate::postgres::guarded::{self, Failure};
use crate::postgres::rows;
use crate::postgres::vetting::Vetted;
use optidb_core::search_path;
use optidb_core::statement::{self, StatementInfo};
use optidb_core::vocabulary::{PathSource, PlanKind, SampleKind};
use pgrx::pg_sys;
use std::panic::AssertUnwindSafe;

/// PostgreSQL's built-in search_path (the boot value of the setting).
const SERVER_DEFAULT_PATH: &str = "\"$user\", public";

/// The role a statement runs as.
#[derive(Debug, Clone)]
pub struct Owner {
    pub oid: pg_sys::Oid,
    pub name: String,
}

/// Everything a replay needs besides the statement text.
#[derive(Debug, Clone)]
pub struct Context {
    pub owner: Owner,
    pub search_path: String,
    pub path_source: PathSource,
}

/// A stored statement, ready to be replayed.
pub struct Stored {
    pub info: StatementInfo,
    pub context: Context,
    /// The relations the statement used when it was sampled (empty: unknown).
    pub relations: Vec<u32>,
    /// The sampled execution its latest plans were captured for (the one advice rests on, else
    /// the typical one), if any.
    pub sampled: Option<Sampled>,
    /// Advice rests on the custom plan of `sampled` (else on the generic plan).
    pub sampled_is_basis: bool,
}

/// A sampled execution ready to be planned with its values: its own text (the statement a
/// PREPARE prepares, for an SQL-level EXECUTE), the parameter types to declare and the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub sample_id: Option<i64>,
    pub sql: String,
    pub param_types: Vec<String>,
    pub values: Vec<Option<String>>,
}

impl Sampled {
    /// From a sample's text, built-in parameter types (schema-qualified names, None for one
    /// that is not built in) and values: None unless the text is one explainable statement
    /// with as many placeholders as values.
    fn new(
        sample_id: Option<i64>,
        text: &str,
        types: Vec<Option<String>>,
        values: Vec<Option<String>>,
    ) -> Option<Sampled> {
        let (_, info) = preparable(text).ok()?;
        if info.placeholders != values.len() {
            return None;
        }
        // The types the client bound, when every one is known; else the PREPARE's own.
        let param_types = match types.into_iter().collect::<Option<Vec<String>>>() {
            Some(t) if !t.is_empty() => t,
            _ => info.param_types,
        };
        Some(Sampled {
            sample_id,
            sql: info.text,
            param_types,
            values,
        })
    }
}

/// Statement `query_id` of optidb.query, ready to replay. None when there is no such statement
/// (or the caller may not see it); Err when it cannot be replayed, with the reason.
pub fn load(query_id: i64) -> Option<Result<Stored, Failure>> {
    load_in(query_id, Which::Latest)
}

/// Which of a statement's recorded resolutions to replay it in. The same text run under
/// search_paths that find other schemas' tables (a schema per tenant, per test case) is one
/// statement with several resolutions, each seen in the relations its samples' plans used.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// The latest sampled execution's (where its plans were captured).
    Latest,
    /// The latest sampled execution whose plan used exactly these relations.
    Relations(&'a [u32]),
    /// The latest sampled execution whose plan used this table or one of its partitions.
    Touching { schema: &'a str, table: &'a str },
}

/// The statement ready to replay in the resolution `which` picks (the latest one when no
/// sample matches).
pub fn load_in(query_id: i64, which: Which) -> Option<Result<Stored, Failure>> {
    let (raw_sql, role) = rows::first_kept(
        "statement to replay",
        "SELECT raw_sql, userid, role_name::text, role_missing FROM optidb.query WHERE id = $1",
        &[query_id.into()],
        |row| {
            (
                row.get::<String>("raw_sql"),
                StoredRole {
                    userid: row.opt("userid"),
                    name: row.opt("role_name"),
                    missing: row.opt("role_missing"),
                },
            )
        },
    )?;
    let latest = recorded(query_id, Which::Latest);
    let chosen = match which {
        Which::Latest => None,
        _ => recorded(query_id, which)
            .filter(|c| latest.as_ref().is_none_or(|l| l.relations != c.relations)),
    };
    // The latest resolution replays with the sampled execution its plans were captured for;
    // another with its own latest sample's values when they were kept (else generic).
    let sampled = match &chosen {
        None => latest_sampled_plan(query_id),
        Some(c) => sample(c.sample_id).map(|s| (s, true)),
    };
    let recorded = chosen.or(latest);
    // A normalized text that does not prepare (`extract($1 FROM d)`) is replayed as the text
    // of that sampled execution (src/postgres/capture.rs).
    let text = preparable(&raw_sql).or_else(|failure| {
        sampled
            .as_ref()
            .and_then(|(s, _)| preparable(&s.sql).ok())
            .ok_or(failure)
    });
    Some(text.and_then(|(_, info)| {
        let userid = vouched_owner(role)?;
        let (path, relations) = recorded.map(|r| (r.path, r.relations)).unzip();
        let context = resolve(userid, path, &info.tables)?;
        let (sampled, sampled_is_basis) = sampled.unzip();
        Ok(Stored {
            info,
            context,
            relations: relations.unwrap_or_default(),
            sampled,
            sampled_is_basis: sampled_is_basis.unwrap_or(false),
        })
    }))
}

/// What optidb's hooks recorded of one sampled execution of the statement.
pub struct Recorded {
    pub path: RecordedPath,
    /// The relations its plan used (empty when there were too many to keep).
    pub relations: Vec<u32>,
    pub sample_id: i64,
}

/// One resolution of a statement's names among its kept samples: the relations its plan used
/// and how many kept samples ran with them.
pub struct Resolution {
    pub relations: Vec<u32>,
    pub samples: i64,
}

/// The statement's resolutions its kept samples show, the latest first.
pub fn resolutions(query_id: i64) -> Vec<Resolution> {
    rows::select(
        "resolutions of a statement",
        "SELECT relation_oids, count(*) AS samples FROM optidb.sample \
         WHERE query_id = $1 AND search_path IS NOT NULL \
           AND pg_catalog.cardinality(relation_oids) > 0 \
         GROUP BY relation_oids ORDER BY max(started_at) DESC",
        &[query_id.into()],
        |row| Resolution {
            relations: oids(row.opt("relation_oids")),
            samples: row.get("samples"),
        },
    )
}

/// Schema and name of each of these relations that still exists.
pub fn relation_names(relations: &[u32]) -> Vec<(String, String)> {
    let oids: Vec<pg_sys::Oid> = relations.iter().map(|r| (*r).into()).collect();
    rows::select(
        "relation names",
        "SELECT n.nspname::text AS schema, c.relname::text AS name \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1)",
        &[oids.into()],
        |row| (row.get("schema"), row.get("name")),
    )
}

fn oids(list: Option<Vec<Option<pg_sys::Oid>>>) -> Vec<u32> {
    list.unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|r| r.to_u32())
        .collect()
}

/// A search_path as the hooks recorded it: the schemas the statement found, by name, and (in
/// samples taken since 0.5.0) by OID in the same order.
pub struct RecordedPath {
    pub text: String,
    pub schema_oids: Option<Vec<u32>>,
}

pub fn recorded(query_id: i64, which: Which) -> Option<Recorded> {
    let (relations, schema, table) = match which {
        Which::Latest => (None, None, None),
        Which::Relations(r) => (
            Some(r.iter().map(|o| pg_sys::Oid::from(*o)).collect::<Vec<_>>()),
            None,
            None,
        ),
        Which::Touching { schema, table } => (None, Some(schema), Some(table)),
    };
    rows::first_kept(
        "recorded search_path",
        "SELECT s.id, s.search_path, s.search_path_oids, s.relation_oids FROM optidb.sample s \
         WHERE s.query_id = $1 AND s.search_path IS NOT NULL \
           AND ($2::pg_catalog.oid[] IS NULL OR s.relation_oids OPERATOR(pg_catalog.=) $2) \
           AND ($3::text IS NULL OR EXISTS ( \
               SELECT FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
               WHERE n.nspname OPERATOR(pg_catalog.=) $3 AND c.relname OPERATOR(pg_catalog.=) $4 \
                 AND (c.oid OPERATOR(pg_catalog.=) ANY (s.relation_oids) \
                      OR EXISTS (SELECT FROM pg_catalog.pg_partition_tree(c.oid) t \
                                 WHERE t.relid OPERATOR(pg_catalog.=) ANY (s.relation_oids))))) \
         ORDER BY s.started_at DESC LIMIT 1",
        &[
            query_id.into(),
            relations.into(),
            schema.into(),
            table.into(),
        ],
        |row| Recorded {
            path: RecordedPath {
                text: row.get("search_path"),
                schema_oids: row
                    .opt::<Vec<Option<pg_sys::Oid>>>("search_path_oids")
                    .map(|oids| {
                        oids.into_iter()
                            .map(|o| o.map_or(0, |o| o.to_u32()))
                            .collect()
                    }),
            },
            relations: oids(row.opt("relation_oids")),
            sample_id: row.get("id"),
        },
    )
}

/// Text, built-in parameter types (NULL for others) and values of samples.
macro_rules! sample_select {
    () => {
        "
SELECT s.id, s.sql_text,
       ARRAY(SELECT CASE WHEN t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
                         THEN 'pg_catalog.' || pg_catalog.quote_ident(t.typname::text) END
             FROM pg_catalog.unnest(s.param_types) WITH ORDINALITY AS u(type, n)
             LEFT JOIN pg_catalog.pg_type t ON t.oid = u.type ORDER BY u.n) AS param_types,
       s.param_values
FROM optidb.sample s
WHERE s.values_known AND s.sql_text IS NOT NULL"
    };
}

/// Samples of one statement of one kind, the one nearest a time first.
const SAMPLES_SQL: &str = concat!(
    sample_select!(),
    "
  AND s.query_id = $1 AND s.kind = $2
ORDER BY s.relation_oids OPERATOR(pg_catalog.=) $4 DESC NULLS LAST,
         CASE WHEN $3::float8 IS NOT NULL
              THEN abs(ln(greatest(s.elapsed_ms, 0.001) / greatest($3, 0.001))) END,
         s.elapsed_ms DESC, s.started_at DESC
LIMIT 5"
);

fn samples(
    query_id: i64,
    kind: SampleKind,
    near_ms: Option<f64>,
    relations: &[u32],
) -> Option<Sampled> {
    let relations: Option<Vec<pg_sys::Oid>> =
        (!relations.is_empty()).then(|| relations.iter().map(|r| (*r).into()).collect());
    rows::select(
        "samples of a statement",
        SAMPLES_SQL,
        &[
            query_id.into(),
            kind.as_str().into(),
            near_ms.into(),
            relations.into(),
        ],
        sampled_row,
    )
    .into_iter()
    .flatten()
    .next()
}

/// One sample ready to plan with its values (None when they were not all kept).
fn sample(sample_id: i64) -> Option<Sampled> {
    rows::first(
        "sample",
        concat!(sample_select!(), " AND s.id = $1"),
        &[sample_id.into()],
        sampled_row,
    )
    .flatten()
}

fn sampled_row(row: &rows::Row) -> Option<Sampled> {
    Sampled::new(
        Some(row.get("id")),
        &row.get::<String>("sql_text"),
        row.get("param_types"),
        row.get("param_values"),
    )
}

/// The typical sampled execution: the one whose time is closest to the statement's median,
/// among those that ran against `relations` if any did (the resolution being planned; empty:
/// any).
pub fn typical_sample(query_id: i64, relations: &[u32]) -> Option<Sampled> {
    let median = crate::postgres::latency::history::merged(Some(query_id), None, None, None)
        .into_iter()
        .next()
        .and_then(|(_, m)| m.stats)
        .map(|s| s.median_ms);
    samples(query_id, SampleKind::Typical, median, relations)
}

/// The slowest sampled execution (among those against `relations` if any, as above).
pub fn slowest_sample(query_id: i64, relations: &[u32]) -> Option<Sampled> {
    samples(query_id, SampleKind::Slowest, None, relations)
}

/// The sampled plan of the statement's latest capture (the basis one, else the typical one):
/// what it was made for, and whether advice rests on it.
fn latest_sampled_plan(query_id: i64) -> Option<(Sampled, bool)> {
    rows::first_kept(
        "latest sampled plan",
        "SELECT sample_id, sql_text, param_types, param_values, basis FROM optidb.plan \
         WHERE query_id = $1 AND plan_kind = ANY ($2) AND plan_json IS NOT NULL \
           AND sql_text IS NOT NULL AND param_values IS NOT NULL \
           AND captured_at = (SELECT max(captured_at) FROM optidb.plan WHERE query_id = $1) \
         ORDER BY basis DESC, plan_kind = $3 DESC \
         LIMIT 1",
        &[
            query_id.into(),
            vec![
                PlanKind::Typical.as_str().to_string(),
                PlanKind::Slowest.as_str().to_string(),
            ]
            .into(),
            PlanKind::Typical.as_str().into(),
        ],
        |row| {
            (
                Sampled {
                    sample_id: row.opt("sample_id"),
                    sql: row.get("sql_text"),
                    param_types: row.opt("param_types").unwrap_or_default(),
                    values: row.get("param_values"),
                },
                row.get("basis"),
            )
        },
    )
}

fn not_explainable(message: String) -> Failure {
    Failure::Error {
        sqlstate: "0A000".into(),
        message,
    }
}

/// The statement text as it can be PREPAREd (pg_stat_statements' typed-literal artifacts
/// repaired), with what its parse tree says (`info.text` is what to PREPARE: for a PREPARE,
/// the statement it prepares); refused (0A000) unless it is one statement that can be
/// EXPLAINed.
pub fn preparable(raw_sql: &str) -> Result<(String, StatementInfo), Failure> {
    // A pure function of the text (pg_query's parse, no catalog read): remembered per process,
    // so a simulate() repeated on one statement parses it once. At most REMEMBERED texts of at
    // most REMEMBERED_BYTES each (a few MB per backend at worst).
    use std::cell::RefCell;
    use std::collections::HashMap;
    type Parsed = Result<(String, StatementInfo), Failure>;
    const REMEMBERED: usize = 512;
    const REMEMBERED_BYTES: usize = 8192;
    thread_local! {
        static PARSED: RefCell<HashMap<String, Parsed>> = RefCell::new(HashMap::new());
    }
    if let Some(known) = PARSED.with(|p| p.borrow().get(raw_sql).cloned()) {
        return known;
    }
    let parsed = parse_preparable(raw_sql);
    if raw_sql.len() > REMEMBERED_BYTES {
        return parsed;
    }
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= REMEMBERED {
            p.clear();
        }
        p.insert(raw_sql.to_string(), parsed.clone());
    });
    parsed
}

fn parse_preparable(raw_sql: &str) -> Result<(String, StatementInfo), Failure> {
    let text = statement::repair_typed_params(raw_sql).map_err(|e| not_explainable(e.0))?;
    let info = statement::analyze(&text).map_err(|e| not_explainable(e.0))?;
    if !info.explainable {
        return Err(not_explainable(format!(
            "a {} statement cannot be EXPLAINed",
            info.kind.as_str()
        )));
    }
    Ok((text, info))
}

/// A statement's role as optidb.query stores it: by OID and by the name it ran under
/// (src/postgres/identity.rs). No OID: it has no role in this cluster, `missing` says why.
struct StoredRole {
    userid: Option<pg_sys::Oid>,
    name: Option<String>,
    missing: Option<String>,
}

/// Identity check: a replay runs as the statement's role by name, never as whoever holds its
/// OID now. An OID restored from another cluster may be another role here (or none) until
/// snapshot() re-maps it by name; one whose role was dropped may have been reused. So the OID
/// is used only while its role carries the stored name; a role that is missing here is
/// refused with the stored reason. (A rename on this cluster is followed by the next
/// snapshot; until then its statements wait.) A role that no longer exists at all is left to
/// `resolve`, which says so.
fn vouched_owner(role: StoredRole) -> Result<pg_sys::Oid, Failure> {
    let Some(oid) = role.userid else {
        return Err(skipped(format!(
            "the statement has no role in this cluster, so it is not replayed: {}",
            role.missing.as_deref().unwrap_or("its role is unknown")
        )));
    };
    match (owner(oid), role.name) {
        (Some(now), Some(name)) if now.name == name => Ok(oid),
        (None, _) => Ok(oid),
        (Some(now), name) => Err(skipped(format!(
            "the statement ran as role {}, but oid {} is role \"{}\" in this cluster: it is not \
             replayed until optidb.snapshot() has re-mapped its role by name",
            name.map_or(
                "(unknown: dropped before optidb recorded role names)".to_string(),
                |n| { format!("\"{n}\"") }
            ),
            oid.to_u32(),
            now.name
        ))),
    }
}

/// The role with this oid, if it still exists.
pub fn owner(oid: pg_sys::Oid) -> Option<Owner> {
    rows::select_kept(
        "role name",
        "SELECT rolname::text AS name FROM pg_catalog.pg_roles WHERE oid = $1",
        &[oid.into()],
        |row| row.get::<String>("name"),
    )
    .pop()
    .map(|name| Owner { oid, name })
}

/// The statement's role is gone (42704, undefined object).
fn skipped(message: String) -> Failure {
    Failure::Error {
        sqlstate: "42704".into(),
        message,
    }
}

/// Relations the statement names do not resolve (42P01, undefined table).
fn not_resolved(message: String) -> Failure {
    Failure::Error {
        sqlstate: "42P01".into(),
        message,
    }
}

/// The context to replay a statement of role `userid` in. `recorded` is the search_path optidb's
/// hooks saw; `tables` the relations the statement names (as written, from its parse tree),
/// used to check and infer the search_path when none was recorded.
pub fn resolve(
    userid: pg_sys::Oid,
    recorded: Option<RecordedPath>,
    tables: &[String],
) -> Result<Context, Failure> {
    let owner = owner(userid).ok_or_else(|| {
        skipped(format!(
            "the role (oid {}) that ran this statement no longer exists: it is not replayed",
            userid.to_u32()
        ))
    })?;
    if let Some(path) = recorded {
        // A sample from before 0.5.0 has no OIDs: its path is vetted like a configured one.
        let vouch = match &path.schema_oids {
            Some(oids) => Vouch::SameSchemas(oids),
            None => Vouch::TrustedOwners,
        };
        return Ok(Context {
            search_path: trusted_path(&path.text, &owner, vouch)?,
            owner,
            path_source: PathSource::Recorded,
        });
    }
    let (search_path, path_source) = configured_path(owner.oid);
    let search_path = trusted_path(&search_path, &owner, Vouch::TrustedOwners)?;
    let ctx = Context {
        owner,
        search_path,
        path_source,
    };
    let unqualified: Vec<&String> = tables.iter().filter(|t| !t.contains('.')).collect();
    let unresolved: Vec<String> = unqualified
        .iter()
        .filter(|t| !resolves(&ctx, t))
        .map(|t| t.to_string())
        .collect();
    if unresolved.is_empty() {
        return Ok(ctx);
    }
    let schemas = schemas_holding_all(&ctx, &unresolved);
    match schemas.as_slice() {
        [schema] => Ok(Context {
            search_path: format!(
                "{}, {}",
                pgrx::spi::quote_identifier(schema),
                ctx.search_path
            ),
            path_source: PathSource::Inferred,
            ..ctx
        }),
        [] => Err(not_resolved(format!(
            "relation(s) {} do not resolve under the search_path {} of role {} ({}) and no \
             schema it may use and trusts (owned, with the relations, by the role itself, a \
             superuser or the database owner) holds all of them: the statement cannot be \
             replayed. Set the role's search_path (ALTER ROLE ... SET search_path), or preload \
             optidb so it records the search_path each statement runs with",
            unresolved.join(", "),
            ctx.search_path,
            ctx.owner.name,
            ctx.path_source.as_str().replace('_', " ")
        ))),
        several => Err(not_resolved(format!(
            "relation(s) {} do not resolve under the search_path {} of role {} ({}) and exist \
             in several schemas ({}): which one the statement used is unknown. Set the role's \
             search_path (ALTER ROLE ... SET search_path), or preload optidb so it records the \
             search_path each statement runs with",
            unresolved.join(", "),
            ctx.search_path,
            ctx.owner.name,
            ctx.path_source.as_str().replace('_', " "),
            several.join(", ")
        ))),
    }
}

/// Which schemas of a path a replay may search.
enum Vouch<'a> {
    /// A recorded path: a name only while it denotes the schema recorded at its place (these
    /// OIDs, in path order). Its owner may drop it and someone else create one of that name.
    SameSchemas(&'a [u32]),
    /// A configured or default path: schemas that exist and belong to a role the owner trusts.
    TrustedOwners,
}

/// The path a replay may use: only the schemas `vouch` vouches for. Why: a name can denote
/// another schema at replay than when the statement ran (`app, public` with no `app` yet, or
/// `"$user"`, or `app` dropped and recreated); whoever creates it (CREATE on the database is
/// enough) would stand in for the statement's relations and functions and for names inside its
/// functions' bodies, run with the owner's rights. A path optidb cannot read the way
/// PostgreSQL does is not replayed at all.
fn trusted_path(path: &str, owner: &Owner, vouch: Vouch) -> Result<String, Failure> {
    let elements = search_path::elements(path).ok_or_else(|| {
        not_resolved(format!(
            "the search_path {path} of role {} cannot be read: the statement is not replayed",
            owner.name
        ))
    })?;
    let names = search_path::schema_names(&elements, &owner.name);
    let trusted = match vouch {
        Vouch::SameSchemas(oids) => schemas_still_named(&names, oids),
        Vouch::TrustedOwners => trusted_schemas(owner, &names),
    };
    Ok(search_path::trusted_only(&elements, &owner.name, |s| {
        trusted.iter().any(|t| t == s)
    }))
}

/// Of these schema names, those that still denote the schema recorded at the same place.
fn schemas_still_named(names: &[String], oids: &[u32]) -> Vec<String> {
    let oids: Vec<pg_sys::Oid> = oids.iter().map(|o| (*o).into()).collect();
    rows::select_kept(
        "recorded schemas",
        "SELECT n.nspname::pg_catalog.text AS schema \
         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                         pg_catalog.unnest($2::pg_catalog.oid[])) AS r(name, oid) \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.oid \
          AND n.nspname OPERATOR(pg_catalog.=) r.name",
        &[names.to_vec().into(), oids.into()],
        |row| row.get("schema"),
    )
}

/// Of these schema names, those that exist and belong to a role the owner trusts.
fn trusted_schemas(owner: &Owner, names: &[String]) -> Vec<String> {
    // One text for the process's life, so its plan is kept (rows::select_kept).
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{TRUSTED_ROLES} SELECT n.nspname::pg_catalog.text AS schema \
             FROM pg_catalog.pg_namespace n \
             WHERE n.nspname OPERATOR(pg_catalog.=) ANY ($1) AND {TRUSTED_SCHEMA}"
        )
    });
    rows::select_kept(
        "trusted schemas",
        SQL.as_str(),
        &[names.to_vec().into(), owner.oid.into()],
        |row| row.get("schema"),
    )
}

/// The search_path a new session of `role` in this database starts with, and where it comes
/// from: the most specific ALTER ROLE/DATABASE ... SET wins, as at login.
fn configured_path(role: pg_sys::Oid) -> (String, PathSource) {
    let found = rows::first_kept(
        "configured search_path",
        "SELECT pg_catalog.substr(c, 13) AS path, \
                CASE WHEN s.setrole OPERATOR(pg_catalog.<>) 0 \
                      AND s.setdatabase OPERATOR(pg_catalog.<>) 0 THEN 'role_database_setting' \
                     WHEN s.setrole OPERATOR(pg_catalog.<>) 0 THEN 'role_setting' \
                     ELSE 'database_setting' END AS source \
         FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c \
         WHERE pg_catalog.starts_with(c, 'search_path=') \
           AND s.setrole OPERATOR(pg_catalog.=) ANY (ARRAY[$1, 0::pg_catalog.oid]) \
           AND s.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[$2, 0::pg_catalog.oid]) \
         ORDER BY (s.setrole OPERATOR(pg_catalog.<>) 0 \
                   AND s.setdatabase OPERATOR(pg_catalog.<>) 0) DESC, \
                  (s.setrole OPERATOR(pg_catalog.<>) 0) DESC, \
                  (s.setdatabase OPERATOR(pg_catalog.<>) 0) DESC \
         LIMIT 1",
        // SAFETY: a plain global of this backend, set when it connected to its database,
        // before any statement runs.
        &[role.into(), unsafe { pg_sys::MyDatabaseId }.into()],
        |row| (row.get::<String>("path"), row.get::<String>("source")),
    );
    match found {
        Some((path, source)) => (
            path,
            PathSource::parse(&source).unwrap_or(PathSource::DatabaseSetting),
        ),
        None => (SERVER_DEFAULT_PATH.to_string(), PathSource::ServerDefault),
    }
}

/// Does `table` (unqualified) resolve in this context? Checked as the owner, so schemas it has
/// no USAGE on are skipped exactly as when the statement runs. to_regclass runs no user code.
fn resolves(ctx: &Context, table: &str) -> bool {
    let name = table.to_string();
    guarded::run(
        None,
        AssertUnwindSafe(|| {
            Vetted::catalog_lookup(ctx).run(|| {
                rows::value::<bool>(
                    "relation resolves",
                    "SELECT pg_catalog.to_regclass(pg_catalog.quote_ident($1)) IS NOT NULL",
                    &[name.clone().into()],
                )
                .unwrap_or(false)
            })
        }),
    )
    .unwrap_or(false)
}

/// The roles a replay as role `$2` trusts: superusers, and for an owner that is not one, the
/// owner itself and the database's owner; `pg_database_owner` (which owns `public` since
/// PostgreSQL 15) stands for the database's owner (`trusted` CTE, for the queries below).
///
/// Here and below every operator is `OPERATOR(pg_catalog.op)`: some of these run under the
/// statement's recorded search_path (`untrusted_relations`, as its owner), where a bare `=`
/// could find an operator someone created in an earlier schema (docs/security-model.md, 59).
const TRUSTED_ROLES: &str = "WITH db AS ( \
     SELECT datdba FROM pg_catalog.pg_database \
     WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()), \
   owner_roles AS ( \
     SELECT r.oid FROM pg_catalog.pg_roles r \
     WHERE r.rolsuper OR ((r.oid OPERATOR(pg_catalog.=) $2 \
                           OR r.oid OPERATOR(pg_catalog.=) (SELECT datdba FROM db)) \
            AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles \
                     WHERE oid OPERATOR(pg_catalog.=) $2))), \
   trusted AS ( \
     SELECT oid FROM owner_roles \
     UNION ALL \
     SELECT 'pg_database_owner'::pg_catalog.regrole::pg_catalog.oid \
     WHERE (SELECT datdba FROM db) OPERATOR(pg_catalog.=) ANY (SELECT oid FROM owner_roles))";

/// A schema `n` a replay may search (with `TRUSTED_ROLES`): owned by a trusted role, where no
/// one else may create objects (CREATE granted to PUBLIC or to any other role would let that
/// one plant look-alikes later), and not some session's temporary schema (owned by the
/// bootstrap superuser, written by whoever owns that session).
const TRUSTED_SCHEMA: &str = "(n.nspowner OPERATOR(pg_catalog.=) ANY (SELECT oid FROM trusted) \
     AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast_)?temp_' \
     AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(COALESCE(n.nspacl, \
                                   pg_catalog.acldefault('n', n.nspowner))) a \
                     WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE' \
                       AND NOT (a.grantee OPERATOR(pg_catalog.=) ANY (SELECT oid FROM trusted))))";

/// Of these (quoted) names, those that resolve in the current search_path to a relation whose
/// owner the role `owner` does not trust. A statement replayed without a sample of the
/// relations it used must not be planned over a look-alike someone else planted earlier in its
/// path (in a schema named like the owner, which `"$user"` finds first). The relation's owner
/// is what matters: only it can define what reading it runs (a view's body, its policies); a
/// look-alike is owned by whoever created it, whoever owns the schema.
pub fn untrusted_relations(owner: pg_sys::Oid, names: &[String]) -> Vec<String> {
    // One text for the process's life, so its plan is kept (rows::select_kept).
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{TRUSTED_ROLES} \
             SELECT pg_catalog.concat(u.name, ' (', c.oid::pg_catalog.regclass, ')') \
                    AS relation \
             FROM pg_catalog.unnest($1::pg_catalog.text[]) AS u(name) \
             JOIN pg_catalog.pg_class c \
               ON c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(u.name) \
             WHERE NOT (c.relowner OPERATOR(pg_catalog.=) ANY (SELECT oid FROM trusted))"
        )
    });
    rows::select_kept_few(
        "untrusted relations",
        SQL.as_str(),
        &[names.to_vec().into(), owner.into()],
        |row| row.get("relation"),
    )
}

/// Schemas the owner may use and trusts that hold a relation of every one of these names.
///
/// Trusted: the schema and every one of those relations belong to the owner itself, to a
/// superuser or to the database's owner, and nobody else may create in it. Anyone else's schema could hold look-alikes planted
/// to be replayed with the owner's rights (a view over a hostile function standing in for a
/// temporary table that is gone), so it is never guessed; a superuser's statements are only
/// ever placed in superusers' schemas.
fn schemas_holding_all(ctx: &Context, tables: &[String]) -> Vec<String> {
    rows::select(
        "schemas holding the relations",
        &format!(
            "{TRUSTED_ROLES} \
             SELECT n.nspname::pg_catalog.text AS schema FROM pg_catalog.pg_namespace n \
             JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
             WHERE c.relname OPERATOR(pg_catalog.=) ANY ($1) \
               AND c.relkind OPERATOR(pg_catalog.=) ANY ('{{r,p,v,m,f}}'::pg_catalog.\"char\"[]) \
               AND NOT (n.nspname OPERATOR(pg_catalog.=) \
                        ANY ('{{pg_catalog,information_schema,optidb}}'::pg_catalog.name[])) \
               AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp)' \
               AND {TRUSTED_SCHEMA} \
               AND c.relowner OPERATOR(pg_catalog.=) ANY (SELECT oid FROM trusted) \
               AND pg_catalog.has_schema_privilege($2, n.oid, 'USAGE') \
             GROUP BY n.nspname \
             HAVING pg_catalog.count(DISTINCT c.relname) \
                    OPERATOR(pg_catalog.=) pg_catalog.cardinality($1) \
             ORDER BY 1"
        ),
        &[tables.to_vec().into(), ctx.owner.oid.into()],
        |row| row.get("schema"),
    )
}
