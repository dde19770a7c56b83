//! What optidb needs to know about one SQL statement before it stores it: a fingerprint that is
//! the same for every variant of the statement (literals, comments, whitespace, keyword case),
//! a canonical normalized text, its kind, whether it can be EXPLAINed, and its parameter count.
//!
//! Everything here goes through pg_query (PostgreSQL's own parser), never through regexes, so a
//! `$1` inside a string or a comment cannot fool it.

use pg_query::protobuf::Token;
use pg_query::NodeEnum;

/// The broad kind of a statement, used to skip boilerplate and to decide what can be EXPLAINed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET, SHOW, RESET, DISCARD, DEALLOCATE, LISTEN, ...:
    /// session plumbing that is never a bottleneck worth advice.
    Boilerplate,
    /// Any other utility statement (DDL, COPY, VACUUM, ...): recorded, never EXPLAINed.
    Utility,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Boilerplate => "boilerplate",
            StatementKind::Utility => "utility",
        }
    }
}

/// The facts derived from one statement's text.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementInfo {
    /// 16 hex digits; equal for statements that differ only in literals, comments, whitespace or
    /// keyword case.
    pub fingerprint: String,
    /// Canonical text: constants replaced by `$n`, comments dropped, keywords upper case.
    pub normalized: String,
    pub kind: StatementKind,
    /// True when `PREPARE ... AS <statement>` accepts it, so a generic plan can be captured.
    pub explainable: bool,
    /// Highest `$n` placeholder once literals are normalized (what EXECUTE must be given for
    /// pg_stat_statements' text, where literals already are placeholders).
    pub param_count: usize,
    /// Highest `$n` placeholder in the text as given (a sampled execution's own text keeps its
    /// literals: only these need values).
    pub placeholders: usize,
    /// Relations the statement reads or writes, as written (schema-qualified when it was).
    pub tables: Vec<String>,
    /// A plain query: a SELECT that writes nothing (no data-modifying WITH, no SELECT INTO)
    /// and locks no rows (no FOR UPDATE/SHARE). Only these are ever run for real by optidb.
    pub read_only: bool,
    /// It reads optidb's own tables or calls its functions: monitoring, not workload.
    pub touches_optidb: bool,
    /// The statement itself: for `PREPARE name(types) AS stmt` (what pg_stat_statements shows
    /// for statements run by an SQL-level EXECUTE) the prepared `stmt`, which everything above
    /// describes; otherwise the text analyzed.
    pub text: String,
    /// The parameter types a PREPARE declared, as written (empty otherwise).
    pub param_types: Vec<String>,
}

/// Why a statement could not be analysed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure(pub String);

impl std::fmt::Display for ParseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse, fingerprint and normalize one statement (one statement only: text holding several is
/// refused, because optidb later PREPAREs it and must never run a second, hidden command).
/// `PREPARE name(types) AS stmt` is analyzed as `stmt`, so a statement run through SQL-level
/// PREPARE/EXECUTE and the same statement sent with the extended protocol share a fingerprint.
pub fn analyze(sql: &str) -> Result<StatementInfo, ParseFailure> {
    if let Some((inner, param_types)) = unwrap_prepare(sql)? {
        let mut info = analyze(&inner)?;
        info.param_types = param_types;
        return Ok(info);
    }
    let parsed = crate::parser::parse(sql).map_err(|e| ParseFailure(e.to_string()))?;
    let stmts = &parsed.protobuf.stmts;
    if stmts.len() != 1 {
        return Err(ParseFailure(format!(
            "expected exactly one statement, found {}",
            stmts.len()
        )));
    }
    let node = stmts[0].stmt.as_ref().and_then(|s| s.node.as_ref());
    let (kind, explainable) = classify(node);

    let fingerprint = crate::parser::fingerprint(sql)
        .map_err(|e| ParseFailure(e.to_string()))?
        .hex;
    let normalized = canonical_text(sql)?;
    let param_count = max_param(&normalized)?;
    let placeholders = max_param(sql)?;
    let mut tables: Vec<String> = parsed.tables();
    tables.sort();
    tables.dedup();
    let read_only = kind == StatementKind::Select
        && explainable
        && parsed.dml_tables().is_empty()
        && !locks_rows(&parsed);
    let touches_optidb = tables
        .iter()
        .chain(parsed.functions().iter())
        .any(|name| name.starts_with("optidb."));

    Ok(StatementInfo {
        fingerprint,
        normalized,
        kind,
        explainable,
        param_count,
        placeholders,
        tables,
        read_only,
        touches_optidb,
        text: sql.to_string(),
        param_types: Vec::new(),
    })
}

/// For `PREPARE name [(type, ...)] AS stmt`: `stmt`'s text and the declared types. Found with
/// PostgreSQL's own scanner (the first AS outside parentheses), so quoted names cannot fool it.
fn unwrap_prepare(sql: &str) -> Result<Option<(String, Vec<String>)>, ParseFailure> {
    let scanned = crate::parser::scan(sql).map_err(|e| ParseFailure(e.to_string()))?;
    let tokens = &scanned.tokens;
    if tokens.first().map(|t| t.token) != Some(Token::Prepare as i32) {
        return Ok(None);
    }
    // Each declared type is the source text between "(" or "," and "," or ")" at depth 1.
    let (mut depth, mut types, mut type_start, mut body) = (0, Vec::new(), 0usize, None);
    for t in tokens.iter().skip(2) {
        let (start, end) = (t.start as usize, t.end as usize);
        match t.token {
            x if x == Token::Ascii40 as i32 => {
                depth += 1;
                if depth == 1 {
                    type_start = end;
                }
            }
            x if (x == Token::Ascii41 as i32 || x == Token::Ascii44 as i32) && depth == 1 => {
                types.push(sql[type_start..start].trim().to_string());
                type_start = end;
                if x == Token::Ascii41 as i32 {
                    depth -= 1;
                }
            }
            x if x == Token::Ascii41 as i32 => depth -= 1,
            x if x == Token::As as i32 && depth == 0 => {
                body = Some(end);
                break;
            }
            _ => {}
        }
    }
    let Some(start) = body else {
        return Ok(None);
    };
    types.retain(|t| !t.is_empty());
    Ok(Some((sql[start..].trim().to_string(), types)))
}

/// Any `FOR UPDATE/SHARE` clause, at any depth.
fn locks_rows(parsed: &pg_query::ParseResult) -> bool {
    parsed.protobuf.nodes().iter().any(|(node, ..)| {
        matches!(node, pg_query::NodeRef::SelectStmt(s) if !s.locking_clause.is_empty())
    })
}

/// Constants become `$n`, then the tree is printed back: this drops comments, collapses
/// whitespace and fixes keyword case. If the deparser cannot print a construct, the
/// normalized (but not reprinted) text is the fallback.
fn canonical_text(sql: &str) -> Result<String, ParseFailure> {
    let normalized = crate::parser::normalize(sql).map_err(|e| ParseFailure(e.to_string()))?;
    let reprinted = crate::parser::parse(&normalized)
        .and_then(|p| p.deparse())
        .unwrap_or_else(|_| normalized.trim().to_string());
    Ok(reprinted)
}

fn max_param(sql: &str) -> Result<usize, ParseFailure> {
    let scanned = crate::parser::scan(sql).map_err(|e| ParseFailure(e.to_string()))?;
    let max = scanned
        .tokens
        .iter()
        .filter(|t| t.token == Token::Param as i32)
        .filter_map(|t| sql.get(t.start as usize + 1..t.end as usize))
        .filter_map(|digits| digits.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    Ok(max)
}

/// Type keywords that can start a typed literal (`interval '1 day'`). Other column-name
/// keywords (BETWEEN, VALUES, EXISTS, ...) can legitimately precede a parameter.
const TYPE_KEYWORDS: &[&str] = &[
    "interval",
    "timestamp",
    "time",
    "numeric",
    "decimal",
    "dec",
    "boolean",
    "int",
    "integer",
    "smallint",
    "bigint",
    "real",
    "float",
    "char",
    "character",
    "varchar",
    "bit",
    "json",
];

/// pg_stat_statements turns a typed literal such as `interval '1 day'` into `interval $1`,
/// which is not valid SQL, so such text can never be PREPAREd. This rewrites each `type $n` back
/// into the equivalent `$n::type`; everything else is left byte for byte.
pub fn repair_typed_params(sql: &str) -> Result<String, ParseFailure> {
    let scanned = crate::parser::scan(sql).map_err(|e| ParseFailure(e.to_string()))?;
    let tokens = &scanned.tokens;
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0usize;
    for pair in tokens.windows(2) {
        let (prev, param) = (&pair[0], &pair[1]);
        if param.token != Token::Param as i32 {
            continue;
        }
        let type_name = &sql[prev.start as usize..prev.end as usize];
        let is_type = prev.token == Token::Ident as i32
            || TYPE_KEYWORDS.contains(&type_name.to_ascii_lowercase().as_str());
        if !is_type {
            continue;
        }
        let param_text = &sql[param.start as usize..param.end as usize];
        out.push_str(&sql[copied..prev.start as usize]);
        out.push_str(&format!("{param_text}::{type_name}"));
        copied = param.end as usize;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// The statement with every string literal (`'...'`, `E'...'`, `U&'...'`, `$$...$$`, `B'...'`,
/// `X'...'`) turned into a parameter (numbered after its own), then repaired to be PREPAREable
/// (`date $2` -> `$2::date`). Parse analysis of this text converts no value, so it runs no type
/// input function or domain check of anyone's: only a string literal is converted while the
/// text is parsed (by the input function of the type it is coerced to). Numbers and keywords
/// stay as written: PostgreSQL makes them int4/int8/numeric/text constants with built-in code,
/// and a coercion of one to another type is an expression the vetting of the real text sees
/// before anything is planned. Keeping them is what lets the statements whose
/// pg_stat_statements text does not re-plan be vetted: `extract(year FROM d)` (the field is a
/// keyword, as a parameter it is a syntax error), `sum(CASE ... THEN 1 ELSE 0 END)` (two
/// untyped parameters make it sum(text)).
pub fn literals_as_parameters(sql: &str) -> Result<String, ParseFailure> {
    let scanned = crate::parser::scan(sql).map_err(|e| ParseFailure(e.to_string()))?;
    let strings = [Token::Sconst, Token::Usconst, Token::Bconst, Token::Xconst].map(|t| t as i32);
    let mut next = max_param(sql)?;
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0usize;
    for t in scanned.tokens.iter().filter(|t| strings.contains(&t.token)) {
        let (start, end) = (t.start as usize, t.end as usize);
        let Some(before) = sql.get(copied..start) else {
            return Err(ParseFailure("unexpected token positions".into()));
        };
        next += 1;
        out.push_str(before);
        out.push_str(&format!("${next}"));
        copied = end;
    }
    out.push_str(sql.get(copied..).unwrap_or_default());
    repair_typed_params(&out)
}

fn classify(node: Option<&NodeEnum>) -> (StatementKind, bool) {
    match node {
        // SELECT ... INTO creates a table: PREPARE refuses it.
        Some(NodeEnum::SelectStmt(s)) => (StatementKind::Select, s.into_clause.is_none()),
        Some(NodeEnum::InsertStmt(_)) => (StatementKind::Insert, true),
        Some(NodeEnum::UpdateStmt(_)) => (StatementKind::Update, true),
        Some(NodeEnum::DeleteStmt(_)) => (StatementKind::Delete, true),
        Some(NodeEnum::MergeStmt(_)) => (StatementKind::Merge, true),
        Some(
            NodeEnum::TransactionStmt(_)
            | NodeEnum::VariableSetStmt(_)
            | NodeEnum::VariableShowStmt(_)
            | NodeEnum::DiscardStmt(_)
            | NodeEnum::DeallocateStmt(_)
            | NodeEnum::PrepareStmt(_)
            | NodeEnum::ExecuteStmt(_)
            | NodeEnum::ListenStmt(_)
            | NodeEnum::UnlistenStmt(_)
            | NodeEnum::NotifyStmt(_)
            | NodeEnum::CheckPointStmt(_)
            | NodeEnum::ExplainStmt(_)
            | NodeEnum::ClosePortalStmt(_)
            | NodeEnum::FetchStmt(_)
            | NodeEnum::DeclareCursorStmt(_),
        ) => (StatementKind::Boilerplate, false),
        _ => (StatementKind::Utility, false),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals_become_parameters_after_the_statements_own() {
        assert_eq!(
            literals_as_parameters("SELECT * FROM t WHERE a = $1 AND b = ANY ('{3,4}'::m.d[])")
                .unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b = ANY ($2::m.d[])"
        );
        assert_eq!(
            literals_as_parameters("SELECT now() - interval '1 day'").unwrap(),
            "SELECT now() - $1::interval"
        );
        let plain = "SELECT count(*) FROM m.v";
        assert_eq!(literals_as_parameters(plain).unwrap(), plain);
        // Numbers and keywords stay: the TPC-H shapes whose normalized text does not re-plan.
        assert_eq!(
            literals_as_parameters(
                "SELECT extract(year FROM d), sum(CASE WHEN p LIKE E'P%' THEN 1 ELSE 0 END) \
                 FROM t WHERE d <= date '1998-12-01' - interval '90 days' LIMIT 10"
            )
            .unwrap(),
            "SELECT extract(year FROM d), sum(CASE WHEN p LIKE $1 THEN 1 ELSE 0 END) \
                 FROM t WHERE d <= $2::date - $3::interval LIMIT 10"
        );
        assert_eq!(
            literals_as_parameters("SELECT $$a$$, U&'b', B'1', X'f' FROM t WHERE a = $2").unwrap(),
            "SELECT $3, $4, $5, $6 FROM t WHERE a = $2"
        );
    }

    use super::*;

    fn fp(sql: &str) -> String {
        analyze(sql).unwrap().fingerprint
    }

    #[test]
    fn literals_comments_whitespace_and_case_share_a_fingerprint() {
        let variants = [
            "SELECT * FROM orders WHERE customer_id = 42",
            "select * from orders where customer_id = 7",
            "SELECT *\n  FROM   orders\n WHERE customer_id = $1",
            "/* app: checkout */ SELECT * FROM orders WHERE customer_id = 1 -- trailing",
            "SeLeCt * FrOm orders WhErE customer_id = 99999",
        ];
        let first = fp(variants[0]);
        for v in &variants[1..] {
            assert_eq!(fp(v), first, "{v}");
        }
    }

    #[test]
    fn different_statements_differ() {
        assert_ne!(
            fp("SELECT * FROM orders WHERE customer_id = 1"),
            fp("SELECT * FROM orders WHERE status = 'x'")
        );
        assert_ne!(fp("SELECT a FROM t"), fp("SELECT b FROM t"));
        assert_ne!(fp("SELECT a FROM t"), fp("SELECT a FROM u"));
    }

    #[test]
    fn at_least_200_distinct_statements_never_collide() {
        let mut statements = Vec::new();
        let tables = ["orders", "customers", "products", "order_items", "events"];
        let columns = ["id", "status", "created_at", "total", "name", "email"];
        for t in tables {
            for c in columns {
                statements.push(format!("SELECT * FROM {t} WHERE {c} = 1"));
                statements.push(format!("SELECT {c} FROM {t} ORDER BY {c} LIMIT 10"));
                statements.push(format!("UPDATE {t} SET {c} = 1 WHERE id = 2"));
                statements.push(format!("DELETE FROM {t} WHERE {c} > 3"));
                statements.push(format!("SELECT count(*) FROM {t} GROUP BY {c}"));
                statements.push(format!("INSERT INTO {t} ({c}) VALUES (1)"));
                statements.push(format!("SELECT * FROM {t} WHERE {c} IS NULL"));
            }
        }
        assert!(statements.len() >= 200, "{}", statements.len());
        let mut seen = std::collections::HashMap::new();
        for s in &statements {
            let f = fp(s);
            if let Some(prev) = seen.insert(f.clone(), s.clone()) {
                panic!("collision {f}: {prev:?} vs {s:?}");
            }
        }
        // And each one keeps its fingerprint under literal/case/whitespace changes.
        for s in &statements {
            let variant = s
                .replace(" 1", " 12345")
                .replace(" = ", "   =\n")
                .to_lowercase();
            assert_eq!(fp(s), fp(&variant), "{s} vs {variant}");
        }
    }

    #[test]
    fn normalized_text_is_canonical() {
        let a = analyze("select  *  from orders /* x */ where customer_id = 42 and status='new'")
            .unwrap();
        assert_eq!(
            a.normalized,
            "SELECT * FROM orders WHERE customer_id = $1 AND status = $2"
        );
        assert_eq!(a.param_count, 2);
        assert_eq!(a.placeholders, 0);
        assert_eq!(a.kind, StatementKind::Select);
        assert!(a.explainable);
        assert_eq!(a.tables, vec!["orders".to_string()]);
    }

    #[test]
    fn only_plain_queries_are_read_only() {
        for sql in [
            "SELECT * FROM orders WHERE id = $1",
            "WITH r AS (SELECT id FROM orders) SELECT count(*) FROM r",
            "SELECT a FROM t UNION SELECT b FROM u",
        ] {
            assert!(analyze(sql).unwrap().read_only, "{sql}");
        }
        for sql in [
            "SELECT * FROM orders WHERE id = $1 FOR UPDATE",
            "SELECT * FROM (SELECT * FROM orders FOR SHARE) s",
            "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone",
            "SELECT * INTO t2 FROM t",
            "UPDATE orders SET status = $1",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "VACUUM t",
        ] {
            assert!(!analyze(sql).unwrap().read_only, "{sql}");
        }
    }

    #[test]
    fn statements_about_optidb_itself_are_recognised_from_the_parse_tree() {
        for sql in [
            "SELECT * FROM optidb.scan()",
            "select query_id from OPTIDB.bottlenecks(10)",
            "SELECT * FROM optidb.query_metrics ORDER BY total_ms DESC",
            "SELECT x.* FROM t, LATERAL optidb.simulate(t.a, t.b) x",
        ] {
            assert!(analyze(sql).unwrap().touches_optidb, "{sql}");
        }
        for sql in [
            "SELECT 'optidb.scan()' FROM t",
            "SELECT * FROM app.optidb_settings",
            "SELECT optidb_thing FROM t -- optidb.scan()",
        ] {
            assert!(!analyze(sql).unwrap().touches_optidb, "{sql}");
        }
    }

    #[test]
    fn a_prepare_is_analyzed_as_the_statement_it_prepares() {
        let prepared = analyze(
            "PREPARE by_customer(int, timestamp with time zone) AS \
             SELECT * FROM orders WHERE customer_id = $1 AND created_at > $2",
        )
        .unwrap();
        let direct =
            analyze("SELECT * FROM orders WHERE customer_id = $1 AND created_at > $2").unwrap();
        assert_eq!(prepared.fingerprint, direct.fingerprint);
        assert_eq!(prepared.kind, StatementKind::Select);
        assert!(prepared.explainable && prepared.read_only);
        assert_eq!(
            prepared.text,
            "SELECT * FROM orders WHERE customer_id = $1 AND created_at > $2"
        );
        assert_eq!(
            prepared.param_types,
            vec!["int".to_string(), "timestamp with time zone".to_string()]
        );
        let untyped = analyze("prepare \"as\" as select 1").unwrap();
        assert_eq!(untyped.text, "select 1");
        assert!(untyped.param_types.is_empty());
        let numeric = analyze("PREPARE q(numeric(10, 2)) AS SELECT $1").unwrap();
        assert_eq!(numeric.param_types, vec!["numeric(10, 2)".to_string()]);
        assert!(analyze("PREPARE q AS SELECT 1; DROP TABLE t").is_err());
    }

    #[test]
    fn params_inside_strings_are_not_counted() {
        let a = analyze("SELECT '$7' AS x, \"$9\" FROM t WHERE a = $2").unwrap();
        assert_eq!(a.param_count, 3, "{}", a.normalized); // '$7' becomes $1, then $2, $3 follow
    }

    #[test]
    fn boilerplate_and_utility_are_not_explainable() {
        for sql in [
            "BEGIN",
            "COMMIT",
            "SET work_mem = '4MB'",
            "SHOW work_mem",
            "DEALLOCATE ALL",
        ] {
            let a = analyze(sql).unwrap();
            assert_eq!(a.kind, StatementKind::Boilerplate, "{sql}");
            assert!(!a.explainable);
        }
        let ddl = analyze("CREATE TABLE t (a int)").unwrap();
        assert_eq!(ddl.kind, StatementKind::Utility);
        assert!(!ddl.explainable);
        let into = analyze("SELECT * INTO t2 FROM t").unwrap();
        assert!(!into.explainable);
    }

    #[test]
    fn typed_literal_params_are_repaired_for_prepare() {
        let fixed = repair_typed_params(
            "SELECT count(*) FROM orders WHERE created_at > now() - interval $1 AND x BETWEEN $2 AND $3",
        )
        .unwrap();
        assert_eq!(
            fixed,
            "SELECT count(*) FROM orders WHERE created_at > now() - $1::interval AND x BETWEEN $2 AND $3"
        );
        assert_eq!(
            repair_typed_params("SELECT date $1, timestamptz $2, \"my type\" $3 LIMIT $4").unwrap(),
            "SELECT $1::date, $2::timestamptz, $3::\"my type\" LIMIT $4"
        );
        let untouched = "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3) OFFSET $4";
        assert_eq!(repair_typed_params(untouched).unwrap(), untouched);
        assert!(analyze(&fixed).unwrap().explainable);
    }

    #[test]
    fn several_statements_or_garbage_are_refused() {
        assert!(analyze("SELECT 1; DROP TABLE t").is_err());
        assert!(analyze("SELEC 1").is_err());
        assert!(analyze("").is_err());
    }
}
