"""A real primary and a streaming standby of it (pg_basebackup -R), optidb and
pg_stat_statements preloaded on both, one database with optidb, dblink and hypopg, and a
superuser's foreign server `standby1` reaching the standby that `admin` may use (what
add_source() requires): the setting of the replica-source tests."""

import os
import subprocess
from contextlib import contextmanager

from conftest import SOCKET, connect, own_cluster, scalar, wait_for

PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
PRIMARY_CONF = "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on"


def as_postgres(*args, check=True):
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check,
                          capture_output=True, text=True)


def pg_ctl(data, action):
    """Start or stop the standby whose data directory is `data`."""
    as_postgres(f"{PGBIN}/pg_ctl", "-D", data, "-m", "fast", "-w",
                "-l", f"{data}/server.log", action)


# Both orders of shared_preload_libraries: optidb's hooks chain with pg_stat_statements' either
# way, on the primary and on the standby (which copies the primary's postgresql.conf).
PRELOAD_ORDERS = ["pg_stat_statements,optidb", "optidb,pg_stat_statements"]


@contextmanager
def primary_and_standby(name, primary_port, standby_port, standby_data, db, admin, setup,
                        preload=PRELOAD_ORDERS[0]):
    """Yields the primary's port once the standby accepts reads; `setup(su)` runs on the
    primary's database first (roles, schema, data: the standby gets them by the base backup)."""
    with own_cluster(name, primary_port, preload, PRIMARY_CONF, shift=False) as port:
        with connect("postgres", port=port) as su:
            su.execute(f"CREATE DATABASE {db}")
        with connect(db, port=port) as su:
            for ext in ("pg_stat_statements", "optidb", "dblink", "hypopg"):
                su.execute(f"CREATE EXTENSION {ext}")
            su.execute(f"CREATE ROLE {admin} LOGIN IN ROLE optidb_admin")
            setup(su)
            su.execute(f"CREATE SERVER standby1 FOREIGN DATA WRAPPER dblink_fdw OPTIONS "
                       f"(host '{SOCKET}', port '{standby_port}', dbname '{db}', "
                       "connect_timeout '5')")
            # No password: trust on the local socket; a superuser's server the admin may use.
            su.execute("CREATE USER MAPPING FOR PUBLIC SERVER standby1 "
                       "OPTIONS (user 'postgres')")
            su.execute(f"GRANT USAGE ON FOREIGN SERVER standby1 TO {admin}")
        parent = os.path.dirname(standby_data)
        subprocess.run(["rm", "-rf", parent], check=True)
        os.makedirs(parent)
        subprocess.run(["chown", "postgres", parent], check=True)
        as_postgres(f"{PGBIN}/pg_basebackup", "-h", SOCKET, "-p", str(port), "-U", "postgres",
                    "-D", standby_data, "-R", "-X", "stream", "-c", "fast")
        with open(os.path.join(standby_data, "postgresql.conf"), "a") as f:
            f.write(f"port = {standby_port}\n")
        pg_ctl(standby_data, "start")
        try:
            wait_for("the standby to accept reads", lambda: scalar(
                connect(db, port=standby_port), "SELECT pg_is_in_recovery()"))
            yield port
        finally:
            pg_ctl(standby_data, "stop")
            subprocess.run(["rm", "-rf", parent], check=False)
