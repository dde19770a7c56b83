//! The index expressions optidb will recommend, simulate and build: only PostgreSQL built-ins,
//! every one named with its schema.
//!
//! An index expression runs with the table owner's rights: when the index is built (by the
//! owner running the advised DDL, or by a real simulation), and for every row written after.
//! The expression comes from a statement's filter, and any reader can run a statement. So an
//! expression that calls anyone's function, casts to anyone's type or domain (a domain CHECK
//! runs when a literal is cast), or uses anyone's operator is never advised: only column
//! references, plain literals, and the functions, types and operators listed here, all from
//! pg_catalog. The text returned names them `pg_catalog.x` (`OPERATOR(pg_catalog.||)` for
//! operators), so no search_path can make them resolve to something else.

use pg_query::protobuf::{self, AExprKind};
use pg_query::{Node, NodeEnum};

/// Immutable built-in functions that are worth an expression index.
const FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "btrim",
    "ltrim",
    "rtrim",
    "substr",
    "substring",
    "left",
    "right",
    "length",
    "char_length",
    "md5",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "date_trunc",
    "date_part",
    "extract",
    "jsonb_extract_path_text",
    "json_extract_path_text",
    "array_length",
    "cardinality",
    "split_part",
    "replace",
    "reverse",
    "to_date",
];

/// Built-in types a literal or a column may be cast to.
const TYPES: &[&str] = &[
    "text",
    "varchar",
    "bpchar",
    "char",
    "name",
    "int2",
    "int4",
    "int8",
    "smallint",
    "integer",
    "int",
    "bigint",
    "numeric",
    "decimal",
    "float4",
    "float8",
    "real",
    "bool",
    "boolean",
    "date",
    "timestamp",
    "timestamptz",
    "time",
    "timetz",
    "interval",
    "uuid",
    "json",
    "jsonb",
    "bytea",
];

/// Built-in operators an expression may use.
const OPERATORS: &[&str] = &["+", "-", "*", "/", "%", "||", "->", "->>", "#>", "#>>"];

/// The expression, with every function, type and operator schema-qualified, when it only uses
/// built-ins from the lists above; None otherwise (or when it does not parse).
pub fn trusted(expression: &str) -> Option<String> {
    let parsed = crate::parser::parse(&format!("SELECT {expression}")).ok()?;
    let stmt = parsed.protobuf.stmts.first()?.stmt.as_ref()?;
    let Some(NodeEnum::SelectStmt(select)) = stmt.node.as_ref() else {
        return None;
    };
    let [target] = select.target_list.as_slice() else {
        return None;
    };
    let Some(NodeEnum::ResTarget(res)) = target.node.as_ref() else {
        return None;
    };
    let mut expr = res.val.as_deref()?.clone();
    qualify(&mut expr)?;
    crate::predicates::deparse_expression(&expr)
}

fn names(list: &[Node]) -> Option<Vec<String>> {
    list.iter()
        .map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

fn pg_catalog(name: &str) -> Vec<Node> {
    ["pg_catalog", name]
        .iter()
        .map(|s| Node {
            node: Some(NodeEnum::String(protobuf::String {
                sval: s.to_string(),
            })),
        })
        .collect()
}

/// `name` or `pg_catalog.name`, when `name` is one of `allowed`.
fn built_in<'a>(parts: &'a [String], allowed: &[&str]) -> Option<&'a str> {
    let name = match parts {
        [name] => name,
        [schema, name] if schema == "pg_catalog" => name,
        _ => return None,
    };
    allowed.contains(&name.as_str()).then_some(name.as_str())
}

/// Qualify every name under `node`; None as soon as anything is not allowed.
fn qualify(node: &mut Node) -> Option<()> {
    match node.node.as_mut()? {
        NodeEnum::ColumnRef(c) => (c.fields.len() == 1).then_some(()),
        NodeEnum::AConst(_) => Some(()),
        NodeEnum::TypeCast(t) => {
            let type_name = t.type_name.as_mut()?;
            if !type_name.array_bounds.is_empty() || !type_name.typmods.is_empty() {
                return None;
            }
            let parts = names(&type_name.names)?;
            let name = built_in(&parts, TYPES)?.to_string();
            type_name.names = pg_catalog(&name);
            qualify(t.arg.as_deref_mut()?)
        }
        NodeEnum::FuncCall(f) => {
            let parts = names(&f.funcname)?;
            let name = built_in(&parts, FUNCTIONS)?.to_string();
            if f.agg_star
                || f.agg_distinct
                || f.func_variadic
                || f.over.is_some()
                || f.agg_filter.is_some()
                || !f.agg_order.is_empty()
            {
                return None;
            }
            f.funcname = pg_catalog(&name);
            f.args.iter_mut().try_for_each(qualify)
        }
        NodeEnum::AExpr(e) => {
            if AExprKind::try_from(e.kind).ok()? != AExprKind::AexprOp {
                return None;
            }
            let parts = names(&e.name)?;
            let name = built_in(&parts, OPERATORS)?.to_string();
            e.name = pg_catalog(&name);
            for side in [&mut e.lexpr, &mut e.rexpr].into_iter().flatten() {
                qualify(side)?;
            }
            Some(())
        }
        NodeEnum::CoalesceExpr(c) => c.args.iter_mut().try_for_each(qualify),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_are_kept_and_qualified() {
        assert_eq!(trusted("lower(email)").unwrap(), "pg_catalog.lower(email)");
        assert_eq!(
            trusted("(data ->> 'k')").unwrap(),
            "data OPERATOR(pg_catalog.->>) 'k'"
        );
        assert_eq!(
            trusted("date_trunc('day', created_at)").unwrap(),
            "pg_catalog.date_trunc('day', created_at)"
        );
        let cast = trusted("(email)::text").unwrap();
        assert!(cast.contains("pg_catalog.text"), "{cast}");
        assert_eq!(
            trusted("pg_catalog.upper(name)").unwrap(),
            "pg_catalog.upper(name)"
        );
    }

    #[test]
    fn anything_of_anyone_else_is_refused() {
        for expr in [
            "m.normalize_email(email)",
            "normalize_email(email)",
            "(lower(email))::m.dom",
            "array_position('{x}'::m.dom[], email::m.dom)",
            "email::dom",
            "(a OPERATOR(m.===) b)",
            "a ~~~ b",
            "lower(t.email)",
            "count(*)",
            "(SELECT 1)",
            "lower(",
        ] {
            assert_eq!(trusted(expr), None, "{expr}");
        }
    }
}
