"""Health monitoring and alert rules (issue 13), in a database of its own (the background worker
runs in optidb.database only, so every evaluation here is the test's own check_alerts()).

Roles: an admin (optidb_admin, no superuser) evaluates and edits rules; the application role
works in schema `app` through SET search_path; a reader and a hostile plain role must see no
alert (details carry other sessions' query texts) and change no rule."""

import json
import os
import re
import threading
import time
import uuid

import psycopg
import pytest

from conftest import connect, new_database, scalar


@pytest.fixture
def world():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("adm", "app", "reader", "mallory")}
    try:
        with new_database() as db:
            with connect(db) as su:
                for name in roles.values():
                    su.execute(f'CREATE ROLE "{name}" LOGIN')
                su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')
                su.execute(f'GRANT optidb_reader TO "{roles["reader"]}", "{roles["mallory"]}"')
                su.execute(f'CREATE SCHEMA app AUTHORIZATION "{roles["app"]}"')
            with connect(db, user=roles["app"]) as c:
                c.execute("SET search_path = app, public")
                c.execute("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 100) g")
            yield db, roles
    finally:
        with connect("postgres") as su:
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')


def app_session(db, roles):
    c = connect(db, user=roles["app"])
    c.execute("SET search_path = app, public")
    return c


def notifications(listener, timeout=2.0):
    """The optidb_alerts payloads that arrived on `listener` within `timeout` seconds."""
    got = []
    for n in listener.notifies(timeout=timeout, stop_after=20):
        got.append(json.loads(n.payload))
    return got


def test_a_lock_wait_fires_once_reaches_a_listener_and_resolves_after_the_blocker_commits(world):
    db, roles = world
    adm = connect(db, user=roles["adm"])
    warnings = []
    adm.add_notice_handler(lambda d: warnings.append(d.message_primary))
    # The admin edits a default rule: resolve as soon as the wait is over.
    adm.execute("UPDATE optidb.alert_rule SET clear_for = '1 s' WHERE name = 'lock_wait'")
    listener = connect(db, user=roles["adm"])
    listener.execute("LISTEN optidb_alerts")
    # Any role may LISTEN on any channel: payloads must not carry other sessions' statements.
    eavesdropper = connect(db, user=roles["mallory"])
    eavesdropper.execute("LISTEN optidb_alerts")

    blocker = app_session(db, roles)
    blocker.autocommit = False
    blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # found through search_path
    blocked = app_session(db, roles)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (
        blocked.execute("SELECT count(*) AS waiting_for_orders FROM orders"), done.set()))
    thread.start()
    try:
        fired = []
        deadline = time.time() + 20
        while time.time() < deadline and len(fired) == 0:
            fired += [r for r in adm.execute(
                "SELECT event, alert_id, rule, value, details FROM optidb.check_alerts()")
                if r[2] == "lock_wait"]
            time.sleep(0.5)
        assert [r[0] for r in fired] == ["fired"], fired
        _, alert_id, _, value, details = fired[0]
        assert value > 5
        wait = details["waits"][0]
        assert wait["blocked_pid"] == blocked.info.backend_pid
        assert wait["blocking_pids"] == [blocker.info.backend_pid]
        assert "waiting_for_orders" in wait["blocked_query"]
        assert any("LOCK TABLE orders" in q for q in wait["blocking_queries"])
        # Still waiting: evaluated again, the incident does not fire twice.
        for _ in range(3):
            again = adm.execute("SELECT event FROM optidb.check_alerts() "
                                "WHERE rule = 'lock_wait'").fetchall()
            assert again == [], again
            time.sleep(0.5)
        arrived = [n for n in notifications(listener) if n["rule"] == "lock_wait"]
        assert [(n["event"], n["alert_id"], n["severity"]) for n in arrived] == [
            ("fired", alert_id, "warning")], arrived
        assert "details" not in arrived[0]
        overheard = [n.payload for n in eavesdropper.notifies(timeout=1, stop_after=5)]
        assert overheard and not any("orders" in p or "LOCK" in p for p in overheard), overheard
        assert scalar(adm, "SELECT details->'waits'->0->>'blocked_pid' FROM optidb.alert "
                           "WHERE id = %s", (alert_id,)) == str(blocked.info.backend_pid)
        assert any(re.search(rf"optidb alert {alert_id} fired: lock_wait lock_wait_max_s", w)
                   for w in warnings), warnings
    finally:
        blocker.commit()
        thread.join(10)
    assert done.is_set()
    resolved = []
    deadline = time.time() + 15
    while time.time() < deadline and not resolved:
        time.sleep(0.5)
        resolved = adm.execute("SELECT event, alert_id FROM optidb.check_alerts() "
                               "WHERE rule = 'lock_wait'").fetchall()
    assert resolved == [("resolved", alert_id)]
    assert [(n["event"], n["alert_id"]) for n in notifications(listener)
            if n["rule"] == "lock_wait"] == [("resolved", alert_id)]
    rows = adm.execute("SELECT id, resolved_at > fired_at, peak >= value, value > 5 "
                       "FROM optidb.alert WHERE rule_name = 'lock_wait'").fetchall()
    assert rows == [(alert_id, True, True, True)]
    # The WARNING also went to the server log (log_min_messages = warning).
    log = os.path.join(os.environ.get("OPTIDB_PGDATA", "/tmp/optidb-e2e/data"), "server.log")
    if os.path.exists(log):
        assert f"optidb alert {alert_id} fired: lock_wait" in open(log, errors="replace").read()
    for c in (adm, listener, eavesdropper, blocker, blocked):
        c.close()


def test_a_condition_flapping_around_its_threshold_for_a_minute_is_one_alert(world):
    db, roles = world
    with connect(db, user=roles["adm"]) as adm:
        adm.execute("UPDATE optidb.alert_rule SET enabled = false")
        # A rule of the admin's own, with the default clear_for (one minute).
        adm.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, severity) "
                    "VALUES ('idle_tx', 'connections_idle_in_transaction', '>=', 1, 'critical')")
        listener = connect(db, user=roles["adm"])
        listener.execute("LISTEN optidb_alerts")
        flapper = app_session(db, roles)
        events = []
        for i in range(13):  # 13 evaluations 5 s apart: the condition toggles each time
            if i % 2 == 0:
                flapper.execute("BEGIN")
                flapper.execute("SELECT count(*) FROM orders")  # idle in transaction after
            else:
                flapper.execute("COMMIT")
            time.sleep(0.2)
            events += adm.execute("SELECT event, alert_id FROM optidb.check_alerts()").fetchall()
            time.sleep(4.8)
        flapper.execute("COMMIT")
        assert [e[0] for e in events] == ["fired"], events
        assert [n["event"] for n in notifications(listener)] == ["fired"]
        assert scalar(adm, "SELECT count(*) FROM optidb.alert") == 1
        assert scalar(adm, "SELECT resolved_at IS NULL FROM optidb.alert") is True
        listener.close()
        flapper.close()


def test_health_lists_every_figure_for_admins_only(world):
    db, roles = world
    idle = app_session(db, roles)
    idle.execute("BEGIN")
    idle.execute("SELECT count(*) FROM orders")
    with connect(db, user=roles["adm"]) as adm:
        figures = {r[0]: r[1:] for r in adm.execute(
            "SELECT item, value, unit, status, details FROM optidb.health()")}
        expected = {r[0] for r in adm.execute(
            "SELECT unnest(string_to_array(description, ',')) FROM optidb.surface() "
            "WHERE kind = 'enum' AND name = 'optidb.alert_rule.metric'")}
        assert set(figures) == expected - {"high_confidence_recommendation",
                                           "statement_p95_ratio"}
        assert figures["connections_idle_in_transaction"][0] >= 1
        assert figures["longest_transaction_s"][3]["pid"] == idle.info.backend_pid
        assert figures["longest_transaction_s"][3]["query"] == "SELECT count(*) FROM orders"
        assert 0 < figures["cache_hit_pct"][0] <= 100 and figures["cache_hit_pct"][1] == "%"
        assert figures["database_bytes"][0] > 1_000_000
        assert figures["replication_lag_max_s"][0] is None  # no replicas
        assert figures["sources_unreachable"][0] == 0  # no sources
        assert figures["source_pull_age_max_s"][0] is None
        assert {f[2] for f in figures.values()} <= {"ok", "info", "warning", "critical"}
        # A rule that holds now shows in the status at once (hold is for alerts only).
        adm.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, hold, "
                    "severity) VALUES ('any_idle_tx', 'connections_idle_in_transaction', '>', 0, "
                    "'1 h', 'critical')")
        assert scalar(adm, "SELECT status FROM optidb.health() "
                           "WHERE item = 'connections_idle_in_transaction'") == "critical"
        assert scalar(adm, "SELECT optidb.record_health()") == len(figures)
        assert scalar(adm, "SELECT count(DISTINCT item) FROM optidb.health_history") == len(figures)
        # Secrets in a session's text are redacted in details.
        secret = app_session(db, roles)
        secret.execute("BEGIN")
        secret.execute("SELECT 'password=hunter2' AS dsn")
    idle.execute("COMMIT")
    with connect(db, user=roles["adm"]) as adm:
        details = scalar(adm, "SELECT details::text FROM optidb.health() "
                              "WHERE item = 'longest_transaction_s'")
        assert "hunter2" not in details and "password" in details
    secret.close()
    idle.close()


@pytest.mark.parametrize("who", ["reader", "mallory", "app"])
def test_non_admins_neither_see_alerts_nor_change_rules(world, who):
    db, roles = world
    with connect(db, user=roles["adm"]) as adm:
        adm.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, severity) "
                    "VALUES ('always', 'database_bytes', '>', 0, 'info')")
        assert [r[0] for r in adm.execute("SELECT rule FROM optidb.check_alerts()")] == ["always"]
    with connect(db, user=roles[who]) as c:
        for sql in ("SELECT * FROM optidb.health()", "SELECT * FROM optidb.check_alerts()",
                    "SELECT optidb.record_health()", "SELECT optidb.report()",
                    "SELECT optidb.metrics()",
                    "UPDATE optidb.alert_rule SET enabled = false",
                    "INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, "
                    "severity) VALUES ('x', 'lock_waits', '>', 0, 'info')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)
        if who != "app":  # optidb_reader members: the tables exist for them, no row shows
            for table in ("alert", "alert_rule", "health_history", "alert_state"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(f"SELECT count(*) FROM optidb.{table}")


def test_rules_reject_what_they_cannot_evaluate(world):
    db, roles = world
    with connect(db, user=roles["adm"]) as adm:
        for values in ("('x', 'no_such_metric', '>', 1, 'info')",
                       "('x', 'lock_waits', '=>', 1, 'info')",
                       "('x', 'lock_waits', '>', 'NaN', 'info')",
                       "('x', 'lock_waits', '>', 1, 'fatal')"):
            with pytest.raises(psycopg.errors.CheckViolation):
                adm.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, "
                            f"severity) VALUES {values}")
        with pytest.raises(psycopg.errors.UniqueViolation):
            adm.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, "
                        "severity) VALUES ('lock_wait', 'lock_waits', '>', 1, 'info')")
        assert scalar(adm, "SELECT count(*) FROM optidb.alert_rule WHERE builtin") == 12


def test_new_high_confidence_advice_is_an_alert_source(world):
    db, roles = world
    with connect(db) as su, app_session(db, roles) as app:
        app.execute("CREATE TABLE big AS SELECT g AS id, g % 1000 AS v "
                    "FROM generate_series(1, 200000) g")
        app.execute("ANALYZE big")
        for i in range(30):
            app.execute("SELECT count(*) FROM big WHERE v = %s", (i,))
        su.execute("SELECT * FROM optidb.scan()")
        rec = scalar(su, "SELECT id FROM optidb.recommendation WHERE status = 'open' "
                         "AND ddl LIKE '%%big%%(v)%%' AND confidence >= 0.8")
        assert rec is not None, su.execute(
            "SELECT ddl, confidence FROM optidb.recommendation").fetchall()
    with connect(db, user=roles["adm"]) as adm:
        fired = adm.execute("SELECT subject, details->>'ddl' FROM optidb.check_alerts() "
                            "WHERE rule = 'new_advice' AND event = 'fired'").fetchall()
        assert (f"recommendation {rec}",) in [(f[0],) for f in fired], fired
        assert adm.execute("SELECT * FROM optidb.check_alerts() "
                           "WHERE rule = 'new_advice'").fetchall() == []


def test_a_statement_slower_than_its_own_history_is_an_alert_source(world):
    """A week of executions around 2 ms (recorded by optidb's hooks, then dated back), the last
    hour around 20 ms: its p95 ratio passes the default rule's 2x."""
    db, roles = world
    with connect(db) as su, app_session(db, roles) as app:
        for _ in range(120):
            app.execute("SELECT pg_sleep(%s) AS regress_me", (0.002,))
        su.execute("SELECT * FROM optidb.snapshot()")
        moved = su.execute("UPDATE optidb.latency SET captured_at = captured_at - interval '2 days' "
                           "WHERE query_id IN (SELECT id FROM optidb.query "
                           "WHERE norm_sql LIKE '%regress_me%')").rowcount
        assert moved == 1
        for _ in range(25):
            app.execute("SELECT pg_sleep(%s) AS regress_me", (0.02,))
        su.execute("SELECT * FROM optidb.snapshot()")
        qid = scalar(su, "SELECT id FROM optidb.query WHERE norm_sql LIKE '%regress_me%'")
    with connect(db, user=roles["adm"]) as adm:
        fired = adm.execute("SELECT subject, value, details FROM optidb.check_alerts() "
                            "WHERE rule = 'statement_regression'").fetchall()
        assert [f[0] for f in fired] == [f"statement {qid}"], fired
        assert fired[0][1] > 5
        assert fired[0][2]["calls_last_hour"] == 25


def test_the_documented_webhook_forwarder_posts_each_alert(world):
    """tests/demo/alerts_to_webhook.py, as docs/install.md shows it, against a local HTTP
    server."""
    import http.server
    import subprocess
    import sys

    from conftest import PORT, ROOT, SOCKET

    db, roles = world
    posted = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    forwarder = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests/demo/alerts_to_webhook.py"),
         f"host={SOCKET} port={PORT} dbname={db} user={roles['adm']}",
         f"http://127.0.0.1:{server.server_port}/hook", "--count", "1"])
    try:
        time.sleep(1.5)  # listening
        with connect(db, user=roles["adm"]) as adm:
            adm.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, "
                        "severity) VALUES ('size', 'database_bytes', '>', 0, 'info')")
            alert_id = scalar(adm, "SELECT alert_id FROM optidb.check_alerts()")
        assert forwarder.wait(15) == 0
    finally:
        forwarder.kill()
        server.shutdown()
    assert len(posted) == 1
    assert posted[0]["alert"]["alert_id"] == alert_id
    assert posted[0]["text"].startswith(f"[info] optidb alert {alert_id} fired: size")


def test_the_documented_metrics_catalog_and_default_rules_match_the_code(world):
    db, roles = world
    with connect(db, user=roles["adm"]) as adm:
        metrics = set(scalar(adm, "SELECT description FROM optidb.surface() "
                                  "WHERE name = 'optidb.alert_rule.metric'").split(","))
        rules = {r[0]: r[1:] for r in adm.execute(
            "SELECT name, metric || ' ' || comparison || ' ' || threshold::text FROM "
            "optidb.alert_rule WHERE builtin")}
    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
    health = open(os.path.join(docs, "reference", "health.md")).read()
    catalog = health.split("### Metrics catalog", 1)[1].split("##", 1)[0]
    assert set(re.findall(r"^\| `([a-z0-9_]+)` \|", catalog, re.M)) == metrics
    install = open(os.path.join(docs, "install.md")).read()
    defaults = install.split("| default rule |", 1)[1].split("\n\n", 1)[0]
    documented = dict(re.findall(r"^\| `([a-z_0-9]+)` \| `([^`]+)`", defaults, re.M))
    assert documented == {k: v[0] for k, v in rules.items()}


def test_prune_keeps_open_alerts_and_recent_health_only(world):
    db, roles = world
    with connect(db) as su:
        su.execute("INSERT INTO optidb.health_history (captured_at, item, value, status) VALUES "
                   "(now() - interval '40 days', 'lock_waits', 0, 'ok'), "
                   "(now() - interval '1 day', 'lock_waits', 1, 'ok')")
        su.execute("INSERT INTO optidb.alert (rule_name, metric, severity, fired_at, resolved_at) "
                   "VALUES ('old', 'lock_waits', 'info', now() - interval '41 days', "
                   "now() - interval '40 days'), "
                   "('old_open', 'lock_waits', 'info', now() - interval '41 days', NULL)")
    with connect(db, user=roles["adm"]) as adm:
        assert scalar(adm, "SELECT optidb.prune()") == 2
        assert scalar(adm, "SELECT count(*) FROM optidb.health_history") == 1
        assert [r[0] for r in adm.execute("SELECT rule_name FROM optidb.alert")] == ["old_open"]
