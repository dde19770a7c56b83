//! The NOT EXISTS form of a statement that filters with `x NOT IN (SELECT ...)`, written by
//! changing its parse tree (pg_query), never its text: the rewrite advice is replayed with this
//! SQL beside the original, and the advice stands only if the replay shows it is cheaper
//! (advisor::verdicts).
//!
//! `x NOT IN (SELECT k FROM s WHERE ...)` becomes
//! `NOT EXISTS (SELECT 1 FROM (SELECT k FROM s WHERE ...) AS optidb_not_in(optidb_key)
//!              WHERE optidb_not_in.optidb_key = x)`.
//! The subquery is kept whole and only renamed, so `x` is the only thing that moves inside, and
//! inside there is nothing but `optidb_not_in.optidb_key` it could resolve to: its columns keep
//! meaning the outer query's. (The two forms differ only when a NULL is compared, which is why
//! the advice says to check the columns cannot be NULL.)

use pg_query::protobuf::{self, a_const, AExprKind, BoolExprType, SubLinkType};
use pg_query::{Node, NodeEnum};

const ALIAS: &str = "optidb_not_in";
const KEY: &str = "optidb_key";

/// A statement rewritten from NOT IN to NOT EXISTS.
#[derive(Debug, Clone, PartialEq)]
pub struct NotExists {
    pub sql: String,
    /// The columns NOT IN compares, when both sides are plain columns (name only): the outer
    /// one, then the subquery's. Empty otherwise.
    pub keys: Vec<String>,
}

/// The NOT EXISTS form of `sql` (one SELECT whose WHERE, under AND/OR, holds NOT IN
/// subqueries of one column each), or None when there is no such form to offer.
pub fn rewrite(sql: &str) -> Option<NotExists> {
    let mut parsed = crate::parser::parse(sql).ok()?.protobuf;
    if parsed.stmts.len() != 1 {
        return None;
    }
    let stmt = parsed.stmts[0].stmt.as_mut()?;
    let Some(NodeEnum::SelectStmt(select)) = stmt.node.as_mut() else {
        return None;
    };
    let mut found = Found::default();
    rewrite_condition(select.where_clause.as_deref_mut()?, &mut found);
    if found.rewritten == 0 || found.unsupported {
        return None;
    }
    let sql = crate::parser::deparse(&parsed).ok()?;
    let keys = if found.rewritten == 1 {
        found.keys
    } else {
        Vec::new()
    };
    Some(NotExists { sql, keys })
}

#[derive(Default)]
struct Found {
    rewritten: usize,
    unsupported: bool,
    keys: Vec<String>,
}

/// Rewrite the NOT IN subqueries of a condition, through AND and OR only (inside anything else
/// a NOT IN is left alone and counted as unsupported: no partial advice).
fn rewrite_condition(node: &mut Node, found: &mut Found) {
    let Some(NodeEnum::BoolExpr(b)) = node.node.as_mut() else {
        return;
    };
    if b.boolop == BoolExprType::NotExpr as i32 {
        match not_in_parts(b) {
            Some((testexpr, subselect)) => {
                found.keys = [column_name(&testexpr), target_column(&subselect)]
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .unwrap_or_default();
                *node = not_exists(testexpr, subselect);
                found.rewritten += 1;
            }
            None if is_not_in(b) => found.unsupported = true,
            None => {}
        }
        return;
    }
    for arg in &mut b.args {
        rewrite_condition(arg, found);
    }
}

/// `NOT (x IN (SELECT ...))` with one column on the left: the left side and the subquery.
fn not_in_parts(b: &protobuf::BoolExpr) -> Option<(Node, Node)> {
    let [arg] = b.args.as_slice() else {
        return None;
    };
    let Some(NodeEnum::SubLink(link)) = arg.node.as_ref() else {
        return None;
    };
    if link.sub_link_type != SubLinkType::AnySublink as i32 || !link.oper_name.is_empty() {
        return None; // `x <> ANY (...)` and the like keep their own meaning
    }
    let testexpr = link.testexpr.as_deref()?.clone();
    if matches!(testexpr.node, Some(NodeEnum::RowExpr(_))) {
        return None; // (a, b) NOT IN (...): not offered
    }
    Some((testexpr, link.subselect.as_deref()?.clone()))
}

fn is_not_in(b: &protobuf::BoolExpr) -> bool {
    b.args.iter().any(|a| {
        matches!(&a.node, Some(NodeEnum::SubLink(l)) if l.sub_link_type == SubLinkType::AnySublink as i32)
    })
}

/// The column a plain column reference names (its last field), if that is what `node` is.
fn column_name(node: &Node) -> Option<String> {
    let Some(NodeEnum::ColumnRef(c)) = node.node.as_ref() else {
        return None;
    };
    match c.fields.last()?.node.as_ref()? {
        NodeEnum::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

/// The one output column of a subquery, when it is a plain column.
fn target_column(select: &Node) -> Option<String> {
    let Some(NodeEnum::SelectStmt(s)) = select.node.as_ref() else {
        return None;
    };
    let [target] = s.target_list.as_slice() else {
        return None;
    };
    let Some(NodeEnum::ResTarget(t)) = target.node.as_ref() else {
        return None;
    };
    column_name(t.val.as_deref()?)
}

fn node(n: NodeEnum) -> Node {
    Node { node: Some(n) }
}

fn string(s: &str) -> Node {
    node(NodeEnum::String(protobuf::String { sval: s.into() }))
}

/// `NOT EXISTS (SELECT 1 FROM (subselect) AS optidb_not_in(optidb_key)
///              WHERE optidb_not_in.optidb_key = testexpr)`.
fn not_exists(testexpr: Node, subselect: Node) -> Node {
    let one = node(NodeEnum::AConst(protobuf::AConst {
        isnull: false,
        location: -1,
        val: Some(a_const::Val::Ival(protobuf::Integer { ival: 1 })),
    }));
    let target = node(NodeEnum::ResTarget(Box::new(protobuf::ResTarget {
        val: Some(Box::new(one)),
        location: -1,
        ..Default::default()
    })));
    let from = node(NodeEnum::RangeSubselect(Box::new(
        protobuf::RangeSubselect {
            lateral: false,
            subquery: Some(Box::new(subselect)),
            alias: Some(protobuf::Alias {
                aliasname: ALIAS.into(),
                colnames: vec![string(KEY)],
            }),
        },
    )));
    let key = node(NodeEnum::ColumnRef(protobuf::ColumnRef {
        fields: vec![string(ALIAS), string(KEY)],
        location: -1,
    }));
    let equal = node(NodeEnum::AExpr(Box::new(protobuf::AExpr {
        kind: AExprKind::AexprOp as i32,
        name: vec![string("=")],
        lexpr: Some(Box::new(key)),
        rexpr: Some(Box::new(testexpr)),
        location: -1,
    })));
    let inner = node(NodeEnum::SelectStmt(Box::new(protobuf::SelectStmt {
        target_list: vec![target],
        from_clause: vec![from],
        where_clause: Some(Box::new(equal)),
        limit_option: protobuf::LimitOption::Default as i32,
        op: protobuf::SetOperation::SetopNone as i32,
        ..Default::default()
    })));
    let exists = node(NodeEnum::SubLink(Box::new(protobuf::SubLink {
        sub_link_type: SubLinkType::ExistsSublink as i32,
        subselect: Some(Box::new(inner)),
        location: -1,
        ..Default::default()
    })));
    node(NodeEnum::BoolExpr(Box::new(protobuf::BoolExpr {
        boolop: BoolExprType::NotExpr as i32,
        args: vec![exists],
        location: -1,
        ..Default::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_in_becomes_not_exists_over_the_renamed_subquery() {
        let r = rewrite(
            "SELECT count(*) FROM customers WHERE country = $1 AND id NOT IN \
             (SELECT customer_id FROM orders WHERE created_at > now() - $2::interval)",
        )
        .unwrap();
        assert!(r
            .sql
            .contains("NOT EXISTS (SELECT 1 FROM (SELECT customer_id FROM orders"));
        assert!(r.sql.contains("optidb_not_in(optidb_key)"), "{}", r.sql);
        assert!(
            r.sql.contains("WHERE optidb_not_in.optidb_key = id)"),
            "{}",
            r.sql
        );
        assert!(!r.sql.contains(" IN (SELECT"), "{}", r.sql);
        assert_eq!(r.keys, vec!["id", "customer_id"]);
        // The result is itself one statement that parses, with the same placeholders.
        let info = crate::statement::analyze(&r.sql).unwrap();
        assert_eq!(info.placeholders, 2);
    }

    #[test]
    fn qualified_and_nested_under_or() {
        let r =
            rewrite("SELECT a.x FROM a WHERE a.y = 1 OR a.k NOT IN (SELECT b.k FROM b) ORDER BY 1")
                .unwrap();
        assert!(
            r.sql.contains("optidb_not_in.optidb_key = a.k"),
            "{}",
            r.sql
        );
        assert_eq!(r.keys, vec!["k", "k"]);
    }

    #[test]
    fn nothing_to_offer() {
        // No NOT IN, a list instead of a subquery, several columns, IN without NOT.
        for sql in [
            "SELECT 1 FROM a WHERE x = 1",
            "SELECT 1 FROM a WHERE x NOT IN (1, 2)",
            "SELECT 1 FROM a WHERE (x, y) NOT IN (SELECT p, q FROM b)",
            "SELECT 1 FROM a WHERE x IN (SELECT k FROM b)",
            "UPDATE a SET x = 1 WHERE x NOT IN (SELECT k FROM b)",
            "not sql at all",
        ] {
            assert_eq!(rewrite(sql), None, "{sql}");
        }
    }

    #[test]
    fn an_expression_on_the_left_has_no_keys() {
        let r = rewrite("SELECT 1 FROM a WHERE lower(x) NOT IN (SELECT k FROM b)").unwrap();
        assert!(r.keys.is_empty());
        assert!(r.sql.contains("optidb_key = lower(x)"), "{}", r.sql);
    }
}
