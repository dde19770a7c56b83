//! Index candidates for one statement: every column list the planner could use, read off the
//! statement's plan. Equality and range filters of every scan (whatever its method), join keys
//! of every join method, ORDER BY and GROUP BY keys (with their direction), equality columns
//! followed by the sort keys, and existing indexes extended by one more column. A scan of a
//! partition proposes the index on its partitioned table (one CREATE INDEX there makes it on
//! every partition), unless the statement names that partition itself: then the index is the
//! partition's alone (the statement needs no other partition's index, and a partition's index
//! is smaller and can be built CONCURRENTLY). Nothing here judges a candidate: hypopg costs do
//! (src/api/index_search.rs).

use super::index_rules::{eq_selectivity, sort_columns, MIN_TABLE_ROWS};
use super::{comparable, without_order, Catalog, Kind, Table};
use crate::plan_facts::PlanFacts;
use crate::predicates::{self, Operator, Target};

/// Most multi-column candidates tried per relation of a statement: the what-if EXPLAIN costs
/// grow with them, and the best lists come first.
const MAX_MULTI_PER_RELATION: usize = 24;
/// Equality columns combined with each other (ordered pairs of the most selective ones).
const PAIRED_EQUALITIES: usize = 4;

/// One index that could be made.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub schema: String,
    pub table: String,
    /// `schema.table`, quoted.
    pub qualified: String,
    /// Index elements as CREATE INDEX takes them: quoted columns or trusted expressions in
    /// parentheses, with their order (" DESC").
    pub elements: Vec<String>,
    /// The same, as recommendations list columns (unquoted).
    pub labels: Vec<String>,
    /// Why each element is there: equality, range, join key, order by, group by.
    pub roles: Vec<&'static str>,
    pub has_expression: bool,
}

impl Candidate {
    /// Identity: the same index proposed by several statements is one candidate.
    pub fn key(&self) -> String {
        format!("{}.{}:{}", self.schema, self.table, self.labels.join(","))
    }

    /// The plain CREATE INDEX hypopg tries.
    pub fn index_sql(&self) -> String {
        format!(
            "CREATE INDEX ON {} ({})",
            self.qualified,
            self.elements.join(", ")
        )
    }

    /// Can this index stand in for `other`: same table, `other`'s columns are its leading
    /// ones (a single column in either direction: a B-tree is read both ways)?
    pub fn covers(&self, other: &Candidate) -> bool {
        let n = other.labels.len();
        let bare = |l: &String| comparable(without_order(l));
        self.schema == other.schema
            && self.table == other.table
            && self.labels.len() > n
            && (self.labels[..n] == other.labels[..]
                || (n == 1 && bare(&self.labels[0]) == bare(&other.labels[0])))
    }

    /// The same index on the table of the same name in another schema.
    pub fn in_schema(&self, schema: &str) -> Candidate {
        Candidate {
            schema: schema.to_string(),
            qualified: format!(
                "{}.{}",
                crate::predicates::quote_ident(schema),
                crate::predicates::quote_ident(&self.table)
            ),
            ..self.clone()
        }
    }

    pub fn kind(&self) -> Kind {
        if self.has_expression {
            Kind::ExpressionIndex
        } else if self.elements.len() > 1 {
            Kind::CompositeIndex
        } else {
            Kind::MissingIndex
        }
    }
}

/// A statement's candidates in the two passes of the search: single columns first, then
/// column lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementCandidates {
    pub singles: Vec<Candidate>,
    pub multis: Vec<Candidate>,
}

impl StatementCandidates {
    /// The candidates for another resolution of the statement's names (the same text run
    /// under a search_path that found another schema's tables): each moved to the schema
    /// `schema_of` gives its table there; one whose table it gives none for is dropped.
    pub fn resolved_in(
        &self,
        schema_of: impl Fn(&Candidate) -> Option<String>,
    ) -> StatementCandidates {
        let moved = |list: &[Candidate]| -> Vec<Candidate> {
            list.iter()
                .filter_map(|c| schema_of(c).map(|schema| c.in_schema(&schema)))
                .collect()
        };
        StatementCandidates {
            singles: moved(&self.singles),
            multis: moved(&self.multis),
        }
    }
}

/// One element and why it is proposed.
#[derive(Debug, Clone, PartialEq)]
struct Element {
    element: String,
    label: String,
    role: &'static str,
    expression: bool,
}

/// What one relation of the plan is filtered, joined and sorted by.
#[derive(Default)]
struct Uses {
    equalities: Vec<(Element, f64)>,
    ranges: Vec<Element>,
    sort_keys: Vec<Vec<Element>>,
}

/// `named`: the relations the statement's text names (StatementInfo::tables, `schema.name`
/// when written qualified).
pub fn for_statement(plan: &PlanFacts, catalog: &Catalog, named: &[String]) -> StatementCandidates {
    let mut out = StatementCandidates::default();
    let mut seen: Vec<(String, Option<String>, String)> = Vec::new();
    for scan in &plan.relation_scans {
        let alias = scan.alias.clone().unwrap_or_else(|| scan.relation.clone());
        let id = (scan.relation.clone(), scan.schema.clone(), alias.clone());
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let Some(scanned) = catalog.table(&scan.relation, scan.schema.as_deref()) else {
            continue;
        };
        // A partition reached through its partitioned table is indexed there.
        let table = match names_itself(named, scanned) {
            true => scanned,
            false => catalog.partition_root(scanned).unwrap_or(scanned),
        };
        if catalog.rows_with_partitions(table) < MIN_TABLE_ROWS {
            continue;
        }
        let uses = uses_of(plan, scanned, &scan.relation, &alias, catalog);
        for list in singles(&uses)
            .into_iter()
            .chain(multis(&uses, catalog, table))
        {
            let target = if list.len() == 1 {
                &mut out.singles
            } else {
                &mut out.multis
            };
            push_candidate(target, catalog, table, list);
        }
    }
    out
}

/// Does the statement name this table itself (by its name, or schema and name)?
fn names_itself(named: &[String], table: &Table) -> bool {
    named.iter().any(|n| match n.rsplit_once('.') {
        Some((schema, name)) => schema == table.schema && name == table.name,
        None => *n == table.name,
    })
}

fn uses_of(
    plan: &PlanFacts,
    scanned: &Table,
    relation: &str,
    alias: &str,
    catalog: &Catalog,
) -> Uses {
    let mut uses = Uses::default();
    let add = |target: &Target, op: Operator, role: &'static str, uses: &mut Uses| {
        let Some(element) = target.index_element() else {
            return;
        };
        let e = Element {
            element,
            label: target.label().to_string(),
            role,
            expression: matches!(target, Target::Expression(_)),
        };
        match op {
            Operator::Eq if !uses.equalities.iter().any(|(x, _)| x.label == e.label) => {
                let sel = eq_selectivity(catalog, scanned, target);
                uses.equalities.push((e, sel));
            }
            Operator::Range if !uses.ranges.iter().any(|x| x.label == e.label) => {
                uses.ranges.push(e)
            }
            _ => {}
        }
    };
    for c in plan
        .scan_conditions
        .iter()
        .filter(|c| c.relation == relation && c.alias.as_deref().unwrap_or(&c.relation) == alias)
    {
        for p in predicates::on_relation(&c.condition, alias) {
            add(&p.target, p.op, role_of(p.op), &mut uses);
        }
    }
    for join in &plan.join_conditions {
        for p in predicates::on_relation(join, alias) {
            let role = if p.op == Operator::Eq {
                "join key"
            } else {
                "range"
            };
            add(&p.target, p.op, role, &mut uses);
        }
    }
    uses.equalities.sort_by(|a, b| a.1.total_cmp(&b.1));
    let sorts = plan.sorts.iter().map(|s| (&s.keys, "order by"));
    let groups = plan.group_keys.iter().map(|k| (k, "group by"));
    for (keys, role) in sorts.chain(groups) {
        let node = crate::plan_facts::SortNode {
            keys: keys.clone(),
            est_rows: 0.0,
            on_disk: false,
            under_limit: false,
        };
        if let Some(columns) = sort_columns(&node, alias) {
            let list: Vec<Element> = columns
                .into_iter()
                .map(|(column, order)| Element {
                    element: format!("{}{order}", predicates::quote_ident(&column)),
                    label: format!("{column}{order}"),
                    role,
                    expression: false,
                })
                .collect();
            if !list.is_empty() && !uses.sort_keys.contains(&list) {
                uses.sort_keys.push(list);
            }
        }
    }
    uses
}

fn role_of(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "equality",
        _ => "range",
    }
}

fn singles(uses: &Uses) -> Vec<Vec<Element>> {
    let mut out: Vec<Vec<Element>> = Vec::new();
    let columns = uses.equalities.iter().map(|(e, _)| e).chain(&uses.ranges);
    out.extend(columns.map(|e| vec![e.clone()]));
    out.extend(
        uses.sort_keys
            .iter()
            .filter_map(|k| k.first())
            .map(|e| vec![e.clone()]),
    );
    out
}

/// Column lists, best first: the most selective equalities together, each ordered pair of
/// them, an equality then a range, equalities then the sort keys, whole sort keys, and every
/// existing index of the table extended by one column the statement filters on.
fn multis(uses: &Uses, catalog: &Catalog, table: &Table) -> Vec<Vec<Element>> {
    let eq: Vec<&Element> = uses.equalities.iter().map(|(e, _)| e).collect();
    let mut out: Vec<Vec<Element>> = Vec::new();
    let list = |items: &[&Element]| items.iter().map(|e| (*e).clone()).collect::<Vec<_>>();
    for n in 2..=eq.len().min(3) {
        out.push(list(&eq[..n]));
    }
    let paired = &eq[..eq.len().min(PAIRED_EQUALITIES)];
    for a in paired {
        for b in paired.iter().filter(|b| b.label != a.label) {
            out.push(list(&[a, b]));
        }
    }
    for e in eq.iter().take(3) {
        for r in uses.ranges.iter().take(2) {
            out.push(list(&[e, r]));
        }
    }
    if eq.len() >= 2 {
        for r in uses.ranges.iter().take(2) {
            out.push(list(&[eq[0], eq[1], r]));
        }
    }
    for keys in &uses.sort_keys {
        if keys.len() > 1 {
            out.push(keys.clone());
        }
        for prefix in [&eq[..eq.len().min(1)], &eq[..eq.len().min(2)]] {
            if prefix.is_empty() {
                continue;
            }
            let mut l = list(prefix);
            l.extend(
                keys.iter()
                    .filter(|k| !prefix.iter().any(|p| p.label == k.label))
                    .cloned(),
            );
            out.push(l);
        }
    }
    // An existing index extended by one more column: it may serve as is, the search decides.
    let filtered: Vec<&Element> = eq.iter().copied().chain(&uses.ranges).collect();
    for index in catalog.indexes_of(table).filter(|i| extendable(i)) {
        let have: Vec<String> = index.columns.iter().map(|c| comparable(c)).collect();
        if !have
            .iter()
            .any(|h| filtered.iter().any(|e| comparable(&e.label) == *h))
        {
            continue;
        }
        for extra in filtered
            .iter()
            .filter(|e| !have.contains(&comparable(&e.label)))
        {
            let mut l: Vec<Element> = index
                .columns
                .iter()
                .map(|c| Element {
                    element: predicates::quote_ident(c),
                    label: c.clone(),
                    role: "existing index",
                    expression: false,
                })
                .collect();
            l.push((*extra).clone());
            out.push(l);
        }
    }
    let mut distinct: Vec<Vec<Element>> = Vec::new();
    for l in out {
        let labels = |l: &Vec<Element>| l.iter().map(|e| e.label.clone()).collect::<Vec<_>>();
        let has_duplicate = (1..l.len()).any(|i| l[..i].iter().any(|e| e.label == l[i].label));
        if !has_duplicate && !distinct.iter().any(|d| labels(d) == labels(&l)) {
            distinct.push(l);
        }
    }
    distinct.truncate(MAX_MULTI_PER_RELATION);
    distinct
}

/// A plain B-tree index on columns only, of at most three keys: one more column is a candidate.
fn extendable(index: &super::Index) -> bool {
    index.is_valid
        && index.access_method == "btree"
        && index.predicate.is_none()
        && index.columns.len() <= 3
        && index.columns.iter().all(|c| !c.contains('('))
}

fn push_candidate(out: &mut Vec<Candidate>, catalog: &Catalog, table: &Table, list: Vec<Element>) {
    let labels: Vec<String> = list.iter().map(|e| e.label.clone()).collect();
    if already_indexed(catalog, table, &labels) {
        return;
    }
    let candidate = Candidate {
        schema: table.schema.clone(),
        table: table.name.clone(),
        qualified: table.qualified(),
        elements: list.iter().map(|e| e.element.clone()).collect(),
        labels,
        roles: list.iter().map(|e| e.role).collect(),
        has_expression: list.iter().any(|e| e.expression),
    };
    if !out.iter().any(|c| c.key() == candidate.key()) {
        out.push(candidate);
    }
}

/// True when a valid, unconditional B-tree index already starts with these columns in this
/// order (directions aside: a B-tree is read both ways).
pub(super) fn already_indexed(catalog: &Catalog, table: &Table, labels: &[String]) -> bool {
    let wanted: Vec<String> = labels
        .iter()
        .map(|l| comparable(without_order(l)))
        .collect();
    catalog.indexes_of(table).any(|index| {
        index.is_valid
            && index.access_method == "btree"
            && index.predicate.is_none()
            && index.columns.len() >= wanted.len()
            && index
                .columns
                .iter()
                .zip(&wanted)
                .all(|(have, want)| comparable(without_order(have)) == *want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::{Column, Index};
    use crate::plan_facts::from_explain_json;
    use serde_json::json;

    fn table(name: &str, rows: f64, root: Option<&str>) -> Table {
        Table {
            schema: "app".into(),
            name: name.into(),
            rows_est: rows,
            root: root.map(|r| ("app".to_string(), r.to_string())),
            ..Table::default()
        }
    }

    fn catalog() -> Catalog {
        Catalog {
            tables: vec![
                table("book", 20_000.0, None),
                table("review", 200_000.0, None),
                table("measurement", 0.0, None),
                table("measurement_q1", 100_000.0, Some("measurement")),
                table("post", 200_000.0, None),
            ],
            indexes: vec![Index {
                schema: "app".into(),
                table: "book".into(),
                name: "book_pkey".into(),
                columns: vec!["id".into()],
                is_valid: true,
                access_method: "btree".into(),
                ..Index::default()
            }],
            columns: vec![Column {
                schema: "app".into(),
                table: "post".into(),
                name: "blog_id".into(),
                n_distinct: Some(1000.0),
                null_frac: Some(0.0),
                ..Column::default()
            }],
            stats_since: None,
        }
    }

    fn labels(list: &[Candidate]) -> Vec<String> {
        list.iter()
            .map(|c| format!("{}({})", c.table, c.labels.join(",")))
            .collect()
    }

    /// Reviews of one author's books: a hash join of review and book, book filtered.
    fn review_of_books_by_author() -> crate::plan_facts::PlanFacts {
        from_explain_json(&json!({"Plan": {
            "Node Type": "Hash Join", "Hash Cond": "(r.book_id = b.id)", "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "review", "Schema": "app",
                 "Alias": "r"},
                {"Node Type": "Hash", "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "book", "Schema": "app",
                     "Alias": "b", "Filter": "(b.author_id = $1)"}]}]}}))
        .unwrap()
    }

    #[test]
    fn both_sides_of_a_hash_join_propose_their_join_keys() {
        let plan = review_of_books_by_author();
        let c = for_statement(&plan, &catalog(), &[]);
        let singles = labels(&c.singles);
        assert!(
            singles.contains(&"review(book_id)".to_string()),
            "{singles:?}"
        );
        assert!(
            singles.contains(&"book(author_id)".to_string()),
            "{singles:?}"
        );
        // book.id has its primary key already.
        assert!(!singles.contains(&"book(id)".to_string()), "{singles:?}");
        assert!(labels(&c.multis).contains(&"book(author_id,id)".to_string()));
    }

    #[test]
    fn a_partition_scan_proposes_the_index_on_its_partitioned_table() {
        let plan = from_explain_json(&json!({"Plan": {
            "Node Type": "Seq Scan", "Relation Name": "measurement_q1", "Schema": "app",
            "Alias": "measurement", "Filter": "(measurement.sensor_id = $1)"}}))
        .unwrap();
        let c = for_statement(&plan, &catalog(), &[]);
        assert_eq!(labels(&c.singles), vec!["measurement(sensor_id)"]);
        assert_eq!(
            c.singles[0].index_sql(),
            "CREATE INDEX ON app.measurement (sensor_id)"
        );
    }

    #[test]
    fn a_partition_the_statement_names_itself_is_indexed_alone() {
        let plan = from_explain_json(&json!({"Plan": {
            "Node Type": "Seq Scan", "Relation Name": "measurement_q1", "Schema": "app",
            "Alias": "measurement_q1", "Filter": "(measurement_q1.sensor_id = $1)"}}))
        .unwrap();
        for named in ["measurement_q1", "app.measurement_q1"] {
            let c = for_statement(&plan, &catalog(), &[named.to_string()]);
            assert_eq!(
                labels(&c.singles),
                vec!["measurement_q1(sensor_id)"],
                "{named}"
            );
        }
        // The same name in another schema is not this partition.
        let c = for_statement(&plan, &catalog(), &["other.measurement_q1".to_string()]);
        assert_eq!(labels(&c.singles), vec!["measurement(sensor_id)"]);
    }

    #[test]
    fn an_equality_and_the_sort_under_a_limit_make_one_list() {
        let plan = from_explain_json(&json!({"Plan": {
            "Node Type": "Limit", "Plans": [{"Node Type": "Sort",
            "Sort Key": ["p.created_at DESC"], "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "post", "Schema": "app",
                 "Alias": "p", "Filter": "(p.blog_id = $1)"}]}]}}))
        .unwrap();
        let c = for_statement(&plan, &catalog(), &[]);
        assert_eq!(
            labels(&c.singles),
            vec!["post(blog_id)", "post(created_at DESC)"]
        );
        assert!(labels(&c.multis).contains(&"post(blog_id,created_at DESC)".to_string()));
        assert_eq!(
            c.multis
                .iter()
                .find(|m| m.labels.len() == 2)
                .map(|m| m.index_sql()),
            Some("CREATE INDEX ON app.post (blog_id, created_at DESC)".to_string())
        );
        let wide = c.multis.iter().find(|m| m.labels[0] == "blog_id").unwrap();
        assert!(wide.covers(&c.singles[0]) && !c.singles[0].covers(wide));
    }

    #[test]
    fn another_resolution_moves_each_candidate_to_its_schema_or_drops_it() {
        let plan = review_of_books_by_author();
        let c = for_statement(&plan, &catalog(), &[]);
        // The other tenant has its own review table; its book is not known.
        let moved = c.resolved_in(|c| (c.table == "review").then(|| "Tenant 2".to_string()));
        assert_eq!(labels(&moved.singles), vec!["review(book_id)"]);
        assert!(moved.multis.iter().all(|m| m.table == "review"));
        assert_eq!(
            moved.singles[0].index_sql(),
            "CREATE INDEX ON \"Tenant 2\".review (book_id)"
        );
        assert_eq!(moved.singles[0].key(), "Tenant 2.review:book_id");
    }

    #[test]
    fn small_tables_propose_nothing() {
        let mut cat = catalog();
        cat.tables[4].rows_est = 500.0;
        let plan = from_explain_json(&json!({"Plan": {
            "Node Type": "Seq Scan", "Relation Name": "post", "Schema": "app", "Alias": "post",
            "Filter": "(post.user_id = $1)"}}))
        .unwrap();
        assert_eq!(
            for_statement(&plan, &cat, &[]),
            StatementCandidates::default()
        );
    }
}
