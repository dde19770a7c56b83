use super::*;
use crate::plan_facts::from_explain_json;
use serde_json::json;

fn table(name: &str, rows: f64) -> Table {
    Table {
        schema: "public".into(),
        name: name.into(),
        rows_est: rows,
        live_rows: rows,
        mod_since_analyze: 0,
        last_analyze: Some("2026-11-20".into()),
        ..Table::default()
    }
}

fn index(table: &str, name: &str, columns: &[&str], idx_scan: i64) -> Index {
    Index {
        schema: "public".into(),
        table: table.into(),
        name: name.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        is_valid: true,
        access_method: "btree".into(),
        idx_scan,
        bytes: 8192 * 100,
        definition: format!(
            "CREATE INDEX {name} ON public.{table} ({})",
            columns.join(", ")
        ),
        ..Default::default()
    }
}

fn column(table: &str, name: &str, n_distinct: f64) -> Column {
    Column {
        schema: "public".into(),
        table: table.into(),
        name: name.into(),
        n_distinct: Some(n_distinct),
        null_frac: Some(0.0),
        ..Column::default()
    }
}

fn catalog() -> Catalog {
    let mut stale = table("audit_log", 100.0);
    stale.live_rows = 300_000.0;
    stale.mod_since_analyze = 300_000;
    let mut pkey = index("orders", "orders_pkey", &["id"], 500);
    pkey.is_primary = true;
    pkey.is_unique = true;
    pkey.backs_constraint = true;
    Catalog {
        tables: vec![
            table("orders", 1_000_000.0),
            table("customers", 100_000.0),
            table("products", 20_000.0),
            table("tiny", 50.0),
            stale,
        ],
        indexes: vec![
            pkey,
            index("customers", "customers_country", &["country"], 40),
            index(
                "customers",
                "customers_country_created",
                &["country", "created_at"],
                10,
            ),
            index("products", "products_price", &["price"], 0),
        ],
        columns: vec![
            column("orders", "customer_id", 100_000.0),
            column("orders", "status", 4.0),
            column("orders", "region", 100.0),
            column("orders", "channel", 50.0),
            column("customers", "country", 10.0),
        ],
        stats_since: Some("2026-11-01".into()),
    }
}

fn seq(relation: &str, filter: &str, est_rows: f64) -> serde_json::Value {
    json!({"Node Type": "Seq Scan", "Relation Name": relation, "Alias": relation,
           "Plan Rows": est_rows, "Total Cost": 20000.0, "Filter": filter})
}

fn stmt(query_id: i64, plan: serde_json::Value) -> Statement {
    Statement {
        query_id,
        norm_sql: None,
        calls: 100,
        total_ms: 5000.0,
        rows: 1000,
        plan: Some(from_explain_json(&json!([{"Plan": plan}])).unwrap()),
    }
}

fn find<'a>(recs: &'a [Recommendation], kind: Kind, table: &str) -> Vec<&'a Recommendation> {
    recs.iter()
        .filter(|r| r.kind == kind && r.table == table)
        .collect()
}

#[test]
fn selective_filter_on_large_table_gets_a_missing_index() {
    let recs = advise(
        &[stmt(1, seq("orders", "(customer_id = $1)", 10.0))],
        &catalog(),
    );
    let r = find(&recs, Kind::MissingIndex, "orders");
    assert_eq!(r.len(), 1, "{recs:#?}");
    assert_eq!(r[0].columns, vec!["customer_id"]);
    assert_eq!(
        r[0].ddl,
        "CREATE INDEX CONCURRENTLY ON public.orders (customer_id);"
    );
    assert_eq!(
        r[0].index_sql.as_deref(),
        Some("CREATE INDEX ON public.orders (customer_id)")
    );
    assert!(
        r[0].rationale.contains("(customer_id = $1)"),
        "{}",
        r[0].rationale
    );
    assert!(r[0].simulable);
}

#[test]
fn low_selectivity_and_small_tables_get_no_index_advice() {
    let recs = advise(
        &[
            stmt(1, seq("orders", "(status = $1)", 250_000.0)),
            stmt(2, seq("tiny", "(a = $1)", 1.0)),
        ],
        &catalog(),
    );
    assert!(recs.iter().all(|r| !r.kind.creates_index()), "{recs:#?}");
}

#[test]
fn existing_index_is_never_recommended_again() {
    let recs = advise(
        &[stmt(1, seq("customers", "(country = $1)", 100.0))],
        &catalog(),
    );
    assert!(recs.iter().all(|r| !r.kind.creates_index()), "{recs:#?}");
}

#[test]
fn filter_plus_order_by_limit_gives_composite_that_absorbs_the_prefix() {
    let ordered = json!({"Node Type": "Limit", "Plan Rows": 10, "Plans": [
        {"Node Type": "Sort", "Plan Rows": 10, "Sort Key": ["created_at DESC"],
         "Plans": [seq("orders", "(customer_id = $1)", 10.0)]}]});
    let recs = advise(
        &[
            stmt(1, seq("orders", "(customer_id = $1)", 10.0)),
            stmt(2, ordered),
        ],
        &catalog(),
    );
    let composite = find(&recs, Kind::CompositeIndex, "orders");
    assert_eq!(composite.len(), 1, "{recs:#?}");
    assert_eq!(composite[0].columns, vec!["customer_id", "created_at DESC"]);
    assert_eq!(
        composite[0].index_sql.as_deref(),
        Some("CREATE INDEX ON public.orders (customer_id, created_at DESC)")
    );
    let mut ids = composite[0].query_ids.clone();
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 2],
        "one index serving both statements is one recommendation"
    );
    assert!(find(&recs, Kind::MissingIndex, "orders").is_empty());
}

#[test]
fn two_moderate_equalities_make_a_composite_in_selectivity_order() {
    let recs = advise(
        &[stmt(
            1,
            seq("orders", "((channel = $1) AND (region = $2))", 200.0),
        )],
        &catalog(),
    );
    let c = find(&recs, Kind::CompositeIndex, "orders");
    assert_eq!(c.len(), 1, "{recs:#?}");
    assert_eq!(
        c[0].columns,
        vec!["region", "channel"],
        "most selective first"
    );
}

#[test]
fn very_selective_first_column_is_enough() {
    let recs = advise(
        &[stmt(
            1,
            seq("orders", "((customer_id = $1) AND (status = $2))", 2.0),
        )],
        &catalog(),
    );
    let m = find(&recs, Kind::MissingIndex, "orders");
    assert_eq!(m.len(), 1, "{recs:#?}");
    assert_eq!(m[0].columns, vec!["customer_id"]);
}

#[test]
fn function_on_column_gets_an_expression_index() {
    let recs = advise(
        &[stmt(1, seq("customers", "(lower(email) = $1)", 500.0))],
        &catalog(),
    );
    let e = find(&recs, Kind::ExpressionIndex, "customers");
    assert_eq!(e.len(), 1, "{recs:#?}");
    assert_eq!(
        e[0].index_sql.as_deref(),
        Some("CREATE INDEX ON public.customers ((pg_catalog.lower(email)))")
    );
}

#[test]
fn correlated_outer_reference_is_an_equality() {
    let plan = json!({"Node Type": "Seq Scan", "Relation Name": "customers", "Alias": "c",
        "Plan Rows": 3, "Plans": [{"Node Type": "Aggregate", "Parent Relationship": "SubPlan",
        "Subplan Name": "SubPlan 1", "Plan Rows": 1, "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "orders", "Alias": "o", "Plan Rows": 10,
             "Filter": "(o.customer_id = c.id)"}]}]});
    let recs = advise(&[stmt(7, plan)], &catalog());
    assert_eq!(
        find(&recs, Kind::MissingIndex, "orders")[0].columns,
        vec!["customer_id"]
    );
    let rewrite: Vec<_> = recs.iter().filter(|r| r.kind == Kind::Rewrite).collect();
    assert!(rewrite[0].rationale.contains("SubPlan 1"), "{rewrite:#?}");
    assert!(!rewrite[0].simulable && rewrite[0].not_simulable_reason.is_some());
}

#[test]
fn stale_statistics_get_analyze() {
    let recs = advise(
        &[stmt(3, seq("audit_log", "(actor_id = $1)", 2.0))],
        &catalog(),
    );
    let s = find(&recs, Kind::Stats, "audit_log");
    assert_eq!(s.len(), 1, "{recs:#?}");
    assert_eq!(s[0].ddl, "ANALYZE public.audit_log;");
    assert_eq!(s[0].query_ids, vec![3]);
}

#[test]
fn estimate_skew_on_two_columns_suggests_extended_statistics() {
    let mut s = stmt(4, seq("orders", "((region = $1) AND (channel = $2))", 1.0));
    s.rows = 100 * 5000; // 5000 rows per call against an estimate of 1
    let recs = advise(&[s], &catalog());
    let st = find(&recs, Kind::Stats, "orders");
    assert_eq!(st.len(), 1, "{recs:#?}");
    assert!(
        st[0]
            .ddl
            .starts_with("CREATE STATISTICS ON region, channel FROM public.orders"),
        "{}",
        st[0].ddl
    );
}

#[test]
fn rewrites_for_like_not_in_and_offset() {
    let mut like = stmt(5, seq("products", "(name ~~ $1)", 100.0));
    like.norm_sql = Some("SELECT id FROM products WHERE name LIKE $1".into());
    let mut not_in = stmt(6, seq("tiny", "(a = $1)", 1.0));
    not_in.norm_sql = Some(
        "SELECT count(*) FROM customers WHERE id NOT IN (SELECT customer_id FROM orders)".into(),
    );
    let mut paging = stmt(
        8,
        json!({"Node Type": "Limit", "Plan Rows": 20, "Plans": [
        {"Node Type": "Index Scan", "Relation Name": "orders", "Index Name": "orders_pkey", "Plan Rows": 20}]}),
    );
    paging.norm_sql = Some("SELECT id FROM orders ORDER BY id LIMIT $1 OFFSET $2".into());
    let recs = advise(&[like, not_in, paging], &catalog());
    let rewrites: Vec<_> = recs.iter().filter(|r| r.kind == Kind::Rewrite).collect();
    let titles: Vec<_> = rewrites
        .iter()
        .map(|r| (r.query_ids[0], r.columns[0].as_str()))
        .collect();
    assert!(titles.contains(&(6, "NOT IN (subquery)")), "{titles:?}");
    assert!(titles.contains(&(8, "OFFSET paging")), "{titles:?}");
    let trgm = find(&recs, Kind::TrigramIndex, "products");
    let trgm = trgm.iter().find(|r| r.query_ids[0] == 5).unwrap();
    assert_eq!(trgm.columns, vec!["name"]);
    assert!(trgm.confidence <= 0.3);
    assert!(trgm.ddl.contains("gin_trgm_ops"));
    assert!(trgm
        .not_simulable_reason
        .as_deref()
        .unwrap()
        .contains("GIN"));
}

#[test]
fn redundant_prefix_and_unused_indexes() {
    let recs = advise(&[], &catalog());
    let red = find(&recs, Kind::RedundantIndex, "customers");
    assert_eq!(red.len(), 1, "{recs:#?}");
    assert_eq!(red[0].columns, vec!["customers_country"]);
    assert_eq!(
        red[0].ddl,
        "DROP INDEX CONCURRENTLY public.customers_country;"
    );
    let unused = find(&recs, Kind::UnusedIndex, "products");
    assert_eq!(unused[0].columns, vec!["products_price"]);
    // Never advise dropping a primary key, however rarely used.
    assert!(recs.iter().all(|r| r.columns != vec!["orders_pkey"]));
}

#[test]
fn confidence_orders_kinds() {
    let order = [
        Kind::MissingIndex,
        Kind::CompositeIndex,
        Kind::ExpressionIndex,
        Kind::Stats,
        Kind::Rewrite,
        Kind::RedundantIndex,
        Kind::UnusedIndex,
    ];
    for pair in order.windows(2) {
        assert!(pair[0].base_confidence() > pair[1].base_confidence());
    }
}

fn whole(relation: &str, est_rows: f64) -> serde_json::Value {
    json!({"Node Type": "Seq Scan", "Relation Name": relation, "Alias": relation,
           "Plan Rows": est_rows, "Total Cost": 20000.0})
}

#[test]
fn a_top_n_query_over_a_whole_large_table_gets_an_index_on_its_sort_keys() {
    let top = |keys: serde_json::Value, relation: &str, rows: f64| {
        json!({"Node Type": "Limit", "Plan Rows": 10, "Plans": [
            {"Node Type": "Sort", "Plan Rows": rows, "Sort Key": keys,
             "Plans": [whole(relation, rows)]}]})
    };
    let recs = advise(
        &[
            stmt(1, top(json!(["created_at DESC"]), "orders", 1e6)),
            stmt(
                2,
                top(json!(["region", "total DESC NULLS LAST"]), "orders", 1e6),
            ),
            stmt(3, top(json!(["name"]), "tiny", 50.0)),
            stmt(4, top(json!(["lower(name)"]), "customers", 1e5)),
        ],
        &catalog(),
    );
    let one = find(&recs, Kind::MissingIndex, "orders");
    assert_eq!(one.len(), 1, "{recs:#?}");
    assert_eq!(one[0].columns, vec!["created_at DESC"]);
    assert_eq!(
        one[0].index_sql.as_deref(),
        Some("CREATE INDEX ON public.orders (created_at DESC)")
    );
    assert!(one[0].rationale.contains("sorted"), "{}", one[0].rationale);
    assert!(one[0].evidence["top_n"]["sort_keys"].is_array());
    let two = find(&recs, Kind::CompositeIndex, "orders");
    assert_eq!(two[0].columns, vec!["region", "total DESC NULLS LAST"]);
    // A small table, or a sort on an expression: nothing.
    assert!(find(&recs, Kind::MissingIndex, "tiny").is_empty());
    assert!(
        recs.iter()
            .all(|r| r.table != "customers" || !r.kind.creates_index()),
        "{recs:#?}"
    );
}

#[test]
fn a_top_n_query_already_served_by_an_index_gets_nothing() {
    let plan = json!({"Node Type": "Limit", "Plan Rows": 10, "Plans": [
        {"Node Type": "Sort", "Plan Rows": 1e5, "Sort Key": ["country"],
         "Plans": [whole("customers", 1e5)]}]});
    let recs = advise(&[stmt(1, plan)], &catalog());
    assert!(recs.iter().all(|r| !r.kind.creates_index()), "{recs:#?}");
}

#[test]
fn verbose_plans_pick_the_table_in_the_schema_they_name() {
    // Two schemas with an `orders` each (a tenant per schema): the plan says which one.
    let mut cat = catalog();
    for schema in ["app1", "app2"] {
        let mut t = table("orders", 1_000_000.0);
        t.schema = schema.into();
        cat.tables.push(t);
        let mut c = column("orders", "customer_id", 100_000.0);
        c.schema = schema.into();
        cat.columns.push(c);
    }
    let verbose = json!({"Node Type": "Limit", "Plan Rows": 10, "Plans": [
        {"Node Type": "Sort", "Plan Rows": 10, "Sort Key": ["o.created_at DESC"],
         "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "app2",
                    "Alias": "o", "Plan Rows": 10.0, "Total Cost": 20000.0,
                    "Output": ["o.id", "o.created_at"],
                    "Filter": "(o.customer_id = $1)"}]}]});
    let recs = advise(&[stmt(1, verbose)], &cat);
    let advice: Vec<_> = recs.iter().filter(|r| r.kind.creates_index()).collect();
    assert_eq!(advice.len(), 1, "{recs:#?}");
    assert_eq!(advice[0].schema, "app2");
    assert_eq!(
        advice[0].index_sql.as_deref(),
        Some("CREATE INDEX ON app2.orders (customer_id, created_at DESC)")
    );
}

#[test]
fn a_partitions_index_folds_into_its_parents_same_index() {
    let rec = |table: &str, columns: &[&str], q: i64| Recommendation {
        kind: Kind::MissingIndex,
        schema: "public".into(),
        table: table.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        ddl: String::new(),
        index_sql: None,
        rationale: String::new(),
        evidence: json!({}),
        confidence: 0.9,
        risk: String::new(),
        query_ids: vec![q],
        simulable: true,
        not_simulable_reason: None,
    };
    let mut part = table("events_0", 100_000.0);
    part.root = Some(("public".into(), "events".into()));
    let catalog = Catalog {
        tables: vec![table("events", 0.0), part, table("other", 100_000.0)],
        ..Catalog::default()
    };
    let mut recs = vec![
        rec("events_0", &["blog_id"], 2),
        rec("events", &["blog_id"], 1),
        rec("other", &["blog_id"], 3),
    ];
    fold_partition_indexes(&mut recs, &catalog, |_| true);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].table.as_str(), &recs[0].query_ids),
        ("events", &vec![1, 2])
    );
    // A parent's advice that is not advised (net negative) absorbs nothing.
    let mut recs = vec![
        rec("events_0", &["blog_id"], 2),
        rec("events", &["blog_id"], 1),
    ];
    fold_partition_indexes(&mut recs, &catalog, |r| r.table != "events");
    assert_eq!(recs.len(), 2);
    // Other columns on the parent do not serve the partition's.
    let mut recs = vec![rec("events_0", &["blog_id"], 2), rec("events", &["id"], 1)];
    fold_partition_indexes(&mut recs, &catalog, |_| true);
    assert_eq!(recs.len(), 2);
}
