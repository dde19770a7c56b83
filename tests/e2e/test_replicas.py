"""Read replicas as sources (issue 26): a real primary and a real streaming standby of it
(pg_basebackup -R), optidb and pg_stat_statements preloaded on both. A read workload that runs
only on the standby (an app role, a non-public schema through SET search_path, PREPARE/EXECUTE,
a statement that errors) reaches the primary's scan through dblink: its statements, their
percentiles and index advice are on the primary, with the source shown. The standby going down
is a recorded state and the scan still finishes; a reader sees only their own statements from
every source; only an admin registers a source."""

import threading
import time

import psycopg
import pytest

from conftest import PORT, connect, scalar, own_data, wait_for
from fleet import PRELOAD_ORDERS, pg_ctl, primary_and_standby

# The primary and the standby: ports of this test's own (the e2e cluster is PORT).
PRIMARY_PORT, STANDBY_PORT = PORT + 30, PORT + 31
STANDBY_DATA = own_data("replica-standby")
DB = "shop"
APP, READER, ADMIN = "replica_app", "replica_reader", "replica_admin"
MONITOR = "replica_monitor"

# Cancelled by statement_timeout on the standby every time.
NEVER_COMPLETES = ("SELECT count(*) FROM item a JOIN item b ON a.price = b.price "
                   "WHERE a.sku LIKE 'never%' OR b.category > -1")
TIMEOUT_MS, NEVER_RUNS = 300, 3


def standby(action):
    pg_ctl(STANDBY_DATA, action)


def setup(su):
    su.execute(f"CREATE ROLE {APP} LOGIN")
    su.execute(f"CREATE ROLE {READER} LOGIN IN ROLE optidb_reader")
    su.execute(f"CREATE ROLE {MONITOR} LOGIN IN ROLE optidb_monitor")
    su.execute("CREATE SCHEMA inv")
    su.execute("CREATE TABLE inv.item (id int PRIMARY KEY, category int NOT NULL, "
               "sku text NOT NULL, price int NOT NULL)")
    su.execute("INSERT INTO inv.item SELECT g, g % 5000, 'sku-' || g, g % 997 "
               "FROM generate_series(1, 200000) g")
    su.execute("ANALYZE inv.item")
    su.execute(f"GRANT USAGE ON SCHEMA inv TO {APP}, {READER}")
    su.execute(f"GRANT SELECT ON inv.item TO {APP}, {READER}")


@pytest.fixture(scope="module", params=PRELOAD_ORDERS)
def fleet(request):
    """The whole module runs once per order of shared_preload_libraries."""
    with primary_and_standby("replica-primary", PRIMARY_PORT, STANDBY_PORT, STANDBY_DATA, DB,
                             ADMIN, setup, preload=request.param) as port:
        with connect(DB, port=port) as su:
            assert scalar(su, "SHOW shared_preload_libraries") == request.param
        yield port


def standby_workload():
    """Reads that run only on the standby: prepared, through search_path, and one that errors."""
    with connect(DB, user=APP, port=STANDBY_PORT) as c:
        assert scalar(c, "SELECT pg_is_in_recovery()")
        c.execute("SET search_path = inv")
        c.execute("PREPARE by_category(int) AS SELECT sku, price FROM item WHERE category = $1")
        for i in range(40):
            c.execute(f"EXECUTE by_category({i})")
        for i in (1, 2, 0, 3):
            if i == 0:
                with pytest.raises(psycopg.errors.DivisionByZero):
                    c.execute("SELECT count(*) FROM item WHERE price = 10 / %s", (i,))
            else:
                c.execute("SELECT count(*) FROM item WHERE price = 10 / %s", (i,))
    with connect(DB, user=READER, port=STANDBY_PORT) as c:
        c.execute("SET search_path = inv")
        for i in range(5):
            c.execute("SELECT max(price) FROM item WHERE sku = %s", (f"sku-{i}",))
    # A statement that never completes on the standby: pg_stat_statements there has no entry.
    with connect(DB, user=APP, port=STANDBY_PORT) as c:
        c.execute("SET search_path = inv")
        c.execute(f"SET statement_timeout = {TIMEOUT_MS}")
        for _ in range(NEVER_RUNS):
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute(NEVER_COMPLETES)


@pytest.fixture(scope="module")
def scanned(fleet):
    with connect(DB, user=ADMIN, port=fleet) as admin:
        row = admin.execute("SELECT * FROM optidb.add_source('standby1', 'standby1')").fetchone()
        assert row == ("standby1", "standby1", "new")
        standby_workload()
        # The same statement on the primary: another row, of source 'local'.
        with connect(DB, user=APP, port=fleet) as c:
            c.execute("SET search_path = inv")
            c.execute("PREPARE by_category(int) AS "
                      "SELECT sku, price FROM item WHERE category = $1")
            for i in range(3):
                c.execute(f"EXECUTE by_category({i})")
        admin.execute("SELECT * FROM optidb.scan()")
        yield admin


def test_only_an_admin_registers_a_source_with_clear_errors(fleet):
    with connect(DB, user=APP, port=fleet) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM optidb.add_source('mine', 'standby1')")
    with connect(DB, user=READER, port=fleet) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM optidb.add_source('mine', 'standby1')")
    with connect(DB, user=ADMIN, port=fleet) as admin:
        with pytest.raises(psycopg.errors.UndefinedObject) as e:
            admin.execute("SELECT * FROM optidb.add_source('other', 'no_such_server')")
        assert "CREATE SERVER" in e.value.diag.message_hint
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            admin.execute("SELECT * FROM optidb.add_source('local', 'standby1')")
        with pytest.raises(psycopg.errors.UndefinedObject):
            admin.execute("SELECT optidb.drop_source('never_added')")
        # No credentials in optidb's tables: the server name only.
        cols = [r[0] for r in admin.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'optidb.source'::regclass "
            "AND attnum > 0").fetchall()]
        assert not [c for c in cols if "pass" in c or "conn" in c]


def test_standby_statements_reach_the_primary_with_their_source(scanned):
    admin = scanned
    state, error, pulled = admin.execute(
        "SELECT state, last_error, last_pulled_at FROM optidb.source "
        "WHERE name = 'standby1'").fetchone()
    assert (state, error) == ("ok", None) and pulled is not None
    rows = admin.execute(
        "SELECT query_id, query, calls, p95_ms, source FROM optidb.bottlenecks(50, 'standby1') "
        "WHERE query LIKE '%FROM item WHERE category = $1%'").fetchall()
    assert len(rows) == 1, rows
    replica_id, _, calls, p95, source = rows[0]
    assert source == "standby1" and calls == 40 and p95 is not None and p95 > 0
    # The same statement on the primary is a statement of its own, shown apart and together.
    local = admin.execute(
        "SELECT query_id, calls FROM optidb.bottlenecks(50, 'local') "
        "WHERE query LIKE '%FROM item WHERE category = $1%'").fetchall()
    assert len(local) == 1 and local[0][1] == 3 and local[0][0] != replica_id
    both = {r[0] for r in admin.execute(
        "SELECT query_id FROM optidb.bottlenecks(50) "
        "WHERE query LIKE '%FROM item WHERE category = $1%'").fetchall()}
    assert both == {replica_id, local[0][0]}
    # Percentiles from the standby's own histograms.
    stats = admin.execute(
        "SELECT query_id, count, p95_ms FROM optidb.execution_time_stats(source => 'standby1')"
    ).fetchall()
    assert (replica_id, 40) in [(r[0], r[1]) for r in stats]
    assert all(r[0] != local[0][0] for r in stats)
    # The statement that errored on the standby: its failure is counted there.
    failed = admin.execute(
        "SELECT s.error_count FROM optidb.execution_time_stats(source => 'standby1') s "
        "JOIN optidb.query q ON q.id = s.query_id WHERE q.norm_sql LIKE '%price = ($_ / $_)%'"
    ).fetchall()
    assert failed and failed[0][0] == 1, admin.execute(
        "SELECT q.norm_sql, s.count, s.error_count FROM optidb.query q LEFT JOIN "
        "optidb.execution_time_stats(source => 'standby1') s ON s.query_id = q.id "
        "WHERE q.source = 'standby1'").fetchall()


def test_a_standby_statement_is_planned_with_its_sampled_search_path_and_values(scanned):
    """The standby's hooks sampled EXECUTE by_category(i) with search_path inv (no schema in
    the text): the pull stores those samples under the replica's statement, and the primary
    plans it with them, not generically."""
    admin = scanned
    replica_id = scalar(admin, "SELECT id FROM optidb.query WHERE source = 'standby1' "
                               "AND norm_sql LIKE '%FROM item WHERE category = $1%'")
    samples = admin.execute(
        "SELECT search_path, param_values, values_known, kind FROM optidb.sample "
        "WHERE query_id = %s", (replica_id,)).fetchall()
    assert samples, "no sample of the standby's statement reached the primary"
    # The schemas the search_path found (pg_catalog is implicitly first), by name.
    paths = {path for path, *_ in samples}
    assert paths == {"pg_catalog, inv"}, samples
    values = [v for _, v, known, _ in samples if known]
    assert values and all(len(v) == 1 and 0 <= int(v[0]) < 40 for v in values), samples
    plans = admin.execute(
        "SELECT plan_kind, path_source, search_path, param_values FROM optidb.plan "
        "WHERE query_id = %s AND plan_json IS NOT NULL", (replica_id,)).fetchall()
    sampled = [p for p in plans if p[0] in ("typical", "slowest")]
    assert sampled, plans
    assert all(p[1] == "recorded" and p[2] in paths and p[3] in values for p in sampled), plans


def test_a_statement_that_never_completes_on_the_standby_reaches_the_primary(scanned):
    """Only cancelled on the standby (no pg_stat_statements entry there): filed on the primary
    from its text, with its failures and time until failure, shown by bottlenecks()."""
    admin = scanned
    rows = admin.execute(
        "SELECT query_id, query, calls, reason, evidence, source "
        "FROM optidb.bottlenecks(50, 'standby1') WHERE query LIKE '%item a JOIN item b%'"
    ).fetchall()
    assert len(rows) == 1, admin.execute(
        "SELECT source, norm_sql FROM optidb.query").fetchall()
    query_id, query, calls, reason, evidence, source = rows[0]
    assert source == "standby1" and calls == 0, rows
    f = evidence["failures"]
    assert f["count"] == f["timeouts"] == NEVER_RUNS and f["sqlstate"] == "57014", f
    assert TIMEOUT_MS <= f["mean_time_until_failure_ms"] < TIMEOUT_MS + 3000, f
    assert reason.startswith(f"never completes: {NEVER_RUNS} of {NEVER_RUNS} executions "
                             "cancelled by statement_timeout"), reason
    # Seen by this pull, though it has no counters; planned like the others.
    assert scalar(admin, "SELECT last_seen = (SELECT max(started_at) FROM optidb.scan_log "
                         "WHERE kind = 'scan') FROM optidb.query WHERE id = %s", (query_id,))
    # Its failed execution's search_path came too: a sample to replay it in.
    assert scalar(admin, "SELECT search_path FROM optidb.sample WHERE query_id = %s "
                         "LIMIT 1", (query_id,)) == "pg_catalog, inv"


def test_index_advice_for_a_standby_statement_is_computed_on_the_primary(scanned):
    admin = scanned
    replica_id = scalar(admin, "SELECT id FROM optidb.query WHERE source = 'standby1' "
                               "AND norm_sql LIKE '%FROM item WHERE category = $1%'")
    plan = admin.execute("SELECT search_path, had_seq_scan FROM optidb.plan "
                         "WHERE query_id = %s AND plan_json IS NOT NULL", (replica_id,)).fetchone()
    assert plan is not None and plan[1], plan
    ddl = [r[0] for r in admin.execute(
        "SELECT ddl FROM optidb.recommend(%s)", (replica_id,)).fetchall()]
    assert any("inv.item" in d and "category" in d for d in ddl), ddl


def test_advice_report_and_metrics_filter_by_source_and_name_it(scanned):
    admin = scanned
    advice = admin.execute("SELECT ddl, evidence->'sources' FROM optidb.recommend("
                           "source => 'standby1')").fetchall()
    category = [src for ddl, src in advice if "inv.item" in ddl and "category" in ddl]
    assert category and "standby1" in category[0], advice
    assert all("standby1" in src for _, src in advice), advice
    assert admin.execute("SELECT * FROM optidb.recommend(source => 'no_such')").fetchall() == []
    assert scalar(admin, "SELECT count(*) FROM optidb.recommend()") >= len(advice)
    # The old call still works, and a NULL top is still NULL (as when it was STRICT).
    assert scalar(admin, "SELECT count(*) FROM optidb.recommend(NULL)") >= len(advice)
    assert scalar(admin, "SELECT optidb.metrics(NULL)") is None
    admin.execute("SELECT * FROM optidb.refresh()")
    lines = [l for l in scalar(admin, "SELECT optidb.metrics(50, 'standby1')").splitlines()
             if l.startswith("optidb_statement_calls_total{")]
    assert lines and all('source="standby1"' in l for l in lines), lines
    everything = scalar(admin, "SELECT optidb.metrics(50)")
    assert 'source="local"' in everything and 'source="standby1"' in everything
    page = scalar(admin, "SELECT optidb.report(1, 10, 'standby1')")
    assert "statements of source standby1" in page and "category = $1" in page


def test_a_reader_sees_only_their_own_statements_from_every_source(scanned, fleet):
    with connect(DB, user=READER, port=fleet) as c:
        roles = {r[0] for r in c.execute("SELECT role_name FROM optidb.query").fetchall()}
        assert roles == {READER}, roles
        mine = c.execute("SELECT source, query FROM optidb.bottlenecks(50)").fetchall()
        assert mine and all(s == "standby1" for s, _ in mine)
        assert all("sku = $1" in q for _, q in mine)


def source_health(port):
    """health()'s sources figures as a monitoring role reads them: {item: (value, status,
    details)}."""
    with connect(DB, user=MONITOR, port=port) as c:
        return {r[0]: r[1:] for r in c.execute(
            "SELECT item, value, status, details FROM optidb.health() "
            "WHERE item IN ('sources_unreachable', 'source_pull_age_max_s')")}


def test_a_standby_that_went_down_is_recorded_and_the_scan_finishes(scanned, fleet):
    admin = scanned
    healthy = source_health(fleet)
    assert healthy["sources_unreachable"][:2] == (0, "ok"), healthy
    [entry] = healthy["sources_unreachable"][2]["sources"]
    assert entry["source"] == "standby1" and entry["state"] == "ok" and entry["error"] is None
    assert 0 <= healthy["source_pull_age_max_s"][0] < 600
    scans = scalar(admin, "SELECT count(*) FROM optidb.scan_log")
    standby("stop")
    try:
        admin.execute("SELECT * FROM optidb.scan()")
        assert scalar(admin, "SELECT count(*) FROM optidb.scan_log") == scans + 1
        state, error = admin.execute("SELECT state, last_error FROM optidb.source "
                                     "WHERE name = 'standby1'").fetchone()
        assert state == "unreachable" and error, (state, error)
        # History already pulled stays.
        assert scalar(admin, "SELECT count(*) FROM optidb.bottlenecks(50, 'standby1')") > 0
        # A health item a monitor sees, with the state, error and age of the last good pull,
        # and the default rule fires on it.
        down = source_health(fleet)
        assert down["sources_unreachable"][:2] == (1, "warning"), down
        [entry] = down["sources_unreachable"][2]["sources"]
        assert entry["state"] == "unreachable" and entry["error"], entry
        # The monitor reads no connection detail (host, port, user) of the error; the admin
        # reads the full error, in optidb.source and in health().
        assert str(STANDBY_PORT) not in entry["error"] and "postgres" not in entry["error"]
        assert "could not be pulled" in entry["error"] and entry["error"] != error, entry
        assert "could not establish connection" in error, error
        [full] = [r[2]["sources"][0] for r in admin.execute(
            "SELECT item, value, details FROM optidb.health() "
            "WHERE item = 'sources_unreachable'")]
        assert full["error"] == error[:300], full
        with connect(DB, user=MONITOR, port=fleet) as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT last_error FROM optidb.source")
            [seen] = c.execute("SELECT last_error FROM optidb.monitor_sources").fetchone()
            assert seen == entry["error"], seen
        assert entry["pulled_s_ago"] > entry["tried_s_ago"] >= 0, entry
        # (pulled_s_ago is rounded to 0.1 s)
        assert down["source_pull_age_max_s"][0] >= entry["pulled_s_ago"] - 0.1
        admin.execute("SELECT * FROM optidb.check_alerts()")
        assert admin.execute(
            "SELECT metric, value FROM optidb.alert WHERE rule_name = 'source_unreachable' "
            "AND resolved_at IS NULL").fetchall() == [("sources_unreachable", 1)]
        # A monitor reads no statement of any source.
        with connect(DB, user=MONITOR, port=fleet) as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT * FROM optidb.query")
    finally:
        standby("start")
    wait_for("the standby to be back", lambda: scalar(
        connect(DB, port=STANDBY_PORT), "SELECT NOT pg_is_in_recovery() IS NULL"))
    admin.execute("SELECT * FROM optidb.scan()")
    assert scalar(admin, "SELECT state FROM optidb.source WHERE name = 'standby1'") == "ok"
    assert source_health(fleet)["sources_unreachable"][:2] == (0, "ok")


def test_a_standby_that_goes_down_mid_scan_is_recorded_and_the_scan_finishes(scanned, fleet):
    """Deterministic: a lock on the pull's baselines holds the scan just before it reads the
    standby (the pull's first statement opens optidb.source_pgss_state), the standby stops,
    the lock goes: the running scan finds the standby gone, records it and finishes."""
    admin = scanned
    scans = scalar(admin, "SELECT count(*) FROM optidb.scan_log")
    done = {}
    with connect(DB, port=fleet) as su:
        su.execute("BEGIN")
        su.execute("LOCK TABLE optidb.source_pgss_state IN ACCESS EXCLUSIVE MODE")

        def scan():
            with connect(DB, user=ADMIN, port=fleet) as c:
                done["pid"] = c.info.backend_pid
                done["rows"] = c.execute("SELECT * FROM optidb.scan()").fetchall()

        runner = threading.Thread(target=scan)
        runner.start()
        try:
            wait_for("the scan to wait on the pull's baselines", lambda: scalar(
                su, "SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = 'optidb.source_pgss_state'::regclass"))
            standby("stop")
        finally:
            su.execute("COMMIT")
            runner.join(120)
    try:
        assert "rows" in done and not runner.is_alive(), done
        assert scalar(admin, "SELECT count(*) FROM optidb.scan_log") == scans + 1
        state, error = admin.execute("SELECT state, last_error FROM optidb.source "
                                     "WHERE name = 'standby1'").fetchone()
        # The standby was gone when the pull ran (not a timeout of the held pull).
        assert state == "unreachable" and "connect" in error, (state, error)
    finally:
        standby("start")
    wait_for("the standby to be back", lambda: scalar(
        connect(DB, port=STANDBY_PORT), "SELECT pg_is_in_recovery()"))
    admin.execute("SELECT * FROM optidb.scan()")
    assert scalar(admin, "SELECT state FROM optidb.source WHERE name = 'standby1'") == "ok"
