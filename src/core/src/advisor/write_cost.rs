//! What an index costs the writes of its table. Every row inserted adds an entry to every
//! index; an UPDATE adds one to an index whose columns it changes, and when it changed no
//! indexed column before, it loses HOT (heap-only tuple) updating: from then on each such
//! update also adds an entry to every other index of the table. An UPDATE that changes none
//! of the index's columns costs it nothing when it is HOT, but one entry when it is not (no
//! room on the page: a new row version elsewhere enters every index); the table's counters
//! tell the share that is HOT. DELETEs add nothing at once (VACUUM removes the entries later)
//! and are not counted.
//!
//! The writes are the statements optidb recorded from pg_stat_statements over the same window
//! as the reads an index would speed up (their rows are the rows written), so saving and cost
//! are comparable. The time one index entry takes is calibrated on the table's own INSERTs
//! (milliseconds per row shared by the heap and its indexes) when it has any, else a default.

use super::{comparable, without_order, Catalog, Table};
use pg_query::protobuf::Node;
use pg_query::NodeEnum;
use serde_json::{json, Value};

/// Time of one index entry when the table's INSERTs do not tell (a B-tree descent and insert
/// in cached pages, about 10 microseconds).
pub const DEFAULT_ENTRY_MS: f64 = 0.01;
/// Calibration below this is taken as this: a statement's per-row time rounds to nothing.
const MIN_ENTRY_MS: f64 = 0.001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Update,
    Delete,
}

/// One writing statement, as recorded over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub schema: Option<String>,
    pub table: String,
    pub kind: WriteKind,
    /// Columns an UPDATE sets.
    pub set_columns: Vec<String>,
    pub rows: f64,
    pub total_ms: f64,
}

impl Write {
    /// The write a statement's text makes (INSERT, UPDATE, DELETE, COPY FROM), with the rows
    /// and time recorded for it; None for anything else.
    pub fn of_statement(sql: &str, rows: f64, total_ms: f64) -> Option<Write> {
        let parsed = crate::parser::parse(sql).ok()?;
        let node = parsed
            .protobuf
            .stmts
            .first()?
            .stmt
            .as_ref()?
            .node
            .as_ref()?;
        let (relation, kind, targets): (_, _, &[Node]) = match node {
            NodeEnum::InsertStmt(s) => (s.relation.as_ref()?, WriteKind::Insert, &[]),
            NodeEnum::UpdateStmt(s) => (s.relation.as_ref()?, WriteKind::Update, &s.target_list),
            NodeEnum::DeleteStmt(s) => (s.relation.as_ref()?, WriteKind::Delete, &[]),
            NodeEnum::CopyStmt(s) if s.is_from => (s.relation.as_ref()?, WriteKind::Insert, &[]),
            _ => return None,
        };
        Some(Write {
            schema: Some(relation.schemaname.clone()).filter(|s| !s.is_empty()),
            table: relation.relname.clone(),
            kind,
            set_columns: targets.iter().filter_map(set_column).collect(),
            rows,
            total_ms,
        })
    }

    fn writes_to(&self, catalog: &Catalog, table: &Table) -> bool {
        catalog
            .table(&self.table, self.schema.as_deref())
            .is_some_and(|t| {
                (t.schema == table.schema && t.name == table.name)
                    || catalog
                        .partition_root(t)
                        .is_some_and(|r| r.schema == table.schema && r.name == table.name)
            })
    }
}

fn set_column(target: &Node) -> Option<String> {
    match target.node.as_ref()? {
        NodeEnum::ResTarget(r) => Some(r.name.clone()),
        _ => None,
    }
}

/// The write cost of one index over the window, with what it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteCost {
    pub ms: f64,
    pub entries: f64,
    pub evidence: Value,
}

/// What an index on `labels` of `table` would cost the writes recorded over the window.
pub fn of_index(
    catalog: &Catalog,
    table: &Table,
    labels: &[String],
    writes: &[Write],
) -> WriteCost {
    let mine: Vec<&Write> = writes
        .iter()
        .filter(|w| w.writes_to(catalog, table))
        .collect();
    let existing: Vec<Vec<String>> = catalog
        .indexes_of(table)
        .filter(|i| i.is_valid)
        .map(|i| i.columns.iter().map(|c| comparable(c)).collect())
        .collect();
    let columns: Vec<String> = labels
        .iter()
        .map(|l| comparable(without_order(l)))
        .collect();
    let touches = |set: &[String], cols: &[String]| {
        set.iter()
            .any(|s| cols.iter().any(|c| names_column(c, &comparable(s))))
    };
    let hot_share = if table.updated_rows > 0 {
        table.hot_updated_rows as f64 / table.updated_rows as f64
    } else {
        1.0
    };
    let (mut inserted, mut updated, mut hot_lost, mut not_hot) = (0.0, 0.0, 0.0, 0.0);
    for w in &mine {
        match w.kind {
            WriteKind::Insert => inserted += w.rows,
            WriteKind::Update if touches(&w.set_columns, &columns) => {
                updated += w.rows;
                let was_hot = !existing.iter().any(|cols| touches(&w.set_columns, cols));
                if was_hot {
                    hot_lost += w.rows * hot_share;
                }
            }
            WriteKind::Update => not_hot += w.rows * (1.0 - hot_share),
            WriteKind::Delete => {}
        }
    }
    let entry_ms = entry_ms(&mine, existing.len());
    let entries = inserted + updated + not_hot + hot_lost * existing.len() as f64;
    WriteCost {
        ms: entries * entry_ms,
        entries,
        evidence: json!({
            "rows_inserted": inserted,
            "rows_updated_in_indexed_columns": updated,
            "hot_updates_lost": hot_lost,
            "rows_updated_elsewhere_not_hot": not_hot,
            "other_indexes": existing.len(),
            "index_entries": entries,
            "ms_per_entry": entry_ms,
            "ms_per_entry_from": if calibrated(&mine) { "the table's INSERTs" } else { "default" },
        }),
    }
}

/// An index column (a name, or an expression's text) is `column` or reads it: the name as a
/// whole identifier, so `lower(email)` reads `email` but `username` does not read `name`.
fn names_column(index_column: &str, column: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    index_column == column || index_column.split(|c: char| !ident(c)).any(|w| w == column)
}

fn calibrated(writes: &[&Write]) -> bool {
    writes
        .iter()
        .any(|w| w.kind == WriteKind::Insert && w.rows > 0.0 && w.total_ms > 0.0)
}

/// Milliseconds per index entry: the median over the table's INSERTs of their time per row,
/// shared by the heap and the indexes it has.
fn entry_ms(writes: &[&Write], indexes: usize) -> f64 {
    let mut per_row: Vec<f64> = writes
        .iter()
        .filter(|w| w.kind == WriteKind::Insert && w.rows > 0.0 && w.total_ms > 0.0)
        .map(|w| w.total_ms / w.rows / (1 + indexes) as f64)
        .collect();
    if per_row.is_empty() {
        return DEFAULT_ENTRY_MS;
    }
    per_row.sort_by(f64::total_cmp);
    per_row[per_row.len() / 2].max(MIN_ENTRY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::{Index, Table};

    fn catalog() -> Catalog {
        Catalog {
            tables: vec![Table {
                schema: "app".into(),
                name: "events".into(),
                rows_est: 200_000.0,
                updated_rows: 100,
                hot_updated_rows: 100,
                ..Table::default()
            }],
            indexes: vec![Index {
                schema: "app".into(),
                table: "events".into(),
                name: "events_pkey".into(),
                columns: vec!["id".into()],
                is_valid: true,
                access_method: "btree".into(),
                ..Index::default()
            }],
            ..Catalog::default()
        }
    }

    #[test]
    fn statements_are_read_as_writes_of_their_tables() {
        let w = Write::of_statement("UPDATE app.events SET status = $1 WHERE id = $2", 5.0, 1.0)
            .unwrap();
        assert_eq!(w.kind, WriteKind::Update);
        assert_eq!(w.schema.as_deref(), Some("app"));
        assert_eq!(w.set_columns, vec!["status"]);
        let c = Write::of_statement("COPY events FROM STDIN", 10.0, 1.0).unwrap();
        assert_eq!((c.kind, c.table.as_str()), (WriteKind::Insert, "events"));
        assert!(Write::of_statement("SELECT 1", 1.0, 1.0).is_none());
        assert!(Write::of_statement("COPY events TO STDOUT", 1.0, 1.0).is_none());
    }

    #[test]
    fn updates_of_indexed_columns_cost_entries_and_lose_hot() {
        let cat = catalog();
        let table = &cat.tables[0];
        let writes = vec![
            Write::of_statement("INSERT INTO events (status) VALUES ($1)", 9000.0, 90.0).unwrap(),
            Write::of_statement("UPDATE events SET status = $1 WHERE id = $2", 9000.0, 90.0)
                .unwrap(),
            Write::of_statement("UPDATE events SET note = $1 WHERE id = $2", 500.0, 5.0).unwrap(),
        ];
        let on_status = of_index(&cat, table, &["status".into()], &writes);
        // 9000 inserts + 9000 updates of status, which were HOT: each also enters events_pkey.
        assert_eq!(on_status.entries, 9000.0 + 9000.0 + 9000.0);
        // 90 ms / 9000 rows shared by the heap and one index.
        assert!((on_status.ms - 27_000.0 * 0.005).abs() < 1e-6);
        let on_other = of_index(&cat, table, &["created_at".into()], &writes);
        assert_eq!(on_other.entries, 9000.0);
    }

    #[test]
    fn an_update_of_one_column_costs_nothing_to_an_index_whose_name_only_contains_it() {
        let cat = catalog();
        let table = &cat.tables[0];
        let writes =
            vec![
                Write::of_statement("UPDATE events SET name = $1 WHERE id = $2", 9000.0, 90.0)
                    .unwrap(),
            ];
        let on_username = of_index(&cat, table, &["username".into()], &writes);
        assert_eq!(on_username.entries, 0.0);
        // An expression that reads the column is maintained on each such update.
        let on_lower = of_index(&cat, table, &["lower(name)".into()], &writes);
        assert_eq!(on_lower.entries, 9000.0 + 9000.0);
    }

    #[test]
    fn updates_that_are_not_hot_enter_every_index_whatever_they_set() {
        let mut cat = catalog();
        // A quarter of the table's updates were HOT: the rest found no room on their page.
        cat.tables[0].hot_updated_rows = 25;
        let table = &cat.tables[0];
        let writes =
            vec![
                Write::of_statement("UPDATE events SET note = $1 WHERE id = $2", 800.0, 8.0)
                    .unwrap(),
            ];
        let cost = of_index(&cat, table, &["status".into()], &writes);
        assert_eq!(cost.entries, 600.0);
        assert_eq!(
            cost.evidence["rows_updated_elsewhere_not_hot"],
            json!(600.0)
        );
    }

    #[test]
    fn without_inserts_to_learn_from_the_default_applies() {
        let cat = catalog();
        let writes =
            vec![Write::of_statement("DELETE FROM events WHERE id = $1", 50.0, 1.0).unwrap()];
        let cost = of_index(&cat, &cat.tables[0], &["status".into()], &writes);
        assert_eq!(cost.entries, 0.0);
        assert_eq!(cost.evidence["ms_per_entry"], json!(DEFAULT_ENTRY_MS));
    }
}
