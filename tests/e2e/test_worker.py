"""The background worker keeps history and the metric views current with no manual call, and
survives a configuration reload, its own SIGTERM, a backend crash and failing jobs; pg_cron can
drive the same jobs. Runs on a cluster of its own (restarts must not disturb other tests)."""

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from conftest import PRELOAD, own_data, own_port, scalar, wait_for

pytestmark = pytest.mark.pg_cron

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Another port (and data directory) when several worktrees run this beside each other.
PORT = own_port(int(os.environ.get("OPTIDB_WORKER_TEST_PORT", "55436")))
DB = "optidb_worker"
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
# How a server program runs as user postgres: OPTIDB_PG_RUN in a Debian chroot
# (tests/scripts/debian-chroot.sh; PGBIN is then a path inside it), as env.sh's as_postgres.
AS_POSTGRES = os.environ.get("OPTIDB_PG_RUN", "runuser -u postgres --").split()



@pytest.fixture(scope="module")
def cluster():
    data = own_data(f"worker-test-{PORT}")
    subprocess.run(["rm", "-rf", os.path.dirname(data)], check=True)
    env = dict(os.environ, OPTIDB_PGDATA=data, OPTIDB_PGPORT=str(PORT))
    script = os.path.join(ROOT, "tests/scripts/cluster.sh")
    subprocess.run(["bash", script, "start"], env=env, check=True)
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"shared_preload_libraries = '{PRELOAD},pg_cron'\n"
                   f"optidb.database = '{DB}'\n"
                   "optidb.snapshot_interval = '2s'\n"
                   "optidb.refresh_interval = '3s'\n"
                   f"cron.database_name = '{DB}'\n"
                   "cron.use_background_workers = on\n"
                   "log_min_messages = log\n")
    with psycopg.connect(host="/tmp", port=PORT, user="postgres", dbname="postgres",
                         autocommit=True) as c:
        c.execute(f"CREATE DATABASE {DB}")
    subprocess.run(["bash", script, "restart"], env=env, check=True)
    try:
        yield data, script, env
    finally:
        subprocess.run(["bash", script, "stop"], env=env, check=False)


def conn():
    return psycopg.connect(host="/tmp", port=PORT, user="postgres", dbname=DB, autocommit=True,
                           prepare_threshold=None)


def worker_pid(c):
    """The worker's pid, or None while it is not running."""
    row = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'optidb worker'").fetchone()
    return row and row[0]


def snapshots(c):
    return scalar(c, "SELECT count(*) FROM optidb.scan_log WHERE kind = 'snapshot'")


def refreshes(c):
    return scalar(c, "SELECT count(*) FROM optidb.refresh_log WHERE error IS NULL")


def probe_count(c, marker):
    return scalar(c, "SELECT coalesce(sum(execution_count), 0) FROM optidb.query_metrics "
                     "WHERE query LIKE %s", (f"%{marker}%",))


def test_worker_keeps_views_current_and_survives_reload_sigterm_crash_and_failures(cluster):
    data, script, env = cluster
    with conn() as c:
        c.execute("CREATE EXTENSION pg_stat_statements")
        c.execute("CREATE EXTENSION optidb")
        c.execute("CREATE EXTENSION pg_cron")
        # pg_cron drives the same SQL functions; the documented schedule is accepted as is.
        c.execute("SELECT cron.schedule('optidb-refresh', '*/5 * * * *', 'SELECT optidb.refresh()')")
        c.execute("SELECT cron.schedule('optidb-refresh-now', '* * * * *', "
                  "'SELECT count(*) FROM optidb.refresh(''mv_table_metrics'')')")
        assert scalar(c, "SELECT schedule FROM cron.job WHERE jobname = 'optidb-refresh'") == "*/5 * * * *"

        pid = wait_for("the worker in pg_stat_activity", lambda: worker_pid(c))
        c.execute("CREATE TABLE w AS SELECT g AS id FROM generate_series(1, 1000) g")
        for i in range(30):
            c.execute(f"SELECT count(*) AS worker_probe FROM w WHERE id > {i}")
        # No manual call: within a couple of intervals the views show the workload.
        wait_for("the workload in query_metrics", lambda: probe_count(c, "worker_probe") == 30)

        # Reload with a new interval: same process, still working.
        c.execute("ALTER SYSTEM SET optidb.snapshot_interval = '1s'")
        c.execute("SELECT pg_reload_conf()")
        before = snapshots(c)
        wait_for("snapshots after reload", lambda: snapshots(c) >= before + 3)
        assert worker_pid(c) == pid, "a reload must not restart the worker"

        # A failing job is logged and the worker carries on with the others.
        c.execute("DROP EXTENSION pg_stat_statements")
        failed_from = refreshes(c)
        wait_for("refreshes while snapshots fail", lambda: refreshes(c) >= failed_from + 8)
        assert worker_pid(c) == pid, "a failing job must not kill the worker"
        c.execute("CREATE EXTENSION pg_stat_statements")

        # SIGTERM: the worker exits and the postmaster starts it again.
        c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with conn() as c:
        new_pid = wait_for("a restarted worker", lambda: (p := worker_pid(c)) and p != pid and p)
        before = snapshots(c)
        wait_for("snapshots after SIGTERM", lambda: snapshots(c) > before)
    # A backend crash: the postmaster resets every process, the worker included. The victim's
    # connection stays open until it is killed (a closed one's backend may already be gone).
    victim_conn = conn()
    os.kill(scalar(victim_conn, "SELECT pg_backend_pid()"), signal.SIGKILL)
    time.sleep(1)
    try:
        victim_conn.close()
    except psycopg.Error:
        pass

    def after_crash():
        with conn() as c2:
            p = worker_pid(c2)
            return p if p and p != new_pid else None
    wait_for("the worker after crash recovery", after_crash, timeout=60)
    with conn() as c:
        # A statement of another shape (fingerprints ignore aliases, so a new alias is not enough).
        for i in range(10):
            c.execute(f"SELECT max(id) FROM w WHERE id < {i + 100}")
        wait_for("history after the crash", lambda: probe_count(c, "max(id) FROM w") == 10)
        # pg_cron ran its every-minute job by now or soon (it fires at the minute boundary).
        wait_for("a pg_cron run of optidb.refresh()", lambda: scalar(
            c, "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid) "
               "WHERE j.jobname = 'optidb-refresh-now' AND d.status = 'succeeded'"), timeout=75)
    log = open(os.path.join(data, "server.log")).read()
    assert "optidb worker started in database" in log
    assert "SELECT optidb.snapshot() failed, will retry next interval" in log


def test_worker_records_health_and_fires_alerts_without_any_call(cluster):
    with conn() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("CREATE EXTENSION IF NOT EXISTS optidb")
        c.execute("ALTER SYSTEM SET optidb.alert_interval = '1s'")
        c.execute("SELECT pg_reload_conf()")
        c.execute("LISTEN optidb_alerts")
        c.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, severity) "
                  "VALUES ('worker_probe', 'database_bytes', '>', 0, 'info')")
        alert = wait_for("an alert fired by the worker", lambda: scalar(
            c, "SELECT max(id) FROM optidb.alert WHERE rule_name = 'worker_probe'"))
        notes = [json.loads(n.payload) for n in c.notifies(timeout=5, stop_after=1)]
        assert notes and notes[0]["alert_id"] == alert and notes[0]["event"] == "fired"
        wait_for("health history recorded by the worker", lambda: scalar(
            c, "SELECT count(DISTINCT captured_at) FROM optidb.health_history") >= 2)
        c.execute("DELETE FROM optidb.alert_rule WHERE name = 'worker_probe'")
    log = open(os.path.join(cluster[0], "server.log")).read()
    assert f"optidb alert {alert} fired: worker_probe database_bytes" in log


def test_worker_does_nothing_on_a_standby(cluster):
    """A streaming standby of the worker's cluster, with the same settings: it is in recovery,
    so no optidb worker runs there (it would start only after promotion)."""
    data, _, _ = cluster
    standby = os.path.join(os.path.dirname(data), "standby")
    log = standby + ".log"  # outside the data directory, which pg_basebackup copies
    pgbin = PGBIN
    as_postgres = AS_POSTGRES
    subprocess.run(["rm", "-rf", standby], check=True)
    subprocess.run(as_postgres + [f"{pgbin}/pg_basebackup", "-D", standby, "-R", "-h", "/tmp",
                                  "-p", str(PORT), "-U", "postgres"], check=True)
    with open(os.path.join(standby, "postgresql.auto.conf"), "a") as conf:
        conf.write(f"port = {PORT + 1}\n")
    subprocess.run(as_postgres + [f"{pgbin}/pg_ctl", "-D", standby, "-l",
                                  log, "-w", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        with psycopg.connect(host="/tmp", port=PORT + 1, user="postgres", dbname=DB,
                             autocommit=True) as c:
            assert scalar(c, "SELECT pg_is_in_recovery()")
            time.sleep(3)  # longer than a snapshot interval
            assert worker_pid(c) is None, "the optidb worker must not run on a standby"
        assert "optidb worker started" not in open(log).read()
    finally:
        subprocess.run(as_postgres + [f"{pgbin}/pg_ctl", "-D", standby, "-m", "fast", "-w",
                                      "stop"], check=False, stdout=subprocess.DEVNULL)
