//! Predicates a scan applies to its relation, read from a plan condition such as
//! `((customer_id = $1) AND (created_at > (now() - $2::interval)))`.
//!
//! The condition is parsed by pg_query (as `SELECT WHERE <condition>`), never pattern-matched,
//! and split into AND-ed conjuncts. A conjunct is kept when one side is a column (or an
//! expression over columns) of the scanned relation and the other side does not depend on it
//! (a parameter, a constant, an outer column): exactly the shape an index can serve.

use pg_query::protobuf::{self, AExprKind, BoolExprType, NullTestType};
use pg_query::{Node, NodeEnum};

/// What the index would be built on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Column(String),
    /// Canonical expression text, e.g. `lower(email)`.
    Expression(String),
}

impl Target {
    /// The text as it appears in CREATE INDEX (expressions need their own parentheses): a
    /// column, or an expression of trusted built-ins only, schema-qualified
    /// (crate::index_expression); None for any other expression, which optidb never indexes.
    pub fn index_element(&self) -> Option<String> {
        match self {
            Target::Column(c) => Some(quote_ident(c)),
            Target::Expression(e) => crate::index_expression::trusted(e).map(|q| format!("({q})")),
        }
    }

    /// Plain text used to compare with pg_get_indexdef() column output.
    pub fn label(&self) -> &str {
        match self {
            Target::Column(c) => c,
            Target::Expression(e) => e,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=`, `= ANY(...)`, `IS NULL`: usable as a leading index column.
    Eq,
    /// `<`, `<=`, `>`, `>=`, BETWEEN: usable as the last index column.
    Range,
    /// LIKE / ILIKE (`~~`, `~~*`): a B-tree serves only left-anchored patterns.
    Like,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub target: Target,
    pub op: Operator,
}

/// Predicates of `condition` on the relation scanned as `alias` (its own name when it has no
/// alias). Conditions that do not parse give no predicates: advice is then simply not given.
pub fn on_relation(condition: &str, alias: &str) -> Vec<Predicate> {
    // EXPLAIN names subplans ("(hashed SubPlan 1)") in conditions; they are not SQL.
    let condition = subplan_reference().replace_all(condition, "NULL");
    let Ok(parsed) = crate::parser::parse(&format!("SELECT WHERE {condition}")) else {
        return Vec::new();
    };
    let Some(NodeEnum::SelectStmt(select)) = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref())
    else {
        return Vec::new();
    };
    let Some(where_clause) = select.where_clause.as_deref() else {
        return Vec::new();
    };
    let mut conjuncts = Vec::new();
    flatten_and(where_clause, &mut conjuncts);
    conjuncts
        .into_iter()
        .filter_map(|c| predicate(c, alias))
        .collect()
}

fn subplan_reference() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"(hashed\s+)?(SubPlan|InitPlan)\s+\d+").expect("valid"))
}

fn flatten_and<'a>(node: &'a Node, out: &mut Vec<&'a Node>) {
    match node.node.as_ref() {
        Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::AndExpr as i32 => {
            for arg in &b.args {
                flatten_and(arg, out);
            }
        }
        _ => out.push(node),
    }
}

fn predicate(node: &Node, alias: &str) -> Option<Predicate> {
    match node.node.as_ref()? {
        NodeEnum::AExpr(e) => {
            let name = operator_name(&e.name)?;
            let op = match (AExprKind::try_from(e.kind).ok()?, name.as_str()) {
                (AExprKind::AexprOp, "=") | (AExprKind::AexprOpAny, "=") => Operator::Eq,
                (AExprKind::AexprOp, "<" | "<=" | ">" | ">=") => Operator::Range,
                (AExprKind::AexprBetween, _) => Operator::Range,
                (AExprKind::AexprOp, "~~" | "~~*") | (AExprKind::AexprLike, _) => Operator::Like,
                (AExprKind::AexprIlike, _) => Operator::Like,
                _ => return None,
            };
            let (left, right) = (e.lexpr.as_deref()?, e.rexpr.as_deref()?);
            let own = if refers_to(left, alias) && !refers_to(right, alias) {
                left
            } else if refers_to(right, alias) && !refers_to(left, alias) && op != Operator::Like {
                right
            } else {
                return None;
            };
            Some(Predicate {
                target: target(own, alias)?,
                op,
            })
        }
        NodeEnum::NullTest(t) if t.nulltesttype == NullTestType::IsNull as i32 => {
            let arg = t.arg.as_deref()?;
            refers_to(arg, alias).then_some(())?;
            Some(Predicate {
                target: target(arg, alias)?,
                op: Operator::Eq,
            })
        }
        _ => None,
    }
}

fn operator_name(name: &[Node]) -> Option<String> {
    match name.last()?.node.as_ref()? {
        NodeEnum::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

/// True when the expression reads a column of the relation (unqualified, or qualified by its
/// alias). EXPLAIN prints other relations' columns qualified, so unqualified means ours.
fn refers_to(node: &Node, alias: &str) -> bool {
    let mut found = false;
    visit_column_refs(node, &mut |fields| {
        if own_column(fields, alias).is_some() {
            found = true;
        }
    });
    found
}

fn own_column(fields: &[String], alias: &str) -> Option<String> {
    match fields {
        [column] => Some(column.clone()),
        [qualifier, column] if qualifier == alias => Some(column.clone()),
        _ => None,
    }
}

fn target(node: &Node, alias: &str) -> Option<Target> {
    let node = strip_casts(node);
    if let Some(NodeEnum::ColumnRef(c)) = node.node.as_ref() {
        return own_column(&field_names(c), alias).map(Target::Column);
    }
    // An expression over our columns: print it back without qualifiers, as an index would.
    let mut unqualified = node.clone();
    unqualify(&mut unqualified, alias);
    deparse_expression(&unqualified).map(Target::Expression)
}

/// `(email)::text` around a column is how EXPLAIN shows implicit casts; the index is on the
/// column itself.
fn strip_casts(node: &Node) -> &Node {
    match node.node.as_ref() {
        Some(NodeEnum::TypeCast(t)) => match t.arg.as_deref() {
            Some(inner) if matches!(inner.node, Some(NodeEnum::ColumnRef(_))) => inner,
            _ => node,
        },
        _ => node,
    }
}

fn field_names(c: &protobuf::ColumnRef) -> Vec<String> {
    c.fields
        .iter()
        .filter_map(|f| match f.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

/// Calls `f` with the name parts of every column reference under `node`.
fn visit_column_refs(node: &Node, f: &mut dyn FnMut(&[String])) {
    let Some(inner) = node.node.as_ref() else {
        return;
    };
    match inner {
        NodeEnum::ColumnRef(c) => f(&field_names(c)),
        NodeEnum::AExpr(e) => {
            for side in [&e.lexpr, &e.rexpr].into_iter().flatten() {
                visit_column_refs(side, f);
            }
        }
        NodeEnum::FuncCall(call) => call.args.iter().for_each(|a| visit_column_refs(a, f)),
        NodeEnum::TypeCast(t) => {
            if let Some(arg) = &t.arg {
                visit_column_refs(arg, f);
            }
        }
        NodeEnum::BoolExpr(b) => b.args.iter().for_each(|a| visit_column_refs(a, f)),
        NodeEnum::List(l) => l.items.iter().for_each(|a| visit_column_refs(a, f)),
        NodeEnum::CoalesceExpr(c) => c.args.iter().for_each(|a| visit_column_refs(a, f)),
        NodeEnum::NullTest(t) => {
            if let Some(arg) = &t.arg {
                visit_column_refs(arg, f);
            }
        }
        NodeEnum::CollateClause(c) => {
            if let Some(arg) = &c.arg {
                visit_column_refs(arg, f);
            }
        }
        _ => {}
    }
}

fn unqualify(node: &mut Node, alias: &str) {
    let Some(inner) = node.node.as_mut() else {
        return;
    };
    match inner {
        NodeEnum::ColumnRef(c)
            if c.fields.len() == 2 && field_names(c).first().map(String::as_str) == Some(alias) =>
        {
            c.fields.remove(0);
        }
        NodeEnum::AExpr(e) => {
            for side in [&mut e.lexpr, &mut e.rexpr].into_iter().flatten() {
                unqualify(side, alias);
            }
        }
        NodeEnum::FuncCall(call) => call.args.iter_mut().for_each(|a| unqualify(a, alias)),
        NodeEnum::TypeCast(t) => {
            if let Some(arg) = t.arg.as_deref_mut() {
                unqualify(arg, alias);
            }
        }
        NodeEnum::CoalesceExpr(c) => c.args.iter_mut().for_each(|a| unqualify(a, alias)),
        _ => {}
    }
}

/// Print one expression node as SQL by deparsing `SELECT <expr>`.
pub(crate) fn deparse_expression(expr: &Node) -> Option<String> {
    let target = Node {
        node: Some(NodeEnum::ResTarget(Box::new(protobuf::ResTarget {
            val: Some(Box::new(expr.clone())),
            ..Default::default()
        }))),
    };
    let select = Node {
        node: Some(NodeEnum::SelectStmt(Box::new(protobuf::SelectStmt {
            target_list: vec![target],
            limit_option: protobuf::LimitOption::Default as i32,
            op: protobuf::SetOperation::SetopNone as i32,
            ..Default::default()
        }))),
    };
    let tree = protobuf::ParseResult {
        version: crate::parser::parse("SELECT").ok()?.protobuf.version,
        stmts: vec![protobuf::RawStmt {
            stmt: Some(Box::new(select)),
            stmt_location: 0,
            stmt_len: 0,
        }],
    };
    let text = crate::parser::deparse(&tree).ok()?;
    text.strip_prefix("SELECT ").map(str::to_string)
}

/// Quote an identifier the way PostgreSQL's quote_ident() does.
pub fn quote_ident(name: &str) -> String {
    quote_unless(name, is_lower_case_name(name) && !is_reserved(name))
}

/// `name` as it is, or in double quotes (inner ones doubled) unless `bare` says it may stand
/// without.
pub(crate) fn quote_unless(name: &str, bare: bool) -> String {
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A name PostgreSQL reads back unchanged without quotes, keywords aside: lower-case ASCII
/// letters, digits and underscores, not starting with a digit.
pub(crate) fn is_lower_case_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_reserved(name: &str) -> bool {
    // A keyword as an identifier must be quoted; ask the scanner rather than keep a list.
    crate::parser::scan(name)
        .ok()
        .and_then(|s| s.tokens.first().map(|t| t.keyword_kind))
        .is_some_and(|k| {
            k != protobuf::KeywordKind::NoKeyword as i32
                && k != protobuf::KeywordKind::UnreservedKeyword as i32
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preds(cond: &str, alias: &str) -> Vec<(String, Operator)> {
        on_relation(cond, alias)
            .into_iter()
            .map(|p| (p.target.label().to_string(), p.op))
            .collect()
    }

    #[test]
    fn equality_and_range_conjuncts() {
        assert_eq!(
            preds(
                "((customer_id = $1) AND (created_at > (now() - $2::interval)))",
                "orders"
            ),
            vec![
                ("customer_id".to_string(), Operator::Eq),
                ("created_at".to_string(), Operator::Range)
            ]
        );
    }

    #[test]
    fn outer_references_count_as_constants() {
        assert_eq!(
            preds("(o.customer_id = c.id)", "o"),
            vec![("customer_id".to_string(), Operator::Eq)]
        );
        // A join condition between two other relations is not ours.
        assert!(preds("(a.x = b.y)", "o").is_empty());
    }

    #[test]
    fn expressions_become_expression_targets() {
        let p = on_relation("(lower(email) = $1)", "customers");
        assert_eq!(p[0].target, Target::Expression("lower(email)".into()));
        assert_eq!(
            p[0].target.index_element().as_deref(),
            Some("(pg_catalog.lower(email))")
        );
        let q = on_relation("(lower((c.email)::text) = $1)", "c");
        assert_eq!(q[0].target, Target::Expression("lower(email::text)".into()));
    }

    #[test]
    fn like_any_and_null_tests() {
        assert_eq!(
            preds(
                "((name ~~ $1) AND (id = ANY ($2)) AND (deleted_at IS NULL))",
                "p"
            ),
            vec![
                ("name".to_string(), Operator::Like),
                ("id".to_string(), Operator::Eq),
                ("deleted_at".to_string(), Operator::Eq)
            ]
        );
    }

    #[test]
    fn or_and_not_subplans_give_no_index_predicates() {
        assert!(preds("((a = $1) OR (b = $2))", "t").is_empty());
        assert!(preds("(NOT (hashed SubPlan 1))", "t").is_empty());
        assert_eq!(
            preds("((country = $1) AND (NOT (hashed SubPlan 1)))", "c"),
            vec![("country".to_string(), Operator::Eq)]
        );
        assert!(preds("garbage ((", "t").is_empty());
    }

    #[test]
    fn identifiers_are_quoted_when_needed() {
        assert_eq!(quote_ident("customer_id"), "customer_id");
        assert_eq!(quote_ident("Order"), "\"Order\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
