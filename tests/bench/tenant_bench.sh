#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): a schema-per-tenant, role-per-tenant workload
# (issue 27 part 2). Each tenant has a schema with one table of 10 integer columns (10,000 rows)
# and a role whose search_path is that schema; each runs the same 10 statements (one filter
# per column) twice. For each tenant count (1 is the baseline, in the same run): the warm
# scan()'s time, the rows optidb stores (statements, samples, recommendations, simulations,
# MB of its schema, the relations recorded per statement and their bytes), the per-schema
# advice rows of recommend(), the rows of tenant_advice() and the schemas of its widest and
# narrowest family. Needs the cluster started (tests/scripts/cluster.sh start) with optidb and
# hypopg installed (tests/scripts/install-extension.sh; --release for figures to quote), and
# pg_stat_statements.max above 10 x the largest tenant count (the project cluster keeps 5,000:
# ALTER SYSTEM SET pg_stat_statements.max = 20000, then restart it).
#   TENANTS="1 100 1000" tests/bench/tenant_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
counts=${TENANTS:-1 100 1000}
max=0
for n in $counts; do [ "$n" -gt "$max" ] && max=$n; done

pg -d postgres -q <<SQL
DO \$\$ BEGIN
  FOR i IN 1..$max LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_tenant_' || i) THEN
      EXECUTE format('CREATE ROLE %I', 'bench_tenant_' || i);
    END IF;
  END LOOP;
END \$\$;
SQL

kept=$(pg -d postgres -qAt -c "SHOW pg_stat_statements.max")
[ "$kept" -gt $((max * 10 + 100)) ] ||
    echo "warning: pg_stat_statements.max = $kept keeps fewer than the $((max * 10)) statements" >&2

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

for n in $counts; do
    db=optidb_tenant_bench_$n
    pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    pg -d "$db" -q <<SQL
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION hypopg;
CREATE EXTENSION optidb;
DO \$\$ BEGIN
  FOR i IN 1..$n LOOP
    EXECUTE format('CREATE SCHEMA %I', 'tenant_' || i);
    EXECUTE format('CREATE TABLE %I.t (id int PRIMARY KEY, c1 int, c2 int, c3 int, c4 int, '
                   'c5 int, c6 int, c7 int, c8 int, c9 int, c10 int)', 'tenant_' || i);
    EXECUTE format('INSERT INTO %I.t SELECT g, g %% 500, g %% 501, g %% 502, g %% 503, '
                   'g %% 504, g %% 505, g %% 506, g %% 507, g %% 508, g %% 509 '
                   'FROM generate_series(1, 10000) g', 'tenant_' || i);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', 'tenant_' || i, 'bench_tenant_' || i);
    EXECUTE format('GRANT SELECT ON %I.t TO %I', 'tenant_' || i, 'bench_tenant_' || i);
  END LOOP;
END \$\$;
SQL
    pg -d "$db" -qc "VACUUM ANALYZE" -c "SELECT pg_stat_statements_reset()" >/dev/null
    # The workload: each tenant's role, with its schema as search_path, runs the 10 statements
    # twice (SET ROLE: pg_stat_statements and optidb record them under that role).
    for i in $(seq 1 "$n"); do
        echo "SET ROLE bench_tenant_$i; SET search_path = tenant_$i;"
        for _ in 1 2; do
            for c in $(seq 1 10); do echo "SELECT id FROM t WHERE c$c = $((i % 400 + c));"; done
        done
        echo "RESET ROLE;"
    done >/tmp/optidb-tenant-bench-$n.sql
    chmod a+r /tmp/optidb-tenant-bench-$n.sql
    start=$(date +%s%N)
    pg -d "$db" -q -o /dev/null -f /tmp/optidb-tenant-bench-$n.sql
    workload_ms=$(ms "$start")
    start=$(date +%s%N)
    # top: every tenant's statements recorded (the default 100 would keep the costliest only).
    top=$((n * 10 + 10))
    pg -d "$db" -qAt -c "SELECT * FROM optidb.scan($top)" >/dev/null # cold: first parse of each
    cold_ms=$(ms "$start")
    start=$(date +%s%N)
    pg -d "$db" -qAt -c "SELECT * FROM optidb.scan($top)" >/dev/null
    warm_ms=$(ms "$start")
    figures=$(pg -d "$db" -qAt -F ' ' -c "
SELECT (SELECT count(*) FROM optidb.query WHERE norm_sql LIKE 'SELECT id FROM t WHERE%'),
       (SELECT count(*) FROM optidb.sample),
       (SELECT count(*) FROM optidb.recommendation),
       (SELECT count(*) FROM optidb.recommend()
        WHERE kind IN ('missing_index', 'composite_index', 'expression_index')),
       (SELECT count(*) FROM optidb.simulation),
       (SELECT count(*) FROM optidb.tenant_advice()),
       (SELECT coalesce(max(lacking), 0) FROM optidb.tenant_advice()),
       (SELECT round(sum(pg_total_relation_size(c.oid)) / 1048576.0, 1) FROM pg_class c
        WHERE c.relnamespace = 'optidb'::regnamespace AND c.relkind IN ('r', 'm')),
       (SELECT count(*) FROM optidb.statement_relation),
       pg_total_relation_size('optidb.statement_relation'),
       (SELECT coalesce(min(lacking), 0) FROM optidb.tenant_advice())")
    read -r statements samples recs index_advice sims families widest mb relations relation_bytes \
        narrowest <<<"$figures"
    echo "tenants=$n statements_x_tenants=$((n * 10)) workload_ms=$workload_ms" \
         "scan_cold_ms=$cold_ms scan_warm_ms=$warm_ms statements_stored=$statements" \
         "samples=$samples recommendation_rows=$recs index_advice_rows=$index_advice" \
         "simulations=$sims tenant_advice_rows=$families widest_family=$widest" \
         "narrowest_family=$narrowest optidb_mb=$mb statement_relation_rows=$relations" \
         "statement_relation_bytes=$relation_bytes"
    pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)"
done
