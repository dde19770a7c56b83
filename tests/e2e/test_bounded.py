"""Bounded and partial-failure safe (issue 22, part 4).

- Retention: plans, simulations, scan and refresh logs stay within the bound src/api/scan.rs
  states (prune_history) over a long run of scans, and the latest rows advice, simulations and
  metrics() rest on survive whatever their age. The bound, per history (a statement's plans of
  one kind, a recommendation's simulations on one statement in one mode and plan kind, the log
  rows of one scan kind or view): rows older than optidb.retention days at most KEEP (2) plus
  the KEEP latest that readers want (basis plans, successful simulations and refreshes), and at
  most CAP rows whatever their age (plans, simulations 100; scan_log 50,000 per kind;
  refresh_log 10,000 per view) plus those KEEP wanted ones.
- metrics() reads one refresh_log row per view and only the open alerts, however long the log.
- A failing post-ingest stage of scan() (optidb.fault_injection = families) is rolled back
  alone and recorded in scan_log with its SQLSTATE; the ingest and the other stages are kept.
- The background worker ends within a couple of seconds on SIGTERM and on pg_ctl stop -m fast,
  even while its job waits for a lock that is never released (a prepared transaction holds it).

Roles as users live: the application role works in schema `app` through SET search_path (simple
and extended protocol, SQL PREPARE/EXECUTE, a statement that errors), an optidb_admin without
superuser runs scan(), refresh(), prune() and metrics(), a plain role without optidb grants can
neither prune nor set the fault injection.
"""

import contextlib
import os
import re
import subprocess
import time
import uuid

import psycopg
import pytest

from conftest import HYPOPG, connect, new_database, own_cluster, own_data, scalar
from conftest import wait_for as wait_until

KEEP = 2
PLAN_CAP = SIMULATION_CAP = 100
SCAN_LOG_CAP = 50_000
REFRESH_LOG_CAP = 10_000
SCANS = 200
VIEWS = ["mv_query_metrics", "mv_query_metrics_daily", "mv_query_metrics_hourly",
         "mv_table_metrics"]

# (table, columns of one history, time column(s) a superuser moves back to age it)
HISTORIES = {
    "optidb.plan": ("query_id, plan_kind", ["captured_at"]),
    "optidb.simulation": ("rec_id, query_id, mode, plan_kind", ["ran_at"]),
    "optidb.scan_log": ("kind", ["started_at", "finished_at"]),
    "optidb.refresh_log": ("view_name", ["started_at", "finished_at"]),
}


@pytest.fixture
def shop():
    """A database of its own: the application's schema `app` with an unindexed lookup (advice
    that hypopg proves, so every scan simulates), its roles, and a first workload."""
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("adm", "app", "plain")}
    try:
        with new_database(extensions=("pg_stat_statements", *HYPOPG, "optidb")) as db:
            with connect(db) as su:
                for name in roles.values():
                    su.execute(f'CREATE ROLE "{name}" LOGIN')
                su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')
                su.execute(f'CREATE SCHEMA app AUTHORIZATION "{roles["app"]}"')
                # Samples every second, so typical plans (and their values) keep changing.
                su.execute(f'ALTER DATABASE "{db}" SET optidb.sample_interval = 1')
            with app_session(db, roles, prepared=False) as c:
                c.execute("CREATE TABLE orders AS SELECT g AS id, g % 997 AS customer_id, "
                          "'note ' || g AS note FROM generate_series(1, 60000) g")
                c.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
                c.execute("ANALYZE orders")
            yield db, roles
    finally:
        with connect("postgres") as su:
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')


def app_session(db, roles, prepared=True):
    c = connect(db, user=roles["app"])
    c.execute("SET search_path = app")
    if prepared:
        c.execute("PREPARE by_note(text) AS SELECT count(*) FROM orders WHERE note = $1")
    return c


def workload(c, i):
    c.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (i % 997,))
    c.execute(f"SELECT note FROM orders WHERE id = {i + 1}")
    c.execute(f"EXECUTE by_note('note {i * 7 + 1}')")
    c.execute("UPDATE orders SET note = note WHERE id = %s", (i + 2,))
    with pytest.raises(psycopg.errors.DivisionByZero):
        c.execute("SELECT count(*) / 0 FROM orders WHERE customer_id = %s", (i,))


def age_everything(su, days):
    """Move every stored plan, simulation and log row `days` back in time (superuser)."""
    for table, (_, columns) in HISTORIES.items():
        moved = ", ".join(f"{c} = {c} - make_interval(days => {days})" for c in columns)
        su.execute(f"UPDATE {table} SET {moved}")


def largest_history(c, table, where="true"):
    per, _ = HISTORIES[table]
    return scalar(c, f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM {table} "
                     f"WHERE {where} GROUP BY {per}) h")


def written(c, table):
    """Rows ever inserted into `table` (its identity sequence)."""
    return scalar(c, f"SELECT last_value FROM pg_sequences WHERE schemaname = 'optidb' "
                     f"AND sequencename = '{table.split('.')[1]}_id_seq'")


@pytest.mark.hypopg
def test_a_long_run_of_scans_keeps_plans_simulations_and_logs_within_the_stated_bound(shop):
    db, roles = shop
    with connect(db) as su:
        su.execute(f'ALTER DATABASE "{db}" SET optidb.retention = 1')
    su, adm, app = connect(db), connect(db, user=roles["adm"]), app_session(db, roles)
    started = time.time()
    for i in range(SCANS):
        workload(app, i)
        adm.execute("SELECT * FROM optidb.scan()")
        if i % 10 == 0:
            adm.execute("SELECT * FROM optidb.refresh()")
        # As if scans ran two days apart: whatever is stored is past the 1-day retention now.
        age_everything(su, 2)
    elapsed = time.time() - started
    deleted = scalar(adm, "SELECT optidb.prune()")

    # Every row is older than the retention: per history at most KEEP latest + KEEP wanted.
    for table in HISTORIES:
        assert scalar(su, f"SELECT count(*) FROM {table}") > 0, table
        assert largest_history(su, table) <= 2 * KEEP, table
    assert deleted > 0
    assert scalar(su, "SELECT count(*) FROM optidb.scan_log") <= KEEP  # one kind: scans
    assert scalar(su, "SELECT count(*) FROM optidb.refresh_log") <= 2 * KEEP * len(VIEWS)
    # ... and without pruning they would not be: the run wrote far more than that.
    for table in ("optidb.simulation", "optidb.scan_log"):
        assert written(su, table) >= SCANS, table
    plans_written, plans = written(su, "optidb.plan"), scalar(su, "SELECT count(*) FROM optidb.plan")
    assert plans_written >= 2 * plans, (plans_written, plans)

    # What advice rests on survived: the latest basis plan of the slow lookup, its latest
    # capture in query(id), the proof of its index in recommend(), the ages in metrics().
    qid, evidence = adm.execute(
        "SELECT query_id, evidence FROM optidb.bottlenecks(20) "
        "WHERE query LIKE '%%customer_id%%' AND query NOT LIKE '%%/%%'").fetchone()
    assert evidence["plan_captured_at"] is not None, evidence
    assert scalar(adm, "SELECT jsonb_array_length(optidb.query(%s)->'plans')", (qid,)) >= 1
    changes = scalar(adm, "SELECT node_changes FROM optidb.recommend(%s) "
                          "WHERE kind = 'missing_index'", (qid,))
    assert changes, "the latest successful simulation must be kept"
    ages = view_ages(scalar(adm, "SELECT optidb.metrics()"))
    assert set(ages) == set(VIEWS), ages
    # The baseline the next scan compares pg_stat_statements' reset with is kept.
    assert scalar(su, "SELECT pgss_stats_reset IS NOT NULL FROM optidb.scan_log "
                      "ORDER BY id DESC LIMIT 1")
    print(f"{SCANS} scans in {elapsed:.1f} s; plans written {plans_written}, kept {plans}; "
          f"simulations written {written(su, 'optidb.simulation')}, kept "
          f"{scalar(su, 'SELECT count(*) FROM optidb.simulation')}")
    for c in (su, adm, app):
        c.close()


def copy_rows(su, table, row_id, times, at):
    """`times` copies of row `row_id` of `table`, the n-th one at `at` - n minutes."""
    columns = [r[0] for r in su.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attname <> 'id' ORDER BY attnum", (table,))]
    time_column = HISTORIES[table][1][0]
    values = [f"{at} - n * interval '1 minute'" if c == time_column else c for c in columns]
    su.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} "
               f"FROM {table}, generate_series(1, {times}) n WHERE id = {row_id}")


@pytest.mark.hypopg
def test_row_caps_bound_histories_within_the_retention_and_keep_the_latest(shop):
    db, roles = shop
    with app_session(db, roles) as app:
        workload(app, 1)
    su, adm = connect(db), connect(db, user=roles["adm"])
    adm.execute("SELECT * FROM optidb.scan()")
    adm.execute("SELECT * FROM optidb.refresh()")
    plan = scalar(su, "SELECT max(id) FROM optidb.plan WHERE basis AND plan_json IS NOT NULL")
    simulation = scalar(su, "SELECT max(id) FROM optidb.simulation WHERE error IS NULL")
    scan_log = scalar(su, "SELECT max(id) FROM optidb.scan_log")
    refresh_log = scalar(su, "SELECT max(id) FROM optidb.refresh_log WHERE view_name = "
                             "'mv_query_metrics' AND error IS NULL")
    # Older copies, all within the 30-day retention: only the caps can bound them.
    copy_rows(su, "optidb.plan", plan, 3 * PLAN_CAP, "now()")
    copy_rows(su, "optidb.simulation", simulation, 3 * SIMULATION_CAP, "now()")
    copy_rows(su, "optidb.scan_log", scan_log, SCAN_LOG_CAP + 5_000, "now()")
    copy_rows(su, "optidb.refresh_log", refresh_log, 2_000, "now()")
    # More failed refreshes than the cap, all newer: the latest successful ones stay beyond it
    # (metrics() shows the view's age from them).
    su.execute("INSERT INTO optidb.refresh_log (view_name, started_at, finished_at, duration_ms, "
               "concurrent, error) SELECT 'mv_query_metrics', now() + n * interval '1 ms', "
               "now() + n * interval '1 ms', 1, true, 'timed out' "
               f"FROM generate_series(1, {REFRESH_LOG_CAP + 10}) n")

    with connect(db, user=roles["plain"]) as plain:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            plain.execute("SELECT optidb.prune()")
    assert scalar(adm, "SELECT optidb.prune()") >= (2 * PLAN_CAP + 2 * SIMULATION_CAP
                                                    + 5_000 + 2_000)
    assert scalar(su, "SELECT count(*) FROM optidb.refresh_log WHERE error IS NULL "
                      "AND view_name = 'mv_query_metrics'") == KEEP
    assert largest_history(su, "optidb.plan") <= PLAN_CAP + KEEP
    assert largest_history(su, "optidb.simulation") <= SIMULATION_CAP + KEEP
    assert largest_history(su, "optidb.scan_log") <= SCAN_LOG_CAP
    assert largest_history(su, "optidb.refresh_log") <= REFRESH_LOG_CAP + KEEP
    assert "mv_query_metrics" in view_ages(scalar(adm, "SELECT optidb.metrics()"))
    # The newest rows are the ones kept: the real capture, simulation, log rows.
    for table, row_id in (("optidb.plan", plan), ("optidb.simulation", simulation),
                          ("optidb.scan_log", scan_log), ("optidb.refresh_log", refresh_log)):
        assert scalar(su, f"SELECT count(*) FROM {table} WHERE id = %s", (row_id,)) == 1, table
    # A second prune finds nothing more: the bound is where it stops.
    assert scalar(adm, "SELECT optidb.prune()") == 0
    su.close()
    adm.close()


def view_ages(text):
    return {m[0]: float(m[1]) for m in re.findall(
        r'^optidb_metric_view_age_seconds\{view="([a-z_]+)"\} (\S+)$', text, re.M)}


def rows_read(c, table):
    """(sequential scans, rows read by them, rows fetched by index scans) of `table` in the
    current transaction."""
    return c.execute("SELECT seq_scan, seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables "
                     "WHERE relid = %s::regclass", (table,)).fetchone()


def test_metrics_reads_one_refresh_log_row_per_view_however_long_the_log(shop):
    db, roles = shop
    su, adm = connect(db), connect(db, user=roles["adm"])
    adm.execute("SELECT * FROM optidb.refresh()")
    adm.execute("SELECT * FROM optidb.refresh('mv_table_metrics')")
    # A long history: 200,000 older refreshes (a third failed) and 50,000 resolved alerts,
    # then a failed refresh newer than the latest successful one.
    su.execute("INSERT INTO optidb.refresh_log (view_name, started_at, finished_at, duration_ms, "
               "rows, concurrent, error) "
               "SELECT v, now() - interval '1 hour' - n * interval '1 s', "
               "now() - interval '1 hour' - n * interval '1 s', 1, "
               "CASE WHEN n %% 3 <> 0 THEN 1 END, true, CASE WHEN n %% 3 = 0 THEN 'failed' END "
               "FROM unnest(%s::text[]) v, generate_series(1, 50000) n", (VIEWS,))
    su.execute("INSERT INTO optidb.refresh_log (view_name, started_at, finished_at, duration_ms, "
               "concurrent, error) VALUES ('mv_query_metrics', now(), now(), 1, true, 'failed')")
    su.execute("INSERT INTO optidb.alert (rule_name, metric, severity, fired_at, resolved_at) "
               "SELECT 'old', 'lock_waits', 'info', now() - interval '2 days', "
               "now() - interval '1 day' FROM generate_series(1, 50000)")
    su.execute("INSERT INTO optidb.alert (rule_name, metric, severity, fired_at) "
               "VALUES ('open_one', 'lock_waits', 'warning', now())")
    su.execute("ANALYZE optidb.refresh_log, optidb.alert")

    adm.execute("BEGIN")
    text = scalar(adm, "SELECT optidb.metrics()")
    log_reads = rows_read(adm, "optidb.refresh_log")
    alert_reads = rows_read(adm, "optidb.alert")
    adm.execute("ROLLBACK")
    assert log_reads[0] == 0 and log_reads[2] <= len(VIEWS), log_reads
    assert alert_reads[0] == 0 and alert_reads[2] <= 1, alert_reads

    # Same meaning as before: seconds since each view's latest successful refresh.
    expected = dict(su.execute(
        "SELECT view_name, extract(epoch FROM now() - max(finished_at))::float8 "
        "FROM optidb.refresh_log WHERE error IS NULL GROUP BY view_name").fetchall())
    ages = view_ages(text)
    assert set(ages) == set(expected) == set(VIEWS)
    for view, age in ages.items():
        assert abs(age - expected[view]) < 5, (view, age, expected[view])
    assert ages["mv_table_metrics"] < ages["mv_query_metrics"]
    assert 'optidb_alerts_open{severity="warning"} 1' in text
    # The report's freshness panel reads the same rows.
    assert "mv_table_metrics" in scalar(adm, "SELECT optidb.report()")
    su.close()
    adm.close()


@pytest.mark.hypopg
def test_a_failing_families_stage_is_rolled_back_alone_and_recorded(shop):
    db, roles = shop
    with app_session(db, roles) as app:
        for i in range(5):
            workload(app, i)
    # Nobody but a superuser may inject faults: not the admin, not a role without grants.
    for who in ("adm", "plain"):
        with connect(db, user=roles[who]) as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SET optidb.fault_injection = 'families'")
    su = connect(db)
    warnings = []
    su.add_notice_handler(lambda d: warnings.append(d.message_primary))
    # Marks of the stages: plans past any retention (prune keeps the latest KEEP of them) and
    # a stray anomaly tag (anomalies recomputes them all).
    su.execute("SELECT * FROM optidb.snapshot()")
    qid = scalar(su, "SELECT id FROM optidb.query WHERE norm_sql LIKE '%%customer_id = $1' "
                     "AND norm_sql NOT LIKE '%%/%%'")
    su.execute("INSERT INTO optidb.plan (query_id, captured_at, explain_error, plan_kind, basis) "
               "SELECT %s, now() - interval '400 days' - n * interval '1 day', 'old', 'generic', "
               "false FROM generate_series(1, 5) n", (qid,))
    su.execute("INSERT INTO optidb.anomaly (query_id, kind, detected_at, evidence) "
               "VALUES (%s, 'lock_contention', now() - interval '1 day', '{}')", (qid,))
    with app_session(db, roles) as app:
        workload(app, 99)

    su.execute("SET optidb.fault_injection = 'families'")
    summary = su.execute("SELECT * FROM optidb.scan()").fetchone()
    su.execute("RESET optidb.fault_injection")
    queries_seen, _, plans_captured, _, recommendations, simulations, _ = summary
    assert queries_seen > 0 and plans_captured > 0 and recommendations > 0
    assert any("families stage failed" in w for w in warnings), warnings

    captured_at, stage_errors = su.execute(
        "SELECT started_at, stage_errors FROM optidb.scan_log WHERE kind = 'scan'").fetchone()
    assert stage_errors == [{"stage": "families", "sqlstate": "22012",
                             "message": "division by zero"}], stage_errors
    # The ingest is committed: this scan's deltas are there.
    assert scalar(su, "SELECT count(*) FROM optidb.metric WHERE captured_at = %s AND "
                      "query_id = %s", (captured_at, qid)) == 1
    # The stages before and after it are kept: prune, plans, advice and its simulations,
    # anomalies.
    assert scalar(su, "SELECT count(*) FROM optidb.plan WHERE explain_error = 'old'") == KEEP
    assert scalar(su, "SELECT count(*) FROM optidb.plan WHERE captured_at = %s",
                  (captured_at,)) > 0
    assert scalar(su, "SELECT count(*) FROM optidb.recommendation WHERE status = 'open'") == \
        recommendations
    assert scalar(su, "SELECT count(*) FROM optidb.simulation") >= simulations > 0
    assert scalar(su, "SELECT count(*) FROM optidb.anomaly WHERE detected_at < %s",
                  (captured_at,)) == 0
    # The failed stage's own writes were rolled back.
    assert scalar(su, "SELECT count(*) FROM optidb.family") == 0
    assert scalar(su, "SELECT count(*) FROM optidb.query WHERE family_id IS NOT NULL") == 0

    # Without the fault the next scan does the stage, and records no error.
    su.execute("SELECT * FROM optidb.scan()")
    assert scalar(su, "SELECT stage_errors FROM optidb.scan_log ORDER BY id DESC LIMIT 1") == []
    assert scalar(su, "SELECT count(*) FROM optidb.query WHERE family_id IS NOT NULL") > 0
    su.close()


# The worker's SIGTERM: a cluster of its own (restarts must not disturb other tests).
SIGTERM_PORT = 55472
SIGTERM_DB = "optidb_sigterm"
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")


def wait_for(what, check, timeout=30.0):
    """conftest.wait_for, polling often: the test times how soon the worker ends."""
    return wait_until(what, check, timeout, every=0.2)



def worker(port):
    """(pid, query, wait_event_type) of the optidb worker, or None while it is not running."""
    with connect(SIGTERM_DB, port=port) as c:
        return c.execute("SELECT pid, query, wait_event_type FROM pg_stat_activity "
                         "WHERE backend_type = 'optidb worker'").fetchone()


def stuck_in_snapshot(port):
    """The worker's pid once its snapshot() waits for the job lock."""
    w = worker(port)
    return w and w[1] == "SELECT optidb.snapshot()" and w[2] == "Lock" and w[0]


@contextlib.contextmanager
def snapshot_lock_held_forever(port):
    """The snapshot job's lock, held by a prepared transaction: no session, no backend, no
    shutdown releases it; only ROLLBACK PREPARED does."""
    with connect(SIGTERM_DB, port=port) as c:
        c.execute("BEGIN")
        c.execute("SELECT FROM optidb.job_lock WHERE name = 'snapshot' FOR UPDATE")
        c.execute("PREPARE TRANSACTION 'optidb_hold_snapshot'")
    try:
        yield
    finally:
        with connect(SIGTERM_DB, port=port) as c:
            c.execute("ROLLBACK PREPARED 'optidb_hold_snapshot'")


def test_the_worker_ends_within_seconds_on_sigterm_even_in_the_middle_of_a_job():
    conf = (f"optidb.database = '{SIGTERM_DB}'\n"
            "optidb.snapshot_interval = '1s'\n"
            # The job would wait this long for its lock: far beyond what the test allows.
            "optidb.lock_timeout = '10min'\n"
            "max_prepared_transactions = 2\n"
            "log_min_messages = log\n")
    name = "bounded-sigterm"
    with own_cluster(name, SIGTERM_PORT, conf=conf) as port:
        data = own_data(name)
        with connect("postgres", port=port) as c:
            c.execute(f"CREATE DATABASE {SIGTERM_DB}")
        with connect(SIGTERM_DB, port=port) as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
            c.execute("CREATE EXTENSION optidb")
        wait_for("the worker", lambda: worker(port), timeout=40)

        with snapshot_lock_held_forever(port):
            pid = wait_for("the worker's snapshot waiting for its lock",
                           lambda: stuck_in_snapshot(port))
            started = time.time()
            with connect(SIGTERM_DB, port=port) as c:
                assert scalar(c, "SELECT pg_terminate_backend(%s)", (pid,))
            wait_for("the worker to end", lambda: (w := worker(port)) is None or w[0] != pid,
                     timeout=10)
            assert time.time() - started < 3, "SIGTERM must end a running job at once"

            # Restarted 10 s later, it waits for the lock again; a fast shutdown ends it too.
            wait_for("the restarted worker waiting for its lock",
                     lambda: (p := stuck_in_snapshot(port)) and p != pid, timeout=30)
            started = time.time()
            stop = subprocess.run(["runuser", "-u", "postgres", "--", f"{PGBIN}/pg_ctl", "-D",
                                   data, "-m", "fast", "-t", "30", "-w", "stop"],
                                  capture_output=True, text=True)
            assert stop.returncode == 0, stop.stdout + stop.stderr
            assert time.time() - started < 5, "pg_ctl stop -m fast must not wait for the job"
            subprocess.run(["runuser", "-u", "postgres", "--", f"{PGBIN}/pg_ctl", "-D", data,
                            "-l", f"{data}/server.log", "-w", "start"],
                           check=True, capture_output=True)
            wait_for("the worker after the restart", lambda: worker(port))

        # Idle (waiting on its latch between jobs), it stops quietly at once. Jobs an hour
        # apart, so the signal finds it idle.
        with connect(SIGTERM_DB, port=port) as c:
            for interval in ("snapshot_interval", "alert_interval", "refresh_interval"):
                c.execute(f"ALTER SYSTEM SET optidb.{interval} = '1h'")
            c.execute("SELECT pg_reload_conf()")
        time.sleep(2)
        pid = wait_for("an idle worker", lambda: (w := worker(port)) and w[1] == "" and w[0])
        started = time.time()
        with connect(SIGTERM_DB, port=port) as c:
            assert scalar(c, "SELECT pg_terminate_backend(%s)", (pid,))
        wait_for("the idle worker to end", lambda: (w := worker(port)) is None or w[0] != pid,
                 timeout=10)
        assert time.time() - started < 3
        log = open(os.path.join(data, "server.log")).read()
        assert log.count('terminating background worker "optidb worker" due to administrator '
                         'command') >= 2, log[-3000:]
        assert "optidb worker stopping" in log
        assert "PANIC" not in log
