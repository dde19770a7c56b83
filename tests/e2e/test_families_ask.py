"""Query families, anomaly tags and ask() (issue 14): on the demo shop after its workload, and on
statements of a plain role in a schema of its own reached through SET search_path (simple
protocol, extended protocol and SQL PREPARE/EXECUTE)."""

import re
import uuid

import psycopg
import pytest

from conftest import DEMO_DB, HYPOPG, connect, scalar

NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\d+(?:[.,]\d+)*")


def numbers(text):
    return NUMBER.findall(text)


@pytest.fixture(scope="module")
def cast():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("adm", "app", "reader")}
    with connect(DEMO_DB) as su:
        for name in roles.values():
            su.execute(f'CREATE ROLE "{name}" LOGIN')
        su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')
        su.execute(f'GRANT optidb_reader TO "{roles["reader"]}", "{roles["app"]}"')
        su.execute(f'CREATE SCHEMA shop2_{tag} AUTHORIZATION "{roles["app"]}"')
    with connect(DEMO_DB, user=roles["app"]) as c:
        c.execute(f"SET search_path = shop2_{tag}")
        c.execute("CREATE TABLE items AS SELECT g AS id, g % 100 AS kind "
                  "FROM generate_series(1, 50000) g")
        c.execute("ALTER TABLE items ADD PRIMARY KEY (id)")
        # One lookup as an ORM writes it: literal IN-lists of several lengths (one fingerprint
        # already), other select lists and aliases, = ANY over the extended protocol, an
        # SQL-level PREPARE/EXECUTE with an ORDER BY: several statements, one family.
        for n in (1, 3, 8, 20):
            ids = ", ".join(str(i) for i in range(1, n + 1))
            c.execute(f"SELECT id, kind FROM items WHERE id IN ({ids})")
        c.execute("SELECT items.id FROM items WHERE items.id = ANY(%s)", ([1, 2, 3],))
        c.execute("PREPARE by_ids(int[]) AS SELECT * FROM items i WHERE i.id = ANY($1) "
                  "ORDER BY i.id")
        c.execute("EXECUTE by_ids('{4,5}')")
        # Another shape on the same table.
        for k in range(5):
            c.execute("SELECT count(*) FROM items WHERE kind = %s", (k,))
    with connect(DEMO_DB) as su:
        su.execute("SELECT * FROM optidb.scan(top => 1000)")
        su.execute("SELECT * FROM optidb.refresh()")
    try:
        yield roles, f"shop2_{tag}"
    finally:
        with connect(DEMO_DB) as su:
            su.execute(f"DROP SCHEMA shop2_{tag} CASCADE")
            for name in roles.values():
                su.execute(f'DROP OWNED BY "{name}"')
                su.execute(f'DROP ROLE "{name}"')


def test_demo_statements_fall_into_labelled_families(cast):
    roles, _ = cast
    with connect(DEMO_DB, user=roles["adm"]) as c:
        families = c.execute("SELECT label, statements FROM optidb.family").fetchall()
        labels = [f[0] for f in families]
        assert len(set(labels)) == len(labels) >= 2, families
        assert any(label.startswith("orders") for label in labels), labels
        assert all(re.fullmatch(r"[a-z0-9_]{1,48}", label) for label in labels), labels
        # The IN-list and = ANY spellings: several statements, one family.
        grouped = c.execute(
            "SELECT q.family_id, count(*), sum(cardinality(q.queryids)) FROM optidb.query q "
            "WHERE q.norm_sql ~ 'FROM items.*(IN \\(|ANY)' GROUP BY q.family_id").fetchall()
        assert len(grouped) == 1 and grouped[0][0] is not None, grouped
        # statements, queryids (PostgreSQL 18 gives IN-lists of any length one queryid)
        assert grouped[0][1] >= 3 and grouped[0][2] >= 4, grouped
        other = scalar(c, "SELECT family_id FROM optidb.query "
                          "WHERE norm_sql LIKE 'SELECT count(*) FROM items WHERE kind%%'")
        assert other is not None and other != grouped[0][0]
        label = scalar(c, "SELECT label FROM optidb.family WHERE id = %s", (grouped[0][0],))
        assert "items" in label
        # Families show in bottlenecks(), query(id) and the per-family view.
        evidence = c.execute("SELECT evidence->'family', family_id, family_label "
                             "FROM optidb.bottlenecks(5)").fetchall()
        assert all(e[0] and e[0]["label"] in labels for e in evidence), evidence
        assert all((e[1], e[2]) == (e[0]["id"], e[0]["label"]) for e in evidence), evidence
        qid = scalar(c, "SELECT min(id) FROM optidb.query WHERE family_id = %s", (grouped[0][0],))
        assert scalar(c, "SELECT optidb.query(%s)->'family'->>'label'", (qid,)) == label
        row = c.execute("SELECT statements, execution_count FROM optidb.family_metrics "
                        "WHERE family_id = %s", (grouped[0][0],)).fetchone()
        assert row[0] >= 3 and row[1] >= 6, row


def test_readers_see_only_their_own_statements_in_family_metrics(cast):
    roles, _ = cast
    with connect(DEMO_DB, user=roles["reader"]) as c:
        assert scalar(c, "SELECT count(*) FROM optidb.family_metrics") == 0
        assert scalar(c, "SELECT count(*) FROM optidb.anomaly") == 0
    with connect(DEMO_DB, user=roles["app"]) as c:
        mine = c.execute("SELECT label FROM optidb.family_metrics").fetchall()
        assert mine and all("items" in m[0] for m in mine), mine


def test_a_seeded_latency_spike_is_tagged_and_a_steady_statement_is_not(cast):
    """Seven earlier hours at ~10 ms (recorded by optidb's hooks, each snapshot dated back an
    hour more), then the latest hour 3x slower; a twin statement stays at ~2 ms."""
    roles, schema = cast
    with connect(DEMO_DB) as su, connect(DEMO_DB, user=roles["app"]) as app:
        app.execute(f"SET search_path = {schema}")

        def run(label, seconds, times=5):
            for _ in range(times):
                app.execute(f"SELECT pg_sleep(%s) AS {label}, count(*) FROM items WHERE id < 10",
                            (seconds,))

        for hours_back in range(8, 1, -1):
            run("spiky", 0.01)
            run("steady", 0.01)
            su.execute("SELECT * FROM optidb.snapshot(top => 1000)")
            su.execute("UPDATE optidb.latency SET captured_at = captured_at - "
                       "make_interval(hours => %s) WHERE captured_at > now() - interval '1 minute' "
                       "AND query_id IN (SELECT id FROM optidb.query WHERE norm_sql ~ "
                       "'AS (spiky|steady)')", (hours_back,))
        run("spiky", 0.04)
        run("steady", 0.01)
        su.execute("SELECT * FROM optidb.scan(top => 1000)")
        tags = {r[0]: r[1] for r in su.execute(
            "SELECT q.norm_sql ~ 'AS spiky', a.evidence FROM optidb.anomaly a "
            "JOIN optidb.query q ON q.id = a.query_id "
            "WHERE a.kind = 'latency_spike' AND q.norm_sql ~ 'AS (spiky|steady)'")}
    assert list(tags) == [True], tags
    evidence = tags[True]
    assert 2.2 < evidence["ratio"] < 4.5 and evidence["earlier_hours"] == 7, evidence
    with connect(DEMO_DB, user=roles["app"]) as c:  # the statement's owner sees its tag
        qid = scalar(c, "SELECT id FROM optidb.query WHERE norm_sql ~ 'AS spiky'")
        kinds = [a["kind"] for a in scalar(c, "SELECT optidb.query(%s)->'anomalies'", (qid,))]
        assert "latency_spike" in kinds
        # bottlenecks() shows the family and the tags as columns (chips in the list).
        family = c.execute("SELECT f.id, f.label FROM optidb.query q "
                           "JOIN optidb.family f ON f.id = q.family_id WHERE q.id = %s",
                           (qid,)).fetchone()
        row = c.execute("SELECT family_id, family_label, anomalies FROM optidb.bottlenecks(1000) "
                        "WHERE query_id = %s", (qid,)).fetchone()
        assert row == (family[0], family[1], kinds), (row, family, kinds)
        # The owner's list holds only its own statements; one without a tag shows none.
        listed = c.execute("SELECT query_id, anomalies FROM optidb.bottlenecks(1000)").fetchall()
        with connect(DEMO_DB) as su:  # what the role ran, as the superuser sees it
            mine = {r[0] for r in su.execute("SELECT id FROM optidb.query WHERE role_name = %s",
                                             (roles["app"],))}
        assert listed and {r[0] for r in listed} <= mine, listed
        counted = scalar(c, "SELECT id FROM optidb.query "
                            "WHERE norm_sql LIKE 'SELECT count(*) FROM items WHERE kind%%'")
        assert [r[1] for r in listed if r[0] == counted] == [[]], listed
    with connect(DEMO_DB, user=roles["reader"]) as c:  # another reader: not a trace of it
        assert scalar(c, "SELECT count(*) FROM optidb.bottlenecks(1000) "
                         "WHERE %s = ANY (anomalies) OR family_label ~ 'items'",
                      ("latency_spike",)) == 0
    with connect(DEMO_DB, user=roles["app"]) as c:
        answer, _, facts = c.execute("SELECT * FROM optidb.ask('what changed?', %s)",
                                     (qid,)).fetchone()
        assert "Latency spike" in answer and any(f["name"] == "ratio" for f in facts), answer


def check_grounded(conn, answer, facts):
    """Every number in the answer is a cited fact; every fact is what its source returns."""
    cited = {n for f in facts for n in numbers(f["value"])}
    invented = [n for n in numbers(answer) if n not in cited]
    assert invented == [], (invented, answer)
    for f in facts:
        assert scalar(conn, f["source"]) == f["value"], f


def test_why_is_each_demo_bottleneck_slow_cites_only_stored_facts(cast):
    roles, _ = cast
    with connect(DEMO_DB, user=roles["adm"]) as c:
        top = c.execute("SELECT query_id, calls, mean_ms FROM optidb.bottlenecks(8)").fetchall()
        assert len(top) >= 5
        for qid, calls, mean_ms in top:
            answer, intent, facts = c.execute(
                "SELECT * FROM optidb.ask(%s)", (f"why is query {qid} slow?",)).fetchone()
            assert intent == "why_slow", intent
            check_grounded(c, answer, facts)
            by_name = {f["name"]: f["value"] for f in facts}
            # The same numbers bottlenecks() computes from the same rows.
            assert by_name["query_id"] == str(qid)
            assert int(by_name["calls"]) == calls
            assert abs(float(by_name["mean_ms"]) - mean_ms) < 0.01
            assert f"Statement {qid} ran {calls} times" in answer
            assert "Its p95 by optidb's own histograms" in answer  # every demo statement has one


def test_ask_answers_the_other_questions_from_facts(cast):
    roles, _ = cast
    with connect(DEMO_DB, user=roles["adm"]) as c:
        c.execute("SELECT optidb.record_health()")
        qid, rec = c.execute(
            "SELECT q, r.id FROM optidb.recommendation r, unnest(r.query_ids) q "
            "WHERE r.status = 'open' AND r.simulable ORDER BY r.confidence DESC LIMIT 1"
        ).fetchone()
        for question, arg, intent, must in (
                ("top bottlenecks", None, "top_bottlenecks", "% of the time recorded"),
                ("what index should I add?", None, "what_index", "CREATE INDEX"),
                ("show impact", qid, "show_impact",
                 "Simulated" if HYPOPG else "hypopg extension is not installed"),
                ("is the database healthy?", None, "health", "figure(s) out of"),
                ("what changed?", None, "what_changed", "")):
            answer, got, facts = c.execute("SELECT * FROM optidb.ask(%s, %s)",
                                           (question, arg)).fetchone()
            assert got == intent, (question, got)
            assert must in answer, (question, answer)
            check_grounded(c, answer, facts)
        if HYPOPG:
            assert scalar(c, "SELECT count(*) FROM optidb.simulation WHERE query_id = %s",
                          (qid,)) > 0


def test_unknown_questions_get_the_help_text_and_hidden_statements_nothing(cast):
    roles, _ = cast
    with connect(DEMO_DB, user=roles["reader"]) as c:
        for question in ("hello", "drop table orders", "what is the meaning of life?"):
            answer, intent, facts = c.execute("SELECT * FROM optidb.ask(%s)",
                                              (question,)).fetchone()
            assert intent == "help" and facts == [], (question, intent)
            assert "I did not understand" in answer
            for example in ("slow", "index", "impact", "changed", "bottlenecks", "healthy"):
                assert example in answer
        # A statement of the superuser's: the reader learns nothing about it, no number.
        with connect(DEMO_DB) as su:
            hidden = scalar(su, "SELECT min(query_id) FROM optidb.bottlenecks(1)")
        answer, _, facts = c.execute("SELECT * FROM optidb.ask(%s)",
                                     (f"why is query {hidden} slow?",)).fetchone()
        assert facts == [] and numbers(answer) == [], answer
        answer, _, facts = c.execute("SELECT * FROM optidb.ask('is the database healthy?')"
                                     ).fetchone()
        assert facts == [] and "optidb_admin" in answer
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            c.execute("SELECT * FROM optidb.ask(NULL)")


def test_lock_waits_sampled_by_the_worker_function_tag_lock_contention(cast):
    import threading
    import time

    roles, schema = cast
    blocker = connect(DEMO_DB, user=roles["app"])
    blocker.execute(f"SET search_path = {schema}")
    blocked = connect(DEMO_DB, user=roles["app"])
    blocked.execute(f"SET search_path = {schema}")
    # A row lock: waited for while executing, when the statement has its query id (a lock
    # taken while the statement is parsed, LOCK TABLE's say, is waited for before it has one).
    blocker.autocommit = False
    blocker.execute("UPDATE items SET kind = kind WHERE id = 1")
    thread = threading.Thread(target=lambda: blocked.execute(
        "UPDATE items SET kind = %s WHERE id = 1 RETURNING id AS contended", (7,)))
    thread.start()
    try:
        time.sleep(0.5)
        with connect(DEMO_DB, user=roles["adm"]) as adm:
            stored = []
            for _ in range(3):  # what the worker does every optidb.alert_interval
                stored.append(scalar(adm, "SELECT optidb.sample_waits()"))
                time.sleep(0.4)
            assert all(n >= 1 for n in stored), stored
    finally:
        blocker.commit()
        thread.join(10)
    with connect(DEMO_DB) as su:
        su.execute("SELECT * FROM optidb.scan(top => 1000)")
        evidence = scalar(su, "SELECT a.evidence FROM optidb.anomaly a JOIN optidb.query q "
                              "ON q.id = a.query_id WHERE a.kind = 'lock_contention' "
                              "AND q.norm_sql LIKE '%%AS contended%%'")
    assert evidence and evidence["samples_waiting"] >= 3, evidence
    assert "transactionid" in evidence["lock_events"], evidence
    blocker.close()
    blocked.close()
