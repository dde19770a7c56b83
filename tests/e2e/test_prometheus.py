"""optidb seen through Prometheus (issue 26): Debian's postgres_exporter with optidb's query file
(docs/monitoring/postgres_exporter_queries.yaml) against two databases with optidb, scraped by a
real Prometheus on loopback; the figures are read back through Prometheus's HTTP API. The
exporter logs in as a role that is only a member of optidb_monitor: it gets health figures,
open alerts and the top statements' figures, and none of optidb's statement rows."""

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

import psycopg
import pytest

from conftest import PORT, ROOT, SOCKET, connect, new_database, scalar

QUERIES = os.path.join(ROOT, "docs", "monitoring", "postgres_exporter_queries.yaml")
EXPORTER = shutil.which("prometheus-postgres-exporter")
PROMETHEUS = shutil.which("prometheus")
# Loopback ports of this test's exporter and Prometheus.
EXPORTER_PORT, PROMETHEUS_PORT = PORT + 40, PORT + 41

pytestmark = pytest.mark.skipif(
    not (EXPORTER and PROMETHEUS),
    reason="prometheus and prometheus-postgres-exporter are not installed "
           "(tests/scripts/setup-machine.sh installs them)")


def http_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def instant(query):
    """The series Prometheus has for `query` now: {frozenset(labels): value}."""
    body = http_json(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?"
                     + urllib.parse.urlencode({"query": query}))
    assert body["status"] == "success", body
    return {frozenset(r["metric"].items()): float(r["value"][1])
            for r in body["data"]["result"]}


def wait_for(query, want, timeout=60):
    """Poll until `want(series)` holds; returns the series (or the last seen, failing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            series = instant(query)
        except (OSError, http.client.HTTPException):
            # Not answering yet, or not answering HTTP (a CI run on 18 once read its own
            # request line back as the status line): poll again until the deadline.
            series = {}
        if want(series) or time.monotonic() > deadline:
            return series
        time.sleep(1)


def started(args, env=None, log=None):
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def monitored():
    tag = uuid.uuid4().hex[:6]
    app, monitor = f"app_{tag}", f"exporter_{tag}"
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE {app} LOGIN")
        su.execute(f"CREATE ROLE {monitor} LOGIN IN ROLE optidb_monitor")
    work = tempfile.mkdtemp(prefix="optidb-prometheus-")
    procs = []
    try:
        with new_database() as db1, new_database() as db2:
            statement_ids = {}
            for db in (db1, db2):
                with connect(db) as su:
                    su.execute("CREATE SCHEMA shop")
                    su.execute("CREATE TABLE shop.item (id int PRIMARY KEY, price int)")
                    su.execute("INSERT INTO shop.item SELECT g, g % 100 FROM "
                               "generate_series(1, 5000) g")
                    su.execute(f"GRANT USAGE ON SCHEMA shop TO {app}")
                    su.execute(f"GRANT SELECT ON shop.item TO {app}")
                with connect(db, user=app) as c:
                    c.execute("SET search_path = shop")
                    for i in range(7):
                        c.execute("SELECT count(*) FROM item WHERE price = %s", (i,))
                    with pytest.raises(psycopg.errors.DivisionByZero):
                        c.execute("SELECT count(*) FROM item WHERE price = 1 / %s", (0,))
                with connect(db) as su:
                    su.execute("SELECT * FROM optidb.snapshot()")
                    su.execute("SELECT * FROM optidb.refresh()")
                    statement_ids[db] = scalar(
                        su, "SELECT id FROM optidb.query WHERE norm_sql LIKE "
                            "'%FROM item WHERE price = $1' AND norm_sql NOT LIKE '%/%'")
            with connect(db2) as su:
                su.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, "
                           "severity) VALUES ('prometheus_demo', 'database_bytes', '>', 0, "
                           "'warning')")
                su.execute("SELECT * FROM optidb.check_alerts()")

            dsn = ",".join(f"host={SOCKET} port={PORT} user={monitor} dbname={db} "
                           "sslmode=disable" for db in (db1, db2))
            env = dict(os.environ, DATA_SOURCE_NAME=dsn)
            exporter_log = open(os.path.join(work, "exporter.log"), "w")
            procs.append(started(
                [EXPORTER, f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}",
                 f"--extend.query-path={QUERIES}", "--disable-default-metrics",
                 "--disable-settings-metrics",
                 # Server-wide collectors would report the one server once per database.
                 "--no-collector.bgwriter", "--no-collector.database"],
                env=env, log=exporter_log))
            config = os.path.join(work, "prometheus.yml")
            with open(config, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        "scrape_configs:\n  - job_name: optidb\n    static_configs:\n"
                        f"      - targets: ['127.0.0.1:{EXPORTER_PORT}']\n")
            procs.append(started(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
                 f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
                log=open(os.path.join(work, "prometheus.log"), "w")))
            yield {"dbs": (db1, db2), "ids": statement_ids, "monitor": monitor, "work": work}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        with connect("postgres") as su:
            for role in (app, monitor):
                su.execute(f"DROP ROLE IF EXISTS {role}")
        shutil.rmtree(work, ignore_errors=True)


def test_both_databases_health_reaches_prometheus(monitored):
    db1, db2 = monitored["dbs"]
    series = wait_for('optidb_health_value{item="database_bytes"}',
                      lambda s: {dict(k)["database"] for k in s} >= {db1, db2})
    by_db = {dict(k)["database"]: v for k, v in series.items()}
    assert set(by_db) >= {db1, db2}, series
    assert all(by_db[db] > 1_000_000 for db in (db1, db2)), by_db
    # One series per figure: the label set is bounded by optidb.health()'s items.
    items = instant(f'optidb_health_value{{database="{db1}"}}')
    assert 10 <= len(items) <= 40, sorted(dict(k)["item"] for k in items)


def test_top_statements_and_open_alerts_reach_prometheus(monitored):
    db1, db2 = monitored["dbs"]
    qid = monitored["ids"][db1]
    calls = wait_for(f'optidb_statement_calls{{database="{db1}",query_id="{qid}"}}',
                     lambda s: len(s) == 1)
    assert list(calls.values()) == [7.0], calls
    labels = dict(next(iter(calls)))
    assert labels["query"] == "SELECT count(*) FROM item WHERE price = $1", labels
    failing = instant(f'optidb_statement_failure_ratio{{database="{db1}"}} > 0')
    assert len(failing) == 1 and " / " in dict(next(iter(failing)))["query"], failing
    p95 = instant(f'optidb_statement_p95_seconds{{database="{db1}",query_id="{qid}"}}')
    assert 0 < list(p95.values())[0] < 5, p95
    alerts = wait_for(f'optidb_alerts_open{{database="{db2}"}}', lambda s: len(s) == 3)
    by_severity = {dict(k)["severity"]: v for k, v in alerts.items()}
    assert by_severity == {"info": 0.0, "warning": 1.0, "critical": 0.0}, by_severity
    quiet = instant(f'optidb_alerts_open{{database="{db1}",severity="warning"}}')
    assert list(quiet.values()) == [0.0], quiet


def test_the_exporter_scrapes_without_errors(monitored):
    wait_for("up", lambda s: len(s) == 1 and list(s.values()) == [1.0])
    with urllib.request.urlopen(f"http://127.0.0.1:{EXPORTER_PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    errors = [line for line in text.splitlines()
              if line.startswith("pg_exporter_last_scrape_error")]
    assert errors and all(line.endswith(" 0") for line in errors), errors
    with open(os.path.join(monitored["work"], "exporter.log")) as f:
        log = f.read()
    assert "permission denied" not in log, log[-2000:]


def test_the_monitor_role_reads_figures_and_nothing_else(monitored):
    db1, _ = monitored["dbs"]
    with connect(db1, user=monitored["monitor"]) as c:
        assert scalar(c, "SELECT count(*) FROM optidb.monitor_statements") >= 2
        assert scalar(c, "SELECT optidb.metrics(5)").startswith("# HELP ")
        for sql in ("SELECT count(*) FROM optidb.query", "SELECT count(*) FROM optidb.sample",
                    "SELECT count(*) FROM optidb.query_metrics",
                    "SELECT * FROM optidb.bottlenecks()", "SELECT * FROM optidb.scan()",
                    "SELECT * FROM optidb.snapshot()", "SELECT * FROM optidb.record_health()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM optidb.alert_rule")
