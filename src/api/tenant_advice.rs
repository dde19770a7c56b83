//! Schema-per-tenant and role-per-tenant workloads (issue 27): the same index advice in many
//! schemas is one tenant family. scan()'s advice step tags each index advice with its family
//! key (`tag`): the kind, table name and index elements, the fingerprints of the statements it
//! serves (the same text, whichever role ran it) and the structural signature of its table
//! (column names, types, NOT NULL and collations in column order, and the relation kind), so a
//! tenant whose table differs is never folded in. A family is simulated on a sample of its
//! tenants (optidb_core::tenant), and scan() plans it as one statement on a sample of its
//! tenants (optidb_core::plan_targets). `optidb.tenant_advice()` shows each family of two or
//! more schemas once, with the script that creates the index in each schema lacking it (those
//! with advice, and those where the family's statements ran unplanned: the relations each
//! statement used, optidb.statement_relation, src/postgres/latency/relations.rs) and the
//! schemas that already have it; recommend() keeps one row per advised schema (each with its
//! rec_id). Only tenants whose table belongs to a trusted role (a superuser, the database's
//! owner, optidb.trusted_roles, or the role owning more than half of the family's tables) join;
//! anyone else could copy a tenant's table and run its statement text to have the DBA's script
//! index hers, so those are listed apart.

use crate::postgres::gucs;
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::advisor::Recommendation;
use optidb_core::predicates::quote_ident;
use optidb_core::tenant;
use pgrx::prelude::*;
use pgrx::JsonB;

/// The structural signature of relation `rel` (an SQL expression of type oid): what must be
/// equal for two tenants' tables to take the same index the same way.
fn signature_sql(rel: &str) -> String {
    format!(
        "(SELECT pg_catalog.md5(sc.relkind::text || ':' || pg_catalog.string_agg(\
             pg_catalog.quote_ident(a.attname) || ' ' \
             || pg_catalog.format_type(a.atttypid, a.atttypmod) \
             || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
             || ' ' || a.attcollation::pg_catalog.regcollation::text, \
             ', ' ORDER BY a.attnum)) \
          FROM pg_catalog.pg_class sc \
          JOIN pg_catalog.pg_attribute a ON a.attrelid = sc.oid \
          WHERE sc.oid = {rel} AND a.attnum > 0 AND NOT a.attisdropped \
          GROUP BY sc.relkind)"
    )
}

/// Tag each index advice with its tenant family (evidence.tenant_family: key, signature and
/// whether this scan simulates it). Advice alone in its family keeps being simulated.
pub fn tag(recs: &mut [Recommendation]) {
    let sql = format!(
        "SELECT pg_catalog.md5(pg_catalog.concat_ws('|', $1::text, $2::text, $3::text, fp.fps, \
                sig.signature)) AS key, sig.signature \
         FROM (SELECT {} AS signature FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname = $4 AND c.relname = $2) sig, \
              (SELECT pg_catalog.string_agg(DISTINCT q.fingerprint, ',' ORDER BY q.fingerprint) \
                   AS fps FROM optidb.query q WHERE q.id = ANY ($5)) fp \
         WHERE sig.signature IS NOT NULL",
        signature_sql("c.oid")
    );
    let keys: Vec<Option<(String, String)>> = recs
        .iter()
        .map(|rec| {
            if !rec.kind.creates_index() {
                return None;
            }
            // The index elements, method and predicate: the statement without its table.
            let qualified = format!("{}.{}", quote_ident(&rec.schema), quote_ident(&rec.table));
            let elements = rec
                .index_sql
                .as_deref()
                .unwrap_or(&rec.ddl)
                .replacen(&qualified, "", 1);
            rows::first(
                "tenant family of an advice",
                &sql,
                &[
                    rec.kind.as_str().into(),
                    rec.table.clone().into(),
                    elements.into(),
                    rec.schema.clone().into(),
                    rec.query_ids.clone().into(),
                ],
                |row| (row.get::<String>("key"), row.get::<String>("signature")),
            )
        })
        .collect();
    let members: Vec<(Option<&str>, &str)> = keys
        .iter()
        .zip(recs.iter())
        .map(|(k, r)| (k.as_ref().map(|(key, _)| key.as_str()), r.schema.as_str()))
        .collect();
    let sampled = tenant::sampled(&members);
    for ((rec, key), sampled) in recs.iter_mut().zip(keys).zip(sampled) {
        if let (Some((key, signature)), Some(evidence)) = (key, rec.evidence.as_object_mut()) {
            evidence.insert(
                "tenant_family".into(),
                serde_json::json!({"key": key, "signature": signature, "sampled": sampled}),
            );
        }
    }
}

/// Whether this scan simulates the advice (false: another tenant of its family stands for it).
pub fn simulated_here(rec: &Recommendation) -> bool {
    rec.evidence
        .pointer("/tenant_family/sampled")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true)
}

fn tenant_advice_sql() -> String {
    format!(
        "
-- Roles whose tables a DBA may index from a family's script (docs/security-model.md, row 62):
-- superusers, the database's owner and the roles of optidb.trusted_roles ($1), and for each
-- family the role owning more than half of its tenants' tables (main_owner). Anyone else
-- could copy a tenant's table and run its statement text to have an index built on hers.
WITH trusted AS (
    SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper
    UNION SELECT d.datdba FROM pg_catalog.pg_database d
          WHERE d.datname = pg_catalog.current_database()
    UNION SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY ($1::text[])),
a AS (
    SELECT r.*, r.schemaname::text AS schema_name, r.evidence->'tenant_family'->>'key' AS family,
           (SELECT c.relowner FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = r.schemaname AND c.relname = r.tablename) AS owner
    FROM optidb.recommendation r
    WHERE r.status = 'open' AND r.evidence->'tenant_family'->>'key' IS NOT NULL
      -- A schema name with a control character (a newline) would break the script's one
      -- statement per line, which DBAs split and run one by one: such a schema never joins.
      AND r.schemaname::text !~ '[[:cntrl:]]'),
-- Other schemas where the family's statements (the same text, any role the caller may see)
-- ran against a table of the same definition: first each family's statement texts, then the
-- tables they used (recorded once per statement, optidb.statement_relation, or named by a
-- kept sample).
texts AS (
    SELECT DISTINCT a.family, q.fingerprint, q.dbid, a.tablename, a.columns,
           a.evidence->'tenant_family'->>'signature' AS signature
    FROM a JOIN optidb.query q ON q.id = ANY (a.query_ids)),
-- Per statement, its table (OFFSET 0: resolved statement by statement, never by joining
-- every same-named table of 1,000 schemas to every statement first).
seen AS (
    SELECT DISTINCT t.family, t.columns, t.signature, x.rel, x.schema_name, x.relowner AS owner
    FROM texts t
    JOIN optidb.query q ON q.fingerprint = t.fingerprint AND q.dbid = t.dbid
    CROSS JOIN LATERAL (
        SELECT c.oid AS rel, n.nspname::text AS schema_name, c.relowner
        FROM (SELECT u.schema_name FROM optidb.statement_relation u
              WHERE u.query_id = q.id AND u.table_name = t.tablename::text
              UNION
              SELECT sn.nspname::text
              FROM optidb.sample s, pg_catalog.unnest(s.relation_oids) AS o(rel)
              JOIN pg_catalog.pg_class sc ON sc.oid = o.rel
              JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
              WHERE s.query_id = q.id AND sc.relname = t.tablename) used
        JOIN pg_catalog.pg_namespace n ON n.nspname = used.schema_name
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
        WHERE n.nspname::text !~ '[[:cntrl:]]'
        OFFSET 0) x),
others AS (
    SELECT v.family, v.schema_name, v.owner, pg_catalog.bool_or(EXISTS (
          SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = v.rel AND i.indpred IS NULL
            AND (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = v.rel AND a.attnum = k.attnum
                 WHERE k.ord <= pg_catalog.cardinality(v.columns)) = v.columns)) AS has_index
    FROM seen v
    WHERE NOT EXISTS (SELECT FROM a WHERE a.family = v.family AND a.schema_name = v.schema_name)
      AND {sig} = v.signature
    GROUP BY v.family, v.schema_name, v.owner),
-- Every tenant of each family, advised here or found through its statements, with its
-- table's owner.
tenants AS (
    SELECT DISTINCT family, schema_name, owner, true AS advised, false AS has_index FROM a
    UNION ALL
    SELECT family, schema_name, owner, false, has_index FROM others),
-- The role owning more than half of a family's tables: the application role of a
-- schema-per-tenant layout. A copy made by someone else cannot outvote it without outnumbering
-- the real tenants, which `untrusted_schemas` shows.
main_owner AS (
    SELECT family, owner FROM (
        SELECT family, owner, pg_catalog.count(*) AS n,
               pg_catalog.sum(pg_catalog.count(*)) OVER (PARTITION BY family) AS total
        FROM tenants GROUP BY family, owner) o
    WHERE n * 2 > total),
judged AS (
    SELECT t.*, coalesce(t.owner IN (SELECT oid FROM trusted)
                         OR EXISTS (SELECT FROM main_owner mo
                                    WHERE mo.family = t.family AND mo.owner = t.owner),
                         false) AS trusted
    FROM tenants t),
r AS (SELECT * FROM a WHERE EXISTS (
          SELECT FROM judged j WHERE j.family = a.family AND j.schema_name = a.schema_name
            AND j.advised AND j.trusted)),
indexed AS (SELECT family, schema_name FROM judged WHERE has_index AND trusted),
-- Tenants of the family whose table belongs to a role not trusted: listed apart, for a DBA
-- to review, never in the script nor counted.
untrusted AS (SELECT DISTINCT family, schema_name FROM judged WHERE NOT trusted),
-- Tenants lacking the index whose own statements were not planned (a family is planned on a
-- sample of its tenants): the family's index statement, for their schema (optidb's own text,
-- the same table and columns in every tenant of the family).
unplanned AS (
    SELECT DISTINCT ON (o.family, o.schema_name) o.family, o.schema_name,
           pg_catalog.replace(t.ddl,
               pg_catalog.quote_ident(t.schema_name) || '.' || pg_catalog.quote_ident(t.tablename),
               pg_catalog.quote_ident(o.schema_name) || '.' || pg_catalog.quote_ident(t.tablename))
               AS ddl
    FROM judged o JOIN a t ON t.family = o.family
    WHERE NOT o.advised AND NOT o.has_index AND o.trusted
    ORDER BY o.family, o.schema_name, t.schema_name),
lack AS (
    SELECT family, schema_name, ddl FROM r
    UNION ALL
    SELECT family, schema_name, ddl FROM unplanned),
-- Families of two or more schemas lacking the index among the advice and tenants the caller
-- may see (RLS), trusted or not: a family of untrusted tenants is shown, with no script.
m AS (SELECT * FROM a
      WHERE family IN (SELECT family FROM judged WHERE NOT has_index
                       GROUP BY family HAVING count(*) > 1)),
-- The tenants this scan simulated, with their latest successful simulation.
sim AS (
    SELECT m.family, m.id, m.schema_name, x.before_cost, x.after_cost, x.improvement_pct
    FROM m CROSS JOIN LATERAL (
        SELECT before_cost, after_cost, improvement_pct FROM optidb.simulation
        WHERE rec_id = m.id AND error IS NULL ORDER BY ran_at DESC LIMIT 1) x)
SELECT m.family, pg_catalog.min(m.kind) AS kind, pg_catalog.min(m.tablename::text) AS table_name,
       (SELECT m4.columns FROM m m4 WHERE m4.family = m.family LIMIT 1) AS columns,
       (SELECT pg_catalog.count(*) FROM lack l WHERE l.family = m.family)::int4 AS lacking,
       coalesce((SELECT pg_catalog.count(*) FROM indexed i WHERE i.family = m.family), 0)::int4
           AS already_indexed,
       coalesce((SELECT pg_catalog.array_agg(l.schema_name ORDER BY l.schema_name)
                 FROM lack l WHERE l.family = m.family), '{{}}') AS schemas,
       coalesce((SELECT pg_catalog.array_agg(i.schema_name ORDER BY i.schema_name)
                 FROM indexed i WHERE i.family = m.family), '{{}}') AS indexed_schemas,
       coalesce((SELECT pg_catalog.array_agg(u.schema_name ORDER BY u.schema_name)
                 FROM untrusted u WHERE u.family = m.family), '{{}}') AS untrusted_schemas,
       (SELECT pg_catalog.string_agg(pg_catalog.rtrim(l.ddl, ';') || ';', E'\\n'
                                     ORDER BY l.schema_name)
        FROM lack l WHERE l.family = m.family) AS script,
       pg_catalog.array_agg(m.id ORDER BY m.schema_name) AS rec_ids,
       (SELECT pg_catalog.array_agg(DISTINCT x.q ORDER BY x.q)
        FROM m m3, pg_catalog.unnest(m3.query_ids) x(q) WHERE m3.family = m.family) AS query_ids,
       pg_catalog.max(m.confidence) AS confidence,
       (SELECT pg_catalog.min(s.improvement_pct) FROM sim s WHERE s.family = m.family)
           AS improvement_pct,
       pg_catalog.sum(m.saving_ms_per_hour) AS saving_ms_per_hour,
       pg_catalog.jsonb_build_object(
           'signature', pg_catalog.min(m.evidence->'tenant_family'->>'signature'),
           'simulated', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'schema', s.schema_name, 'rec_id', s.id, 'before_cost', s.before_cost,
                   'after_cost', s.after_cost, 'improvement_pct', s.improvement_pct)
                   ORDER BY s.schema_name) FROM sim s WHERE s.family = m.family), '[]'),
           'sample_size', {sample}) AS evidence
FROM m
GROUP BY m.family
ORDER BY lacking DESC, saving_ms_per_hour DESC NULLS LAST, m.family",
        sig = signature_sql("v.rel"),
        sample = tenant::SAMPLE_SIZE,
    )
}

/// Open index advice that is the same in two or more tenant schemas, one row per tenant
/// family: how many schemas lack the index (and which), how many the same statements ran in
/// that already have it, those whose table belongs to a role not trusted (never in the
/// script), a script creating it in each schema lacking it, and the tenants simulated with
/// their before/after costs. A reader sees only the advice and tenants of
/// statements it may see.
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn tenant_advice() -> TableIterator<
    'static,
    (
        name!(family, String),
        name!(kind, String),
        name!(table_name, String),
        name!(columns, Vec<String>),
        name!(lacking, i32),
        name!(already_indexed, i32),
        name!(schemas, Vec<String>),
        name!(indexed_schemas, Vec<String>),
        name!(untrusted_schemas, Vec<String>),
        name!(script, Option<String>),
        name!(rec_ids, Vec<i64>),
        name!(query_ids, Vec<i64>),
        name!(confidence, f64),
        name!(improvement_pct, Option<f64>),
        name!(saving_ms_per_hour, Option<f64>),
        name!(evidence, JsonB),
    ),
> {
    let rows = own_work::run(|| {
        let trusted_roles = gucs::trusted_roles();
        rows::select(
            "tenant advice",
            &tenant_advice_sql(),
            &[trusted_roles.into()],
            |row| {
                (
                    row.get("family"),
                    row.get("kind"),
                    row.get("table_name"),
                    row.get("columns"),
                    row.get("lacking"),
                    row.get("already_indexed"),
                    row.get("schemas"),
                    row.get("indexed_schemas"),
                    row.get("untrusted_schemas"),
                    row.opt("script"),
                    row.get("rec_ids"),
                    row.get("query_ids"),
                    row.get("confidence"),
                    row.opt("improvement_pct"),
                    row.opt("saving_ms_per_hour"),
                    row.get("evidence"),
                )
            },
        )
    });
    TableIterator::new(rows)
}
