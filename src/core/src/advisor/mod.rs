//! Recommendations from stored facts: statements (metrics + latest plan facts + canonical text)
//! and catalog facts (tables, indexes, column statistics). Each rule lives in its own module;
//! this one defines the shared types, runs the rules and merges duplicates, so one index that
//! serves several statements is one recommendation listing all of them.

pub mod candidates;
mod index_audit;
mod index_rules;
pub mod index_size;
pub mod not_exists;
mod rewrite_rules;
mod stats_rules;
pub mod verdicts;
pub mod workload;
pub mod write_cost;

use crate::plan_facts::PlanFacts;
use serde::Serialize;
use serde_json::Value;

crate::vocabulary! {
    /// optidb.recommendation.kind.
    pub enum Kind {
        MissingIndex => "missing_index",
        CompositeIndex => "composite_index",
        ExpressionIndex => "expression_index",
        Stats => "stats",
        Rewrite => "rewrite",
        TrigramIndex => "trigram_index",
        RedundantIndex => "redundant_index",
        UnusedIndex => "unused_index",
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Kind {
    /// Confidence before simulation: missing > composite > expression > stats > rewrite >
    /// redundant > unused. Index advice is the most mechanical and the easiest to verify.
    pub fn base_confidence(self) -> f64 {
        match self {
            Kind::MissingIndex => 0.90,
            Kind::CompositeIndex => 0.85,
            Kind::ExpressionIndex => 0.80,
            Kind::Stats => 0.70,
            Kind::Rewrite => 0.60,
            // hypopg cannot make GIN indexes: low until a trial build confirms it
            // (advisor::verdicts::TRIAL_CONFIDENCE, src/api/advice_checks/trigram_trials.rs).
            Kind::TrigramIndex => verdicts::UNVERIFIED_CONFIDENCE,
            Kind::RedundantIndex => 0.50,
            Kind::UnusedIndex => 0.45,
        }
    }

    pub fn creates_index(self) -> bool {
        matches!(
            self,
            Kind::MissingIndex | Kind::CompositeIndex | Kind::ExpressionIndex
        )
    }
}

/// One statement as the rules see it.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub query_id: i64,
    /// Canonical text (pg_query deparse), used by text-level rewrite rules.
    pub norm_sql: Option<String>,
    pub calls: i64,
    pub total_ms: f64,
    pub rows: i64,
    pub plan: Option<PlanFacts>,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// The planner's row estimate (pg_class.reltuples).
    pub rows_est: f64,
    pub live_rows: f64,
    pub mod_since_analyze: i64,
    pub last_analyze: Option<String>,
    /// For a partition: its partitioned table at the top of the tree (schema, name).
    pub root: Option<(String, String)>,
    /// Rows updated, and of those the HOT ones (no index entry), since statistics were reset.
    pub updated_rows: i64,
    pub hot_updated_rows: i64,
}

impl Table {
    /// Rows the table really holds as far as we know: stale statistics under-count.
    pub fn rows(&self) -> f64 {
        self.rows_est.max(self.live_rows)
    }

    pub fn qualified(&self) -> String {
        format!(
            "{}.{}",
            crate::predicates::quote_ident(&self.schema),
            crate::predicates::quote_ident(&self.name)
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Index {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// Key columns as pg_get_indexdef(oid, k, true) prints them (expressions included).
    pub columns: Vec<String>,
    pub is_unique: bool,
    pub is_primary: bool,
    pub is_valid: bool,
    pub backs_constraint: bool,
    pub access_method: String,
    pub predicate: Option<String>,
    pub idx_scan: i64,
    pub bytes: i64,
    pub definition: String,
}

#[derive(Debug, Clone, Default)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub n_distinct: Option<f64>,
    pub null_frac: Option<f64>,
    /// As format_type() names it ("integer", "numeric(15,2)"): B-tree deduplication depends
    /// on it.
    pub type_name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: Vec<Table>,
    pub indexes: Vec<Index>,
    pub columns: Vec<Column>,
    /// Since when index usage counters have been counting (pg_stat_database.stats_reset).
    pub stats_since: Option<String>,
}

impl Catalog {
    /// A relation named in a plan, by schema when the plan names it (optidb EXPLAINs with
    /// VERBOSE). Plans stored without it: prefer `public`, then the first match.
    pub fn table(&self, name: &str, schema: Option<&str>) -> Option<&Table> {
        let mut matches = self
            .tables
            .iter()
            .filter(|t| t.name == name && schema.is_none_or(|s| s == t.schema));
        let first = matches.next()?;
        Some(
            std::iter::once(first)
                .chain(matches)
                .find(|t| t.schema == "public")
                .unwrap_or(first),
        )
    }

    pub fn column(&self, table: &Table, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.schema == table.schema && c.table == table.name && c.name == name)
    }

    /// The partitioned table a partition belongs to (its tree's root).
    pub fn partition_root(&self, table: &Table) -> Option<&Table> {
        let (schema, name) = table.root.as_ref()?;
        self.tables
            .iter()
            .find(|t| &t.schema == schema && &t.name == name)
    }

    /// A partitioned table: some table has it as its partition root.
    pub fn is_partitioned(&self, table: &Table) -> bool {
        let key = (table.schema.clone(), table.name.clone());
        self.tables.iter().any(|t| t.root.as_ref() == Some(&key))
    }

    /// Rows of a table, or of all its partitions for a partitioned table (which has none).
    pub fn rows_with_partitions(&self, table: &Table) -> f64 {
        let key = (table.schema.clone(), table.name.clone());
        let partitions: f64 = self
            .tables
            .iter()
            .filter(|t| t.root.as_ref() == Some(&key))
            .map(Table::rows)
            .sum();
        table.rows().max(partitions)
    }

    pub fn indexes_of<'a>(&'a self, table: &'a Table) -> impl Iterator<Item = &'a Index> + 'a {
        self.indexes
            .iter()
            .filter(move |i| i.schema == table.schema && i.table == table.name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub kind: Kind,
    pub schema: String,
    pub table: String,
    /// Index columns (with direction) for index advice; the columns concerned otherwise.
    pub columns: Vec<String>,
    /// What to run. For new indexes: CREATE INDEX CONCURRENTLY ...
    pub ddl: String,
    /// For new indexes: the plain CREATE INDEX that hypopg simulates.
    pub index_sql: Option<String>,
    pub rationale: String,
    pub evidence: Value,
    pub confidence: f64,
    pub risk: String,
    pub query_ids: Vec<i64>,
    /// False when hypopg cannot try it; `not_simulable_reason` says why.
    pub simulable: bool,
    pub not_simulable_reason: Option<String>,
}

impl Recommendation {
    /// Identity across scans: the same advice keeps its id.
    pub fn key(&self) -> String {
        format!(
            "{}:{}.{}:{}",
            self.kind.as_str(),
            self.schema,
            self.table,
            self.columns.join(",")
        )
    }
}

/// All recommendations for these statements and this catalog, deduplicated, most confident
/// first.
pub fn advise(statements: &[Statement], catalog: &Catalog) -> Vec<Recommendation> {
    let mut recs = Vec::new();
    for stmt in statements {
        recs.extend(index_rules::for_statement(stmt, catalog));
        recs.extend(rewrite_rules::for_statement(stmt, catalog));
    }
    recs.extend(stats_rules::for_statements(statements, catalog));
    recs.extend(index_audit::redundant_and_unused(catalog));
    let mut merged = merge_duplicates(recs);
    fold_index_prefixes(&mut merged);
    merged.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.key().cmp(&b.key()))
    });
    merged
}

fn merge_duplicates(recs: Vec<Recommendation>) -> Vec<Recommendation> {
    let mut out: Vec<Recommendation> = Vec::new();
    for rec in recs {
        match out.iter_mut().find(|r| r.key() == rec.key()) {
            Some(existing) => {
                for q in rec.query_ids {
                    if !existing.query_ids.contains(&q) {
                        existing.query_ids.push(q);
                    }
                }
                existing.confidence = existing.confidence.max(rec.confidence);
            }
            None => out.push(rec),
        }
    }
    out
}

/// An index advised on a partition whose partitioned table is advised an index with the same
/// leading columns: CREATE INDEX on the partitioned table makes that index on every partition
/// (or attaches the partition's, when it was built first), so the partition's advice is folded
/// into the parent's, its statements listed there. hypopg cannot show this: a hypothetical
/// index on a partitioned table gives its partitions none, so the search advises both.
/// `open`: whether a parent's advice is advised (not rejected); only those absorb.
pub fn fold_partition_indexes(
    recs: &mut Vec<Recommendation>,
    catalog: &Catalog,
    open: impl Fn(&Recommendation) -> bool,
) {
    let mut i = 0;
    while i < recs.len() {
        let part = &recs[i];
        let root = part
            .kind
            .creates_index()
            .then(|| catalog.table(&part.table, Some(&part.schema)))
            .flatten()
            .and_then(|t| t.root.clone());
        let parent = root.and_then(|(schema, table)| {
            recs.iter().position(|p| {
                p.kind.creates_index()
                    && p.schema == schema
                    && p.table == table
                    && bare_columns(p).starts_with(&bare_columns(part))
                    && open(p)
            })
        });
        match parent {
            Some(j) => absorb(recs, i, j),
            None => i += 1,
        }
    }
}

/// An advised index's columns without their sort direction.
fn bare_columns(r: &Recommendation) -> Vec<String> {
    r.columns
        .iter()
        .map(|c| without_order(c).to_string())
        .collect()
}

/// Removes advice `i` and lists its statements under advice `j`, which serves them.
fn absorb(recs: &mut Vec<Recommendation>, i: usize, j: usize) {
    let absorbed = recs.remove(i);
    let j = if j > i { j - 1 } else { j };
    for q in absorbed.query_ids {
        if !recs[j].query_ids.contains(&q) {
            recs[j].query_ids.push(q);
        }
    }
}

/// An index on (a) is served by a recommended index on (a, b): keep the wider one and list the
/// narrower one's statements under it.
fn fold_index_prefixes(recs: &mut Vec<Recommendation>) {
    let mut i = 0;
    while i < recs.len() {
        let narrow = &recs[i];
        let wider = (0..recs.len()).find(|&j| {
            j != i
                && recs[j].kind.creates_index()
                && narrow.kind.creates_index()
                && recs[j].schema == narrow.schema
                && recs[j].table == narrow.table
                && bare_columns(&recs[j]).len() > bare_columns(narrow).len()
                && bare_columns(&recs[j]).starts_with(&bare_columns(narrow))
        });
        match wider {
            Some(j) => absorb(recs, i, j),
            None => i += 1,
        }
    }
}

/// An index column label without its order (" DESC", " NULLS LAST", ...).
pub(crate) fn without_order(label: &str) -> &str {
    let order_words = ["DESC", "ASC", "NULLS", "FIRST", "LAST"];
    let mut end = label.len();
    while let Some(space) = label[..end].rfind(' ') {
        if !order_words.contains(&&label[space + 1..end]) {
            break;
        }
        end = space;
    }
    &label[..end]
}

/// Column text as PostgreSQL prints it, for comparisons: no quotes, no spaces, lower case.
pub(crate) fn comparable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests;
