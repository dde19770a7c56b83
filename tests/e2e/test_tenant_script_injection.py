"""A hostile role tries to put a statement of her choice into the script of
optidb.tenant_advice() (found by a red-team pass). She names her schema with a newline, creates a
table of the same definition as the victims' and runs their statement text there, so her schema
would join their family. The documented recipe splits the script on E'\\n' and runs each line
with \\gexec as a superuser: the second half of her quoted schema name would run as its own
statement. A schema whose name holds a control character never joins a family, even when
its owner is trusted."""

import time
import uuid

import pytest

from conftest import connect, new_database
from test_tenant_advice import QUERY, quote, ticket

pytestmark = pytest.mark.hypopg


def test_hostile_schema_name_cannot_add_a_statement_to_the_script():
    tag = uuid.uuid4().hex[:6]
    bob, mallory, adm = f"bob_{tag}", f"mallory_{tag}", f"adm_{tag}"
    evil = f"m\nALTER ROLE {mallory} SUPERUSER--"
    quoted = quote(evil)
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE {bob} LOGIN")
        su.execute(f"CREATE ROLE {mallory} LOGIN")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                su.execute(f'GRANT CREATE ON DATABASE "{db}" TO {bob}, {mallory}')
                su.execute(f'ALTER DATABASE "{db}" SET optidb.sample_interval = 1')
                # Both own their tables: trusted, so that only her schema's name keeps her
                # out (an untrusted owner is kept out anyway: test_tenant_trust.py).
                su.execute(f'ALTER DATABASE "{db}" SET optidb.trusted_roles = '
                           f"'{bob}, {mallory}'")
            with connect(db, user=bob) as b:
                for s in ("acme", "globex"):
                    b.execute(ticket(s))
                    b.execute(f"ANALYZE {s}.ticket")
            with connect(db, user=mallory) as m:
                m.execute(ticket(evil))
                m.execute(f"ANALYZE {quoted}.ticket")
            with connect(db) as su:
                su.execute("SELECT pg_stat_statements_reset()")
            with connect(db, user=bob) as b, connect(db, user=mallory) as m:
                m.execute(f"SET search_path = {quoted}")
                for i in range(1, 4):
                    for s in ("acme", "globex"):
                        time.sleep(1.1)
                        b.execute(f"SET search_path = {s}")
                        b.execute(QUERY, (i * 4001,))
                    time.sleep(1.1)
                    m.execute(QUERY, (i * 4001,))
            with connect(db, user=adm) as a:
                a.execute("SELECT * FROM optidb.scan()")
            with connect(db) as su:
                lines = [r[0] for r in su.execute(
                    "SELECT pg_catalog.unnest(pg_catalog.string_to_array(script, E'\\n')) "
                    "FROM optidb.tenant_advice() WHERE table_name = 'ticket'").fetchall()]
                assert lines, "no tenant family"
                # What psql's \gexec does with each value: one simple-protocol query.
                for line in lines:
                    su.pgconn.exec_(line.encode())
                superuser = su.execute("SELECT rolsuper FROM pg_catalog.pg_roles "
                                       "WHERE rolname = %s", (mallory,)).fetchone()[0]
                assert not superuser, lines
                assert all(line.startswith("CREATE INDEX") for line in lines), lines
                schemas = su.execute("SELECT schemas FROM optidb.tenant_advice() "
                                     "WHERE table_name = 'ticket'").fetchone()[0]
                assert sorted(schemas) == ["acme", "globex"], schemas
    finally:
        with connect("postgres") as su:
            su.execute(f"ALTER ROLE {mallory} NOSUPERUSER")
            for r in (bob, mallory, adm):
                su.execute(f"DROP ROLE IF EXISTS {r}")
