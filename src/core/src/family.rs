//! Query families: statements that are one query for a human (ORM variants with other column
//! lists or aliases, IN-lists of any length) grouped under a readable label.
//!
//! Each statement becomes a set of shape tokens read from its parse tree (never its literals):
//! verb, tables, join arity, predicate columns with their operator class, ordering, grouping,
//! aggregates, subqueries. Families are then found by cosine similarity of TF-IDF vectors over
//! those tokens, with a deterministic leader clustering (see `cluster`).

use std::collections::{BTreeMap, BTreeSet};

use pg_query::protobuf::{self, AExprKind, SetOperation, SubLinkType};
use pg_query::{Node, NodeEnum};

/// Two statements share a family from this cosine similarity up. At 0.6 one extra predicate
/// on top of a shared table and predicate keeps them together (about 0.7 to 0.8 with the token
/// weights below), while filtering the same table on a different column does not (about 0.5):
/// such statements need different indexes, so they are different queries for a DBA.
pub const DEFAULT_MIN_SIMILARITY: f64 = 0.6;

/// Longest label, suffix included.
pub const MAX_LABEL_CHARS: usize = 48;

/// What one statement looks like, without its literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// select, insert, update, delete or other.
    pub verb: String,
    /// Relations read or written, unqualified and lower case, sorted.
    pub tables: Vec<String>,
    /// Shape tokens in the order met, each once: the first `t:` token is the main relation
    /// (first in FROM, or the one written to).
    pub tokens: Vec<String>,
}

/// Statements that are variants of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The medoid's label, plus `#n` when another family already has that label.
    pub key: String,
    /// The medoid's label, plus `_n` when needed to keep labels unique.
    pub label: String,
    /// Statement ids, sorted.
    pub members: Vec<i64>,
}

/// Shape tokens of one statement; None when it does not parse or holds several statements.
pub fn features(sql: &str) -> Option<Features> {
    let parsed = crate::parser::parse(sql).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let node = raw.stmt.as_ref()?.node.as_ref()?;
    let mut walk = Walk::default();
    let verb = match node {
        NodeEnum::SelectStmt(_) => "select",
        NodeEnum::InsertStmt(_) => "insert",
        NodeEnum::UpdateStmt(_) => "update",
        NodeEnum::DeleteStmt(_) => "delete",
        _ => "other",
    };
    walk.push(format!("verb:{verb}"));
    match node {
        NodeEnum::SelectStmt(s) => walk.select(s, true),
        NodeEnum::InsertStmt(s) => walk.insert(s, true),
        NodeEnum::UpdateStmt(s) => walk.update(s, true),
        NodeEnum::DeleteStmt(s) => walk.delete(s, true),
        _ => walk.utility(&parsed),
    }
    Some(walk.finish(verb))
}

/// One relation visible in a FROM scope: the name columns qualify it by, and its table (None
/// for subqueries, functions and CTEs, whose columns stay unqualified).
type Visible = (String, Option<String>);

/// Collects tokens while walking one statement, resolving aliases scope by scope.
#[derive(Default)]
struct Walk {
    tokens: Vec<String>,
    /// FROM scopes from the outermost to the one being walked (subqueries see outer ones).
    scopes: Vec<Vec<Visible>>,
    ctes: Vec<String>,
    /// Relations in the statement's own FROM (first one met), for the `join:` token.
    arity: Option<usize>,
}

impl Walk {
    fn push(&mut self, token: String) {
        self.tokens.push(token);
    }

    fn finish(self, verb: &str) -> Features {
        let mut seen = BTreeSet::new();
        let tokens: Vec<String> = self
            .tokens
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .collect();
        let tables: BTreeSet<String> = tokens
            .iter()
            .filter_map(|t| t.strip_prefix("t:").map(str::to_string))
            .collect();
        Features {
            verb: verb.to_string(),
            tables: tables.into_iter().collect(),
            tokens,
        }
    }

    /// Any nested statement: a subquery, a CTE body.
    fn statement(&mut self, node: &Node) {
        match node.node.as_ref() {
            Some(NodeEnum::SelectStmt(s)) => self.select(s, false),
            Some(NodeEnum::InsertStmt(s)) => self.insert(s, false),
            Some(NodeEnum::UpdateStmt(s)) => self.update(s, false),
            Some(NodeEnum::DeleteStmt(s)) => self.delete(s, false),
            _ => {}
        }
    }

    fn select(&mut self, s: &protobuf::SelectStmt, top: bool) {
        let ctes = self.declare_ctes(s.with_clause.as_ref());
        if s.op != SetOperation::SetopNone as i32 {
            self.push("setop".into());
            for side in [&s.larg, &s.rarg].into_iter().flatten() {
                self.select(side, top);
            }
        } else {
            let quals = self.open_scope(None, &s.from_clause, top);
            quals.into_iter().for_each(|q| self.predicate(q));
            s.where_clause.iter().for_each(|w| self.predicate(w));
            s.target_list.iter().for_each(|t| self.expr(t));
            if !s.group_clause.is_empty() {
                self.push("group".into());
            }
            if let Some(having) = &s.having_clause {
                self.push("having".into());
                self.expr(having);
            }
            if !s.distinct_clause.is_empty() {
                self.push("distinct".into());
            }
            self.scopes.pop();
        }
        self.order_and_limit(s);
        self.walk_ctes(ctes);
    }

    /// ORDER BY by column name only: ORMs qualify sort keys inconsistently.
    fn order_and_limit(&mut self, s: &protobuf::SelectStmt) {
        for item in &s.sort_clause {
            let Some(NodeEnum::SortBy(by)) = item.node.as_ref() else {
                continue;
            };
            let key = by.node.as_deref();
            let column = key.and_then(first_column_name);
            self.push(column.map_or("order".into(), |c| format!("order:{c}")));
            key.into_iter().for_each(|k| self.expr(k));
        }
        if s.limit_count.is_some() {
            self.push("limit".into());
        }
        if s.limit_offset.is_some() {
            self.push("offset".into());
        }
        if !s.locking_clause.is_empty() {
            self.push("for_update".into());
        }
    }

    fn insert(&mut self, s: &protobuf::InsertStmt, top: bool) {
        let ctes = self.declare_ctes(s.with_clause.as_ref());
        self.open_scope(s.relation.as_ref(), &[], top);
        if let Some(source) = s.select_stmt.as_deref() {
            // VALUES rows are data, however many: only a SELECT source is shape.
            let values =
                matches!(&source.node, Some(NodeEnum::SelectStmt(q)) if !q.values_lists.is_empty());
            if !values {
                self.push("insert_select".into());
                self.statement(source);
            }
        }
        if s.on_conflict_clause.is_some() {
            self.push("on_conflict".into());
        }
        self.returning(&s.returning_list);
        self.scopes.pop();
        self.walk_ctes(ctes);
    }

    /// SET columns are not tokens: ORMs write the columns that changed, a different list each
    /// time, for what is one statement to the application.
    fn update(&mut self, s: &protobuf::UpdateStmt, top: bool) {
        let ctes = self.declare_ctes(s.with_clause.as_ref());
        let quals = self.open_scope(s.relation.as_ref(), &s.from_clause, top);
        quals.into_iter().for_each(|q| self.predicate(q));
        s.where_clause.iter().for_each(|w| self.predicate(w));
        s.target_list.iter().for_each(|t| self.expr(t));
        self.returning(&s.returning_list);
        self.scopes.pop();
        self.walk_ctes(ctes);
    }

    fn delete(&mut self, s: &protobuf::DeleteStmt, top: bool) {
        let ctes = self.declare_ctes(s.with_clause.as_ref());
        let quals = self.open_scope(s.relation.as_ref(), &s.using_clause, top);
        quals.into_iter().for_each(|q| self.predicate(q));
        s.where_clause.iter().for_each(|w| self.predicate(w));
        self.returning(&s.returning_list);
        self.scopes.pop();
        self.walk_ctes(ctes);
    }

    fn returning(&mut self, list: &[Node]) {
        if !list.is_empty() {
            self.push("returning".into());
        }
    }

    /// DDL, COPY, VACUUM, ...: the statement type and the tables pg_query finds.
    fn utility(&mut self, parsed: &pg_query::ParseResult) {
        let kind = parsed
            .statement_types()
            .first()
            .map_or("utility".into(), |t| {
                snake_case(t.strip_suffix("Stmt").unwrap_or(t))
            });
        self.push(format!("stmt:{kind}"));
        let mut tables: Vec<String> = parsed.tables().iter().map(|t| unqualified(t)).collect();
        tables.sort();
        tables.into_iter().for_each(|t| self.push(format!("t:{t}")));
    }

    /// Remembers CTE names (so FROM does not take them for tables) and returns their bodies,
    /// walked after the main query so that its table comes first.
    fn declare_ctes<'a>(&mut self, with: Option<&'a protobuf::WithClause>) -> Vec<&'a Node> {
        let mut bodies = Vec::new();
        for cte in with.map_or(&[][..], |w| &w.ctes) {
            if let Some(NodeEnum::CommonTableExpr(c)) = cte.node.as_ref() {
                self.ctes.push(c.ctename.to_lowercase());
                bodies.extend(c.ctequery.as_deref());
            }
        }
        if !bodies.is_empty() {
            self.push("cte".into());
        }
        bodies
    }

    fn walk_ctes(&mut self, bodies: Vec<&Node>) {
        bodies.into_iter().for_each(|b| self.statement(b));
    }

    /// Pushes the scope of a FROM clause (after a DML statement's target) and returns the
    /// JOIN ... ON conditions, which are walked as predicates once the scope is known.
    fn open_scope<'a>(
        &mut self,
        target: Option<&protobuf::RangeVar>,
        from: &'a [Node],
        top: bool,
    ) -> Vec<&'a Node> {
        let mut scope = Vec::new();
        let mut quals = Vec::new();
        if let Some(v) = target {
            scope.push(self.relation(v));
        }
        for item in from {
            self.scope_item(item, &mut scope, &mut quals);
        }
        if top && self.arity.is_none() {
            self.arity = Some(scope.len());
            if scope.len() >= 2 {
                self.push(format!("join:{}", scope.len()));
            }
        }
        self.scopes.push(scope);
        quals
    }

    fn scope_item<'a>(
        &mut self,
        item: &'a Node,
        scope: &mut Vec<Visible>,
        quals: &mut Vec<&'a Node>,
    ) {
        match item.node.as_ref() {
            Some(NodeEnum::RangeVar(v)) => scope.push(self.relation(v)),
            Some(NodeEnum::JoinExpr(j)) => {
                for side in [&j.larg, &j.rarg].into_iter().flatten() {
                    self.scope_item(side, scope, quals);
                }
                quals.extend(j.quals.as_deref());
                for column in j.using_clause.iter().filter_map(string_value) {
                    self.push(format!("using:{}", column.to_lowercase()));
                }
            }
            Some(NodeEnum::RangeSubselect(r)) => {
                self.push("subquery".into());
                r.subquery.iter().for_each(|q| self.statement(q));
                scope.push((alias_name(r.alias.as_ref()), None));
            }
            Some(NodeEnum::RangeFunction(f)) => {
                self.push("function".into());
                scope.push((alias_name(f.alias.as_ref()), None));
            }
            _ => {}
        }
    }

    /// A relation in FROM: a table (token `t:`) unless it names a CTE.
    fn relation(&mut self, v: &protobuf::RangeVar) -> Visible {
        let name = v.relname.to_lowercase();
        let visible = v
            .alias
            .as_ref()
            .map_or(name.clone(), |a| a.aliasname.to_lowercase());
        if v.schemaname.is_empty() && self.ctes.contains(&name) {
            return (visible, None);
        }
        self.push(format!("t:{name}"));
        (visible, Some(name))
    }

    /// A WHERE/ON/HAVING condition: every comparison under AND, OR and NOT counts.
    fn predicate(&mut self, node: &Node) {
        match node.node.as_ref() {
            Some(NodeEnum::BoolExpr(b)) => b.args.iter().for_each(|a| self.predicate(a)),
            Some(NodeEnum::AExpr(e)) => self.comparison(e),
            Some(NodeEnum::NullTest(t)) => self.test(t.arg.as_deref(), "null"),
            Some(NodeEnum::BooleanTest(t)) => self.test(t.arg.as_deref(), "bool"),
            Some(NodeEnum::ColumnRef(_)) => self.test(Some(node), "bool"),
            Some(NodeEnum::SubLink(l)) => self.sublink(l),
            _ => self.expr(node),
        }
    }

    fn test(&mut self, arg: Option<&Node>, class: &str) {
        for column in self.columns(arg) {
            self.push(format!("where:{column}:{class}"));
        }
        arg.into_iter().for_each(|a| self.expr(a));
    }

    /// `col op value` gives `where:col:class` (`in:col` for IN-lists and `= ANY`, whatever
    /// their length); `col op col` is a join condition, `on:col` for each side.
    fn comparison(&mut self, e: &protobuf::AExpr) {
        let class = operator_class(e);
        let left = self.columns(e.lexpr.as_deref());
        let right = self.columns(e.rexpr.as_deref());
        let both = !left.is_empty() && !right.is_empty();
        for column in left.iter().chain(&right) {
            self.push(match class {
                _ if both => format!("on:{column}"),
                "in" => format!("in:{column}"),
                _ => format!("where:{column}:{class}"),
            });
        }
        for side in [&e.lexpr, &e.rexpr].into_iter().flatten() {
            self.expr(side);
        }
    }

    fn sublink(&mut self, l: &protobuf::SubLink) {
        match SubLinkType::try_from(l.sub_link_type) {
            Ok(SubLinkType::ExistsSublink) => self.push("exists".into()),
            Ok(SubLinkType::AnySublink) => {
                for column in self.columns(l.testexpr.as_deref()) {
                    self.push(format!("in:{column}"));
                }
                self.push("subquery".into());
            }
            _ => self.push("subquery".into()),
        }
        l.subselect.iter().for_each(|q| self.statement(q));
    }

    /// Aggregates, window functions and subqueries anywhere in an expression.
    fn expr(&mut self, node: &Node) {
        match node.node.as_ref() {
            Some(NodeEnum::SubLink(l)) => return self.sublink(l),
            Some(NodeEnum::FuncCall(f)) => {
                let name = f.funcname.last().and_then(string_value).unwrap_or_default();
                let name = name.to_lowercase();
                if f.over.is_some() {
                    self.push("window".into());
                } else if f.agg_star || AGGREGATES.contains(&name.as_str()) {
                    self.push(format!("agg:{name}"));
                }
            }
            _ => {}
        }
        for child in children(node) {
            self.expr(child);
        }
    }

    /// Columns an expression reads (not inside subqueries), resolved to `table.column`
    /// where the table is known.
    fn columns(&self, node: Option<&Node>) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(node) = node {
            self.collect_columns(node, &mut found);
        }
        found.dedup();
        found
    }

    fn collect_columns(&self, node: &Node, found: &mut Vec<String>) {
        match node.node.as_ref() {
            Some(NodeEnum::ColumnRef(c)) => found.extend(self.resolve(&column_fields(c))),
            Some(NodeEnum::SubLink(_)) => {}
            _ => children(node).for_each(|c| self.collect_columns(c, found)),
        }
    }

    fn resolve(&self, fields: &[String]) -> Option<String> {
        let (column, qualifier) = match fields {
            [] => return None,
            [column] => (column, None),
            [.., qualifier, column] => (column, Some(qualifier)),
        };
        let table = match qualifier {
            // Unqualified: ours only if the innermost FROM has a single table.
            None => match self.scopes.last().map(Vec::as_slice) {
                Some([(_, table)]) => table.clone(),
                _ => None,
            },
            Some(q) => self
                .scopes
                .iter()
                .rev()
                .flatten()
                .find(|(name, _)| name == q)
                .and_then(|(_, table)| table.clone()),
        };
        Some(match table {
            Some(t) => format!("{t}.{column}"),
            None => column.clone(),
        })
    }
}

/// Built-in aggregates recognised by name (`count(*)` is recognised by its star).
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
];

/// The operator class of a comparison: what an index (and a reader) cares about.
fn operator_class(e: &protobuf::AExpr) -> &'static str {
    let name = e.name.last().and_then(string_value).unwrap_or_default();
    let kind = AExprKind::try_from(e.kind).unwrap_or(AExprKind::Undefined);
    match (kind, name.as_str()) {
        (AExprKind::AexprIn | AExprKind::AexprOpAny, "=") => "in",
        (AExprKind::AexprIn, _) => "notin",
        (AExprKind::AexprLike | AExprKind::AexprIlike, _) => "like",
        (AExprKind::AexprSimilar, _) => "regex",
        (
            AExprKind::AexprBetween
            | AExprKind::AexprNotBetween
            | AExprKind::AexprBetweenSym
            | AExprKind::AexprNotBetweenSym,
            _,
        ) => "range",
        (AExprKind::AexprDistinct | AExprKind::AexprNotDistinct, _) => "distinct",
        (AExprKind::AexprOp, "=") => "=",
        (AExprKind::AexprOp, "<>" | "!=") => "<>",
        (AExprKind::AexprOp, "<" | "<=" | ">" | ">=") => "range",
        (AExprKind::AexprOp, "~~" | "~~*" | "!~~" | "!~~*") => "like",
        (AExprKind::AexprOp, "~" | "~*" | "!~" | "!~*") => "regex",
        _ => "op",
    }
}

/// Sub-expressions of an expression node; subqueries are left to `Walk::sublink`.
fn children(node: &Node) -> Box<dyn Iterator<Item = &Node> + '_> {
    fn one(n: &Option<Box<Node>>) -> std::option::Iter<'_, Box<Node>> {
        n.iter()
    }
    let Some(inner) = node.node.as_ref() else {
        return Box::new(std::iter::empty());
    };
    match inner {
        NodeEnum::AExpr(e) => Box::new(one(&e.lexpr).chain(one(&e.rexpr)).map(|b| &**b)),
        NodeEnum::BoolExpr(b) => Box::new(b.args.iter()),
        NodeEnum::FuncCall(f) => Box::new(
            f.args
                .iter()
                .chain(one(&f.agg_filter).map(|b| &**b))
                .chain(f.agg_order.iter()),
        ),
        NodeEnum::TypeCast(t) => Box::new(one(&t.arg).map(|b| &**b)),
        NodeEnum::CollateClause(c) => Box::new(one(&c.arg).map(|b| &**b)),
        NodeEnum::NullTest(t) => Box::new(one(&t.arg).map(|b| &**b)),
        NodeEnum::BooleanTest(t) => Box::new(one(&t.arg).map(|b| &**b)),
        NodeEnum::AIndirection(i) => Box::new(one(&i.arg).map(|b| &**b)),
        NodeEnum::ResTarget(r) => Box::new(one(&r.val).map(|b| &**b)),
        NodeEnum::SortBy(s) => Box::new(one(&s.node).map(|b| &**b)),
        NodeEnum::CoalesceExpr(c) => Box::new(c.args.iter()),
        NodeEnum::MinMaxExpr(m) => Box::new(m.args.iter()),
        NodeEnum::RowExpr(r) => Box::new(r.args.iter()),
        NodeEnum::AArrayExpr(a) => Box::new(a.elements.iter()),
        NodeEnum::List(l) => Box::new(l.items.iter()),
        NodeEnum::CaseExpr(c) => Box::new(
            one(&c.arg)
                .map(|b| &**b)
                .chain(c.args.iter())
                .chain(one(&c.defresult).map(|b| &**b)),
        ),
        NodeEnum::CaseWhen(w) => Box::new(one(&w.expr).chain(one(&w.result)).map(|b| &**b)),
        _ => Box::new(std::iter::empty()),
    }
}

fn string_value(node: &Node) -> Option<String> {
    match node.node.as_ref()? {
        NodeEnum::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

/// Name parts of a column reference, lower case; `*` ends up as no column.
fn column_fields(c: &protobuf::ColumnRef) -> Vec<String> {
    let fields: Vec<String> = c.fields.iter().filter_map(string_value).collect();
    if fields.len() < c.fields.len() {
        return Vec::new();
    }
    fields.iter().map(|f| f.to_lowercase()).collect()
}

/// The first column an expression reads, without its qualifier.
fn first_column_name(node: &Node) -> Option<String> {
    if let Some(NodeEnum::ColumnRef(c)) = node.node.as_ref() {
        return column_fields(c).pop();
    }
    children(node).find_map(first_column_name)
}

fn alias_name(alias: Option<&protobuf::Alias>) -> String {
    alias.map_or(String::new(), |a| a.aliasname.to_lowercase())
}

fn unqualified(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_lowercase()
}

/// `CreateTableAs` -> `create_table_as`.
fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A short snake_case name for the statement: main table, verb, and its most telling
/// predicate or shape (`orders_select_by_status`, `users_like_email`, `orders_group_count`).
pub fn label(f: &Features) -> String {
    let main = f.tokens.iter().find_map(|t| t.strip_prefix("t:"));
    let shape = shape_words(f, main);
    let text = match main {
        Some(table) => format!("{table}_{shape}"),
        None if shape == "select_all" => "select_without_table".into(),
        None if f.verb == "select" => format!("{shape}_without_table"),
        None => shape,
    };
    sanitize(&text, MAX_LABEL_CHARS)
}

fn shape_words(f: &Features, main: Option<&str>) -> String {
    let has = |token: &str| f.tokens.iter().any(|t| t == token);
    let find = |prefix: &str| f.tokens.iter().find_map(|t| t.strip_prefix(prefix));
    let predicate = main_predicate(f, main);
    let by = predicate.map(|(column, class)| match class {
        "like" => format!("like_{column}"),
        "in" => format!("by_{column}_list"),
        _ => format!("by_{column}"),
    });
    let then_by = by.as_ref().map_or(String::new(), |b| format!("_{b}"));
    match f.verb.as_str() {
        "select" => {
            if let Some(n) = find("join:") {
                format!("join_{n}tables{then_by}")
            } else if let Some(like) = by.as_ref().filter(|b| b.starts_with("like_")) {
                like.clone()
            } else if has("group") {
                format!("group_{}{then_by}", find("agg:").unwrap_or("rows"))
            } else if let Some(agg) = find("agg:") {
                format!("{agg}{then_by}")
            } else if by.is_some() {
                format!("select{then_by}")
            } else if let Some(column) = find("order:") {
                format!("select_ordered_by_{column}")
            } else {
                "select_all".into()
            }
        }
        "insert" if has("on_conflict") => "upsert".into(),
        "insert" if has("insert_select") => "insert_select".into(),
        "insert" => "insert".into(),
        "update" | "delete" => format!("{}_{}", f.verb, by.as_deref().unwrap_or("all")),
        _ => find("stmt:").unwrap_or("statement").to_string(),
    }
}

/// The first predicate on the main table (or on an unqualified column), else the first one:
/// (column without table, operator class).
fn main_predicate<'a>(f: &'a Features, main: Option<&str>) -> Option<(&'a str, &'a str)> {
    let predicates: Vec<(Option<&str>, &str, &str)> = f
        .tokens
        .iter()
        .filter_map(|t| {
            if let Some(rest) = t.strip_prefix("where:") {
                let (column, class) = rest.rsplit_once(':')?;
                Some((column, class))
            } else {
                t.strip_prefix("in:").map(|column| (column, "in"))
            }
        })
        .map(|(column, class)| match column.split_once('.') {
            Some((table, name)) => (Some(table), name, class),
            None => (None, column, class),
        })
        .collect();
    let ours = predicates
        .iter()
        .find(|(table, ..)| table.is_none() || *table == main);
    ours.or(predicates.first())
        .map(|&(_, column, class)| (column, class))
}

/// Lower case, only [a-z0-9_], no doubled or edge underscores, at most `max` chars.
fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.to_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c != '_' || !(out.is_empty() || out.ends_with('_')) {
            out.push(c);
        }
    }
    out.truncate(max);
    let trimmed = out.trim_end_matches('_');
    if trimmed.is_empty() {
        "statement".into()
    } else {
        trimmed.to_string()
    }
}

/// How much a token kind counts, on top of its IDF. What a query reads and how it filters
/// defines it; ordering, limits and RETURNING are what ORM variants of one query differ by.
fn kind_weight(token: &str) -> f64 {
    let kind = token.split(':').next().unwrap_or(token);
    match kind {
        "t" | "join" => 2.0,
        "where" | "in" | "on" | "using" => 1.5,
        "order" | "limit" | "offset" | "returning" | "distinct" => 0.5,
        _ => 1.0,
    }
}

/// Statements with exactly the same verb, tables and token set: never split.
struct Unit<'a> {
    verb: &'a str,
    tables: &'a [String],
    arity: usize,
    /// The lowest id's features: its token order names the main table for the label.
    features: &'a Features,
    tokens: BTreeSet<&'a str>,
    members: Vec<i64>,
}

/// Groups statements into families.
///
/// 1. Statements with the same verb, tables and token set form one unit (so identical token
///    sets always share a family).
/// 2. Each unit gets a TF-IDF vector: weight = smoothed idf `ln((1 + N) / (1 + df)) + 1`
///    (N statements, df statements holding the token) times the token kind's weight, L2
///    normalized.
/// 3. Leader clustering: units in a fixed order (most statements first, then fewer tokens,
///    then token text) join the compatible family whose leader (first unit) is most similar,
///    if at least `min_similarity`, the earliest family winning ties; otherwise they lead a new
///    family. Compatible: same verb, same number of relations in the main FROM (a join is
///    never a single-table query's variant), and sharing a table with every member (the
///    family keeps the tables common to all), or no tables at all on both sides.
/// 4. A family's label is its medoid's (the unit with the highest member-weighted similarity
///    to the others); families are named largest first, then by smallest id, a repeated label
///    getting `_2`, `_3` (key `#2`, `#3`). They are returned in that order.
///
/// Nothing depends on input order: documents are sorted before anything else.
pub fn cluster(docs: &[(i64, Features)], min_similarity: f64) -> Vec<Family> {
    let mut sorted: Vec<&(i64, Features)> = docs.iter().collect();
    sorted.sort_by(|a, b| (a.0, &a.1.tokens).cmp(&(b.0, &b.1.tokens)));
    let units = units(&sorted);
    let vectors = tf_idf(&units, sorted.len());
    let groups = leaders(&units, &vectors, min_similarity);
    name_families(&units, &vectors, groups)
}

fn units<'a>(sorted: &[&'a (i64, Features)]) -> Vec<Unit<'a>> {
    let mut by_key: BTreeMap<(&str, &[String], BTreeSet<&str>), Unit<'a>> = BTreeMap::new();
    for (id, f) in sorted.iter().map(|d| (d.0, &d.1)) {
        let tokens: BTreeSet<&str> = f.tokens.iter().map(String::as_str).collect();
        let key = (f.verb.as_str(), f.tables.as_slice(), tokens.clone());
        let unit = by_key.entry(key).or_insert_with(|| Unit {
            verb: &f.verb,
            tables: &f.tables,
            arity: arity(f),
            features: f,
            tokens,
            members: Vec::new(),
        });
        unit.members.push(id);
    }
    let mut units: Vec<Unit> = by_key.into_values().collect();
    // Stable sort: equal units stay in key order.
    units.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.tokens.len().cmp(&b.tokens.len()))
    });
    units
}

fn arity(f: &Features) -> usize {
    f.tokens
        .iter()
        .find_map(|t| t.strip_prefix("join:")?.parse().ok())
        .unwrap_or(usize::from(!f.tables.is_empty()))
}

/// Sparse unit-length vectors, entries sorted by token.
type Vector = Vec<(usize, f64)>;

fn tf_idf(units: &[Unit], statements: usize) -> Vec<Vector> {
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    for unit in units {
        for token in &unit.tokens {
            *df.entry(token).or_default() += unit.members.len();
        }
    }
    let index: BTreeMap<&str, usize> = df.keys().enumerate().map(|(i, t)| (*t, i)).collect();
    let n = statements as f64;
    units
        .iter()
        .map(|unit| {
            let mut v: Vector = unit
                .tokens
                .iter()
                .map(|t| {
                    let idf = ((1.0 + n) / (1.0 + df[t] as f64)).ln() + 1.0;
                    (index[t], idf * kind_weight(t))
                })
                .collect();
            let norm = v.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|(_, w)| *w /= norm);
            }
            v
        })
        .collect()
}

fn cosine(a: &Vector, b: &Vector) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    dot
}

struct Group<'a> {
    units: Vec<usize>,
    /// Tables every member reads or writes.
    common: BTreeSet<&'a str>,
}

fn leaders<'a>(units: &[Unit<'a>], vectors: &[Vector], min_similarity: f64) -> Vec<Group<'a>> {
    let mut groups: Vec<Group> = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        let mut best: Option<(usize, f64)> = None;
        for (g, group) in groups.iter().enumerate() {
            if !compatible(&units[group.units[0]], &group.common, unit) {
                continue;
            }
            let similarity = cosine(&vectors[group.units[0]], &vectors[u]);
            if best.is_none_or(|(_, s)| similarity > s) {
                best = Some((g, similarity));
            }
        }
        let tables: BTreeSet<&str> = unit.tables.iter().map(String::as_str).collect();
        match best {
            Some((g, similarity)) if similarity >= min_similarity => {
                let group = &mut groups[g];
                group.units.push(u);
                group.common.retain(|t| tables.contains(t));
            }
            _ => groups.push(Group {
                units: vec![u],
                common: tables,
            }),
        }
    }
    groups
}

fn compatible(leader: &Unit, common: &BTreeSet<&str>, unit: &Unit) -> bool {
    let tables_ok = if common.is_empty() {
        unit.tables.is_empty()
    } else {
        unit.tables.iter().any(|t| common.contains(t.as_str()))
    };
    leader.verb == unit.verb && leader.arity == unit.arity && tables_ok
}

fn name_families(units: &[Unit], vectors: &[Vector], groups: Vec<Group>) -> Vec<Family> {
    let mut families: Vec<(String, Vec<i64>)> = groups
        .iter()
        .map(|g| {
            let mut members: Vec<i64> = g
                .units
                .iter()
                .flat_map(|&u| units[u].members.iter().copied())
                .collect();
            members.sort_unstable();
            members.dedup();
            (
                label(units[medoid(units, vectors, &g.units)].features),
                members,
            )
        })
        .collect();
    families.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.1.cmp(&b.1)));
    let mut used = BTreeSet::new();
    families
        .into_iter()
        .map(|(base, members)| {
            let (mut label, mut n) = (base.clone(), 1);
            while used.contains(&label) {
                n += 1;
                label = with_suffix(&base, n);
            }
            used.insert(label.clone());
            let key = if n == 1 { base } else { format!("{base}#{n}") };
            Family {
                key,
                label,
                members,
            }
        })
        .collect()
}

/// The unit most similar to the rest of its family, each unit counted once per statement.
fn medoid(units: &[Unit], vectors: &[Vector], members: &[usize]) -> usize {
    let score = |u: usize| -> f64 {
        members
            .iter()
            .map(|&v| units[v].members.len() as f64 * cosine(&vectors[u], &vectors[v]))
            .sum()
    };
    let mut best = (members[0], score(members[0]));
    for &u in &members[1..] {
        let s = score(u);
        if s > best.1 + 1e-12 {
            best = (u, s);
        }
    }
    best.0
}

fn with_suffix(base: &str, n: usize) -> String {
    let suffix = format!("_{n}");
    let mut stem = base.to_string();
    stem.truncate(MAX_LABEL_CHARS - suffix.len());
    format!("{}{suffix}", stem.trim_end_matches('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sql: &str) -> Features {
        features(sql).unwrap_or_else(|| panic!("unparsable: {sql}"))
    }

    fn docs(statements: &[&str]) -> Vec<(i64, Features)> {
        statements
            .iter()
            .enumerate()
            .map(|(i, s)| (i as i64 + 1, f(s)))
            .collect()
    }

    fn family_of(families: &[Family], id: i64) -> &Family {
        families
            .iter()
            .find(|fam| fam.members.contains(&id))
            .expect("every statement has a family")
    }

    fn in_list(n: usize) -> String {
        let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        format!("SELECT * FROM orders WHERE id IN ({})", params.join(", "))
    }

    #[test]
    fn in_lists_of_any_length_and_any_give_the_same_tokens() {
        let any = f("SELECT * FROM orders WHERE id = ANY($1)");
        for n in [1, 3, 20] {
            assert_eq!(f(&in_list(n)), any, "{n}");
        }
        // How pg_stat_statements (PostgreSQL 18) squashes a long IN-list.
        assert_eq!(f("SELECT * FROM orders WHERE id IN ($1 /*, ... */)"), any);
        assert!(any.tokens.contains(&"in:orders.id".to_string()), "{any:?}");
        let statements = [in_list(1), in_list(3), in_list(20)];
        let mut input = docs(&["SELECT * FROM orders WHERE id = ANY($1)"]);
        for (i, s) in statements.iter().enumerate() {
            input.push((10 + i as i64, f(s)));
        }
        let families = cluster(&input, DEFAULT_MIN_SIMILARITY);
        assert_eq!(families.len(), 1, "{families:?}");
        assert_eq!(families[0].members, vec![1, 10, 11, 12]);
        assert_eq!(families[0].label, "orders_select_by_id_list");
    }

    #[test]
    fn tokens_describe_shape_with_aliases_resolved() {
        let x = f(
            "SELECT o.id, c.name FROM public.orders o JOIN customers c ON c.id = o.customer_id \
             WHERE o.status = $1 AND lower(c.email) LIKE $2 AND o.total > $3 \
             ORDER BY o.created_at DESC LIMIT $4",
        );
        assert_eq!(x.verb, "select");
        assert_eq!(x.tables, vec!["customers", "orders"]);
        for token in [
            "verb:select",
            "t:orders",
            "t:customers",
            "join:2",
            "on:customers.id",
            "on:orders.customer_id",
            "where:orders.status:=",
            "where:customers.email:like",
            "where:orders.total:range",
            "order:created_at",
            "limit",
        ] {
            assert!(x.tokens.contains(&token.to_string()), "{token} in {x:?}");
        }
        assert_eq!(
            x.tokens.iter().find(|t| t.starts_with("t:")).unwrap(),
            "t:orders"
        );
        // Literals never show up.
        assert!(!x.tokens.iter().any(|t| t.contains('$')), "{x:?}");
    }

    #[test]
    fn aggregates_groups_subqueries_and_unknown_tables() {
        let x = f("SELECT status, count(*) FROM orders WHERE customer_id IN \
             (SELECT id FROM customers WHERE country = $1) GROUP BY status");
        for token in [
            "agg:count",
            "group",
            "in:orders.customer_id",
            "subquery",
            "where:customers.country:=",
        ] {
            assert!(x.tokens.contains(&token.to_string()), "{token} in {x:?}");
        }
        assert_eq!(label(&x), "orders_group_count_by_customer_id_list");
        // Two tables, unqualified column: which table is unknown.
        let y = f("SELECT * FROM a, b WHERE flag = $1");
        assert!(y.tokens.contains(&"where:flag:=".to_string()), "{y:?}");
        // A CTE is not a table.
        let z = f("WITH r AS (SELECT * FROM orders WHERE total > $1) SELECT count(*) FROM r");
        assert_eq!(z.tables, vec!["orders"]);
        assert!(z.tokens.contains(&"cte".to_string()));
    }

    #[test]
    fn one_extra_predicate_shares_the_family_another_column_does_not() {
        // Behaviour: status alone and status + created_at are one family (similarity about
        // 0.8 here); filtering on customer_id instead is a family of its own.
        let input = docs(&[
            "SELECT * FROM orders WHERE status = $1",
            "SELECT * FROM orders WHERE status = $1 AND created_at > $2",
            "SELECT * FROM orders WHERE customer_id = $1",
            "SELECT * FROM customers WHERE email = $1",
            "UPDATE orders SET status = $1 WHERE id = $2",
        ]);
        let families = cluster(&input, DEFAULT_MIN_SIMILARITY);
        assert_eq!(family_of(&families, 1), family_of(&families, 2));
        assert_ne!(family_of(&families, 1), family_of(&families, 3));
        assert_eq!(family_of(&families, 1).label, "orders_select_by_status");
        assert_eq!(families.len(), 4, "{families:?}");
    }

    #[test]
    fn a_join_is_not_a_single_table_query() {
        let input = docs(&[
            "SELECT o.* FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = $1",
            "SELECT * FROM orders WHERE status = $1",
        ]);
        // Not even with no similarity threshold at all.
        for threshold in [DEFAULT_MIN_SIMILARITY, 0.0] {
            let families = cluster(&input, threshold);
            assert_ne!(family_of(&families, 1), family_of(&families, 2));
        }
        let families = cluster(&input, DEFAULT_MIN_SIMILARITY);
        assert_eq!(
            family_of(&families, 1).label,
            "orders_join_2tables_by_status"
        );
    }

    #[test]
    fn like_on_lower_email_is_labelled_by_table_and_column() {
        let x = f("SELECT id, name FROM users WHERE lower(email) LIKE $1");
        assert!(
            x.tokens.contains(&"where:users.email:like".to_string()),
            "{x:?}"
        );
        let l = label(&x);
        assert_eq!(l, "users_like_email");
        assert!(l.contains("users") && l.contains("email"));
    }

    #[test]
    fn labels_follow_the_statement_shape() {
        let cases = [
            (
                "UPDATE order_items SET qty = $1 WHERE id = $2",
                "order_items_update_by_id",
            ),
            (
                "SELECT status, count(*) FROM orders GROUP BY status",
                "orders_group_count",
            ),
            (
                "SELECT count(*) FROM orders WHERE status = $1",
                "orders_count_by_status",
            ),
            (
                "DELETE FROM sessions WHERE expires_at < $1",
                "sessions_delete_by_expires_at",
            ),
            (
                "INSERT INTO events (a, b) VALUES ($1, $2), ($3, $4)",
                "events_insert",
            ),
            (
                "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO NOTHING",
                "t_upsert",
            ),
            (
                "SELECT * FROM orders ORDER BY created_at DESC LIMIT $1",
                "orders_select_ordered_by_created_at",
            ),
            ("SELECT * FROM orders", "orders_select_all"),
            ("SELECT $1", "select_without_table"),
            ("VACUUM orders", "orders_vacuum"),
            ("CREATE TABLE t2 (a int)", "t2_create"),
        ];
        for (sql, expected) in cases {
            assert_eq!(label(&f(sql)), expected, "{sql}");
        }
    }

    #[test]
    fn labels_are_short_and_plain() {
        let long = format!(
            "SELECT * FROM \"{}Ünïcode Table\" WHERE \"Some Column\" = $1",
            "very_long_name_".repeat(6)
        );
        let l = label(&f(&long));
        assert!(l.len() <= MAX_LABEL_CHARS, "{l}");
        assert!(
            l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{l}"
        );
        assert!(!l.ends_with('_') && !l.contains("__"), "{l}");
    }

    #[test]
    fn orm_variants_land_together() {
        let input = docs(&[
            "SELECT o.id, o.status FROM orders o WHERE o.customer_id = $1",
            "SELECT orders.* FROM orders WHERE orders.customer_id = $1 ORDER BY orders.created_at DESC",
            "SELECT \"t0\".\"id\", \"t0\".\"status\", \"t0\".\"total\" FROM \"orders\" AS \"t0\" \
             WHERE \"t0\".\"customer_id\" = $1 LIMIT $2",
            "SELECT x.id FROM public.orders AS x WHERE x.customer_id = $1 ORDER BY x.id LIMIT $2 OFFSET $3",
            "SELECT * FROM customers WHERE id = $1",
            "SELECT * FROM orders WHERE status = $1",
        ]);
        let families = cluster(&input, DEFAULT_MIN_SIMILARITY);
        let orm = family_of(&families, 1);
        assert_eq!(orm.members, vec![1, 2, 3, 4], "{families:?}");
        assert_eq!(orm.label, "orders_select_by_customer_id");
        assert_eq!(families.len(), 3);
    }

    #[test]
    fn hard_rules_hold_at_any_threshold() {
        let input = docs(&[
            "SELECT * FROM orders WHERE id = $1",
            "DELETE FROM orders WHERE id = $1",
            "SELECT * FROM customers WHERE id = $1",
            "SELECT * FROM orders WHERE id = $1 AND status = $2",
        ]);
        let families = cluster(&input, 0.0);
        assert_ne!(family_of(&families, 1), family_of(&families, 2), "verb");
        assert_ne!(family_of(&families, 1), family_of(&families, 3), "tables");
        assert_eq!(family_of(&families, 1), family_of(&families, 4));
        // Identical token sets share a family even when nothing else may.
        let twins = docs(&[
            "SELECT a FROM t WHERE b = $1",
            "select c, d from t where b = 5",
        ]);
        assert_eq!(cluster(&twins, 2.0).len(), 1);
    }

    #[test]
    fn repeated_labels_get_suffixes_and_keys_stay_unique() {
        let input = docs(&[
            "SELECT * FROM orders WHERE status = $1",
            "SELECT * FROM orders WHERE status = $1",
            "SELECT * FROM orders WHERE status = $1 ORDER BY id",
            "SELECT * FROM orders WHERE status = $1 AND total > $2",
        ]);
        // Above 1, nothing but identical token sets merges.
        let families = cluster(&input, 1.5);
        let labels: Vec<&str> = families.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "orders_select_by_status",
                "orders_select_by_status_2",
                "orders_select_by_status_3"
            ]
        );
        let keys: Vec<&str> = families.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "orders_select_by_status",
                "orders_select_by_status#2",
                "orders_select_by_status#3"
            ]
        );
        assert_eq!(families[0].members, vec![1, 2]);
        assert_eq!(with_suffix(&"x".repeat(48), 12).len(), MAX_LABEL_CHARS);
    }

    #[test]
    fn shuffled_input_gives_the_same_families() {
        let statements = [
            "SELECT * FROM orders WHERE status = $1",
            "SELECT * FROM orders WHERE status = $1 AND created_at > $2",
            "SELECT * FROM orders WHERE customer_id = $1",
            "SELECT o.id FROM orders o WHERE o.customer_id = $1 ORDER BY o.id",
            "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id",
            "SELECT * FROM customers c JOIN orders o ON c.id = o.customer_id WHERE c.id = $1",
            "SELECT * FROM users WHERE lower(email) LIKE $1",
            "SELECT * FROM users WHERE email LIKE $1",
            "UPDATE order_items SET qty = $1 WHERE id = $2",
            "UPDATE order_items SET price = $1 WHERE id = $2",
            "SELECT count(*) FROM orders GROUP BY status",
            "SELECT $1",
            "SELECT now()",
        ];
        let input = docs(&statements);
        let expected = cluster(&input, DEFAULT_MIN_SIMILARITY);
        let mut shuffled = input.clone();
        let mut seed: u64 = 7;
        for _ in 0..20 {
            for i in (1..shuffled.len()).rev() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                shuffled.swap(i, (seed >> 33) as usize % (i + 1));
            }
            assert_eq!(cluster(&shuffled, DEFAULT_MIN_SIMILARITY), expected);
        }
        // Every statement is in exactly one family.
        let mut all: Vec<i64> = expected.iter().flat_map(|f| f.members.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=statements.len() as i64).collect::<Vec<_>>());
    }

    #[test]
    fn unparsable_text_has_no_features() {
        for sql in ["SELEC * FROM", "", "SELECT 1; SELECT 2", "this is not sql"] {
            assert_eq!(features(sql), None, "{sql}");
        }
        assert!(cluster(&[], DEFAULT_MIN_SIMILARITY).is_empty());
    }
}
