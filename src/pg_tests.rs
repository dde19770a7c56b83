//! SQL-surface tests run inside a real backend by `cargo pgrx test` (each in a transaction that
//! is rolled back). End-to-end behaviour with committed data is in tests/e2e.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup_workload() {
        Spi::run("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").unwrap();
        Spi::run(
            "CREATE TABLE t_orders AS SELECT g AS id, g % 1000 AS customer_id, 'x' AS status \
             FROM generate_series(1, 20000) g; ANALYZE t_orders",
        )
        .unwrap();
    }

    #[pg_test]
    fn scan_returns_one_summary_row() {
        setup_workload();
        let (seen, plans) =
            Spi::get_two::<i32, i32>("SELECT queries_seen, plans_captured FROM optidb.scan()")
                .unwrap();
        assert!(seen.unwrap() >= 0);
        assert!(plans.unwrap() >= 0);
        let logged = Spi::get_one::<i64>("SELECT count(*) FROM optidb.scan_log").unwrap();
        assert_eq!(logged, Some(1));
    }

    #[pg_test]
    fn catalog_facts_are_captured() {
        setup_workload();
        Spi::run("CREATE INDEX t_orders_cust ON t_orders (customer_id)").unwrap();
        Spi::run("SELECT * FROM optidb.scan()").unwrap();
        let rows = Spi::get_one::<f64>(
            "SELECT rows_est FROM optidb.schema_table WHERE relname = 't_orders'",
        )
        .unwrap();
        assert_eq!(rows, Some(20000.0));
        let cols = Spi::get_one::<Vec<String>>(
            "SELECT columns FROM optidb.schema_index WHERE indexname = 't_orders_cust'",
        )
        .unwrap();
        assert_eq!(cols, Some(vec!["customer_id".to_string()]));
        let n_distinct = Spi::get_one::<f32>(
            "SELECT n_distinct FROM optidb.schema_column sc JOIN optidb.schema_table st USING (relid) \
             WHERE st.relname = 't_orders' AND sc.attname = 'customer_id'",
        )
        .unwrap();
        assert_eq!(n_distinct, Some(1000.0));
    }

    #[pg_test]
    #[should_panic(expected = "top must be a positive integer")]
    fn negative_top_is_refused() {
        setup_workload();
        Spi::run("SELECT optidb.scan(-1)").unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "lim must be a positive integer")]
    fn zero_limit_is_refused() {
        Spi::run("SELECT * FROM optidb.bottlenecks(0)").unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "optidb has no statement with id 424242")]
    fn unknown_query_id_is_a_clear_error() {
        Spi::run("SELECT optidb.query(424242)").unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "the pg_stat_statements extension is not installed in this database")]
    fn scan_without_pg_stat_statements_says_what_to_do() {
        Spi::run("DROP EXTENSION IF EXISTS pg_stat_statements").unwrap();
        Spi::run("SELECT optidb.scan()").unwrap();
    }

    /// The current user's own context (for plans of statements it runs itself).
    fn my_context() -> crate::postgres::replay::Context {
        // SAFETY: a guarded read of this backend's current user (a test runs in a transaction).
        let me = unsafe { pg_sys::GetUserId() };
        let public = crate::postgres::replay::RecordedPath {
            text: "public".into(),
            schema_oids: Some(vec![pg_sys::PG_PUBLIC_NAMESPACE]),
        };
        crate::postgres::replay::resolve(me, Some(public), &[]).unwrap_or_else(|f| panic!("{f}"))
    }

    fn generic_plan(
        sql: &str,
        count: usize,
    ) -> Result<crate::postgres::explain::CapturedPlan, crate::postgres::guarded::Failure> {
        plan_as_me(sql, crate::postgres::explain::Values::Generic { count })
    }

    /// The costs of `sql` planned with `values`, replayed as this test's role.
    fn plan_as_me(
        sql: &str,
        values: crate::postgres::explain::Values,
    ) -> Result<crate::postgres::explain::CapturedPlan, crate::postgres::guarded::Failure> {
        let context = my_context();
        let replay = crate::postgres::explain::Replay {
            context: &context,
            sql,
            param_types: &[],
            tables: &[],
            relations: &[],
            values,
            limit: crate::postgres::gucs::statement_limit(),
        };
        crate::postgres::explain::plan(replay, crate::postgres::explain::Mode::Costs)
    }

    #[pg_test]
    fn a_replay_plans_nothing_that_runs_code_of_a_role_its_owner_does_not_trust() {
        setup_workload();
        Spi::run(
            "CREATE ROLE optidb_vet_probe NOLOGIN; \
             CREATE FUNCTION public.vet_f(int) RETURNS int LANGUAGE sql IMMUTABLE \
                 AS 'SELECT $1'; \
             CREATE VIEW public.vet_v AS SELECT * FROM t_orders; \
             ALTER FUNCTION public.vet_f(int) OWNER TO optidb_vet_probe",
        )
        .unwrap();
        let sql = "SELECT * FROM t_orders WHERE customer_id = public.vet_f($1)";
        let err = generic_plan(sql, 1)
            .err()
            .expect("another role's function is refused")
            .to_string();
        assert!(
            err.contains("vet_f(integer), owned by optidb_vet_probe"),
            "{err}"
        );
        Spi::run("ALTER FUNCTION public.vet_f(int) OWNER TO CURRENT_USER").unwrap();
        generic_plan(sql, 1).unwrap_or_else(|f| panic!("its owner's own function: {f}"));
        // A view expanded by the rewriter: its owner counts, whatever it reads.
        Spi::run("ALTER VIEW public.vet_v OWNER TO optidb_vet_probe").unwrap();
        let err = generic_plan("SELECT count(*) FROM public.vet_v", 0)
            .err()
            .expect("another role's view is refused")
            .to_string();
        assert!(
            err.contains("view vet_v, owned by optidb_vet_probe"),
            "{err}"
        );
    }

    #[pg_test]
    fn generic_plan_capture_cleans_up_and_reports_failures() {
        setup_workload();
        Spi::run("PREPARE users_own AS SELECT 1").unwrap();
        let plan = generic_plan("SELECT * FROM t_orders WHERE customer_id = $1", 1)
            .unwrap_or_else(|f| panic!("{f}"));
        assert!(plan.facts.had_seq_scan());
        assert_eq!(plan.facts.seq_scans[0].relation, "t_orders");

        let missing = generic_plan("SELECT * FROM no_such_table", 0);
        let err = missing
            .err()
            .expect("a missing table cannot be explained")
            .to_string();
        assert!(err.contains("no_such_table"), "{err}");
        assert!(err.contains("42P01"), "{err}");

        // Only our own prepared statements are removed; the user's survives; the GUC is restored.
        let names = Spi::get_one::<Vec<String>>(
            "SELECT array_agg(name::text ORDER BY name) FROM pg_prepared_statements",
        )
        .unwrap();
        assert_eq!(names, Some(vec!["users_own".to_string()]));
        let mode = Spi::get_one::<String>("SELECT current_setting('plan_cache_mode')").unwrap();
        assert_eq!(mode.as_deref(), Some("auto"));
    }

    #[pg_test]
    fn explain_timeout_is_a_recorded_failure_not_an_abort() {
        setup_workload();
        // A plan-time function call that sleeps: constant folding of an immutable function runs it.
        Spi::run(
            "CREATE FUNCTION slow_const() RETURNS int IMMUTABLE LANGUAGE sql \
             AS 'SELECT 1 FROM pg_sleep(2)'",
        )
        .unwrap();
        Spi::run("SET LOCAL optidb.statement_timeout = 100").unwrap();
        let outcome = generic_plan("SELECT slow_const()", 0);
        let err = outcome.err().expect("must time out").to_string();
        assert!(
            err.contains("timed out after 100 ms (optidb.statement_timeout)"),
            "{err}"
        );
        // The transaction is still usable.
        assert_eq!(Spi::get_one::<i32>("SELECT 41 + 1").unwrap(), Some(42));
    }

    #[pg_test]
    fn a_custom_plan_uses_the_sampled_values() {
        setup_workload();
        let sql = "SELECT * FROM t_orders WHERE id < $1";
        let values = [Some("5".to_string())];
        let custom = plan_as_me(sql, crate::postgres::explain::Values::Sampled(&values))
            .unwrap_or_else(|f| panic!("{f}"));
        let filter = custom.facts.seq_scans[0].filter.clone().unwrap_or_default();
        assert!(filter.contains("< 5"), "{filter}");
        assert!(custom.facts.est_rows < 100.0, "{}", custom.facts.est_rows);
        let generic = generic_plan(sql, 1).unwrap_or_else(|f| panic!("{f}"));
        assert!(
            generic.facts.est_rows > 1000.0,
            "{}",
            generic.facts.est_rows
        );
    }

    #[pg_test]
    fn a_replay_restores_identity_security_context_and_settings_even_when_it_fails() {
        setup_workload();
        Spi::run("CREATE ROLE optidb_replay_probe NOLOGIN").unwrap();
        let probe = Spi::get_one::<pg_sys::Oid>(
            "SELECT oid FROM pg_roles WHERE rolname = 'optidb_replay_probe'",
        )
        .unwrap()
        .unwrap();
        let context = crate::postgres::replay::Context {
            owner: crate::postgres::replay::owner(probe).unwrap(),
            search_path: "pg_catalog".into(),
            path_source: optidb_core::vocabulary::PathSource::Recorded,
        };
        let (mut user_before, mut security_before) = (pg_sys::InvalidOid, 0);
        // SAFETY: a guarded call that writes this backend's user and security context into the
        // two locals.
        unsafe { pg_sys::GetUserIdAndSecContext(&mut user_before, &mut security_before) };
        let path_before = Spi::get_one::<String>("SHOW search_path").unwrap();
        // Inside: the probe role, restricted, its search_path; it may not read t_orders.
        let inside = crate::postgres::guarded::run(None, || {
            crate::postgres::vetting::Vetted::catalog_lookup(&context).run(|| {
                let who = Spi::get_one::<String>("SELECT current_user::text").unwrap();
                let path = Spi::get_one::<String>("SHOW search_path").unwrap();
                // SAFETY: a guarded read of this backend's security context flags.
                let restricted = unsafe { pg_sys::InSecurityRestrictedOperation() };
                (who, path, restricted)
            })
        })
        .unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(inside.0.as_deref(), Some("optidb_replay_probe"));
        assert_eq!(inside.1.as_deref(), Some("pg_catalog"));
        assert!(inside.2);
        let failed = crate::postgres::guarded::run(None, || {
            crate::postgres::vetting::Vetted::catalog_lookup(&context)
                .run(|| Spi::run("SELECT * FROM public.t_orders"))
        });
        let err = failed
            .expect_err("the probe role cannot read t_orders")
            .to_string();
        assert!(err.contains("permission denied"), "{err}");
        let (mut user_after, mut security_after) = (pg_sys::InvalidOid, 0);
        // SAFETY: as for `user_before` above.
        unsafe { pg_sys::GetUserIdAndSecContext(&mut user_after, &mut security_after) };
        assert_eq!((user_after, security_after), (user_before, security_before));
        assert_eq!(
            Spi::get_one::<String>("SHOW search_path").unwrap(),
            path_before
        );
    }

    /// optidb's own queries are read by column name: a dropped cast, a renamed column or an
    /// unexpected NULL is an error naming the column, never a silent zero.
    #[pg_test]
    fn rows_read_by_name_fail_loudly_on_a_mismatch() {
        use crate::postgres::guarded::Failure;
        let read = |sql: &'static str| {
            crate::postgres::guarded::run(None, move || {
                crate::postgres::rows::select("broken on purpose", sql, &[], |row| {
                    row.get::<i64>("calls")
                })
            })
        };
        assert_eq!(read("SELECT 7::int8 AS calls").ok(), Some(vec![7]));
        assert_eq!(read("SELECT 7::int4 AS calls").ok(), Some(vec![7]));
        for (sql, sqlstate, words) in [
            // sum(bigint) without its ::int8 is numeric (a narrower integer only widens).
            (
                "SELECT sum(7::int8) AS calls",
                "42804",
                &["\"calls\"", "numeric", "i64"][..],
            ),
            (
                "SELECT 7::int8 AS n_calls",
                "42703",
                &["no column \"calls\""][..],
            ),
            (
                "SELECT NULL::int8 AS calls",
                "22004",
                &["\"calls\"", "NULL"][..],
            ),
        ] {
            match read(sql) {
                Err(Failure::Error {
                    sqlstate: got,
                    message,
                }) => {
                    assert_eq!(got, sqlstate, "{sql}: {message}");
                    assert!(message.contains("broken on purpose"), "{message}");
                    for word in words {
                        assert!(message.contains(word), "{sql}: {message} lacks {word}");
                    }
                }
                other => panic!("{sql} was read: {other:?}"),
            }
        }
    }
}
