SET LOCAL pg_stat_statements.track = none;
-- optidb 0.5.0 -> 0.6.0, hand-written. tests/e2e/test_upgrade.py checks that an install
-- upgraded with it has exactly the schema of a fresh 0.6.0 install and keeps its data.
--
-- 0.6.0: production trust (issue 22). Replays run only code the statement's owner trusts;
-- pg_dump/pg_restore keeps every row and each statement's role by name; one role cannot push
-- the others' statements out of optidb; every growing table has a retention.

-- The first line: none of this script reaches pg_stat_statements, whatever its track setting
-- (why and how: the top of sql/bootstrap.sql); set back at the end. First, so that it is the
-- same text in every upgrade script: an upgrade through several leaves one entry of it.

-- Resolve every name below in pg_catalog first (what pgspot checks for).
SET LOCAL search_path TO pg_catalog, pg_temp;

-- Bounded and partial-failure safe: scan()'s stages after its ingest each run in a
-- subtransaction of their own; one that fails is recorded here and the rest is kept.
ALTER TABLE optidb.scan_log ADD COLUMN stage_errors jsonb NOT NULL DEFAULT '[]';
-- metrics() and report() read each view's latest successful refresh, not the whole log.
CREATE INDEX refresh_log_success ON optidb.refresh_log (view_name, finished_at DESC)
    WHERE error IS NULL;

-- Entries are grouped into statements before the top ones are chosen (issue 22): every entry
-- is parsed once and remembered here, with its statement's fingerprint until that statement is
-- first recorded (no statement, no baseline yet).
ALTER TABLE optidb.pgss_state ALTER COLUMN query_id DROP NOT NULL,
    ADD COLUMN fingerprint text;

-- Dump and restore keep everything; statements keep their role by name (src/postgres/identity.rs).
-- An OID means a role only in the cluster that assigned it: each statement also records its
-- role's name and the cluster, and snapshot() re-maps rows restored elsewhere by name. Rows of
-- roles that no longer exist keep no name (an OID reused since is another role).
ALTER TABLE optidb.query ALTER COLUMN userid DROP NOT NULL;
ALTER TABLE optidb.query ADD COLUMN role_name name;
ALTER TABLE optidb.query ADD COLUMN system_identifier bigint NOT NULL
    DEFAULT (pg_catalog.pg_control_system()).system_identifier;
ALTER TABLE optidb.query ADD COLUMN role_missing text;
UPDATE optidb.query q SET role_name = r.rolname
FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) q.userid;
CREATE INDEX query_family ON optidb.query (family_id);
-- optidb.family is dumped now (optidb.query.family_id references it: apply_surface registers
-- it below); optidb.wait_sample no longer is (this server's query ids and role OIDs), and
-- leaving and re-joining the extension is how a table leaves pg_dump's list.
ALTER EXTENSION optidb DROP TABLE optidb.wait_sample;
ALTER EXTENSION optidb ADD TABLE optidb.wait_sample;

-- Statements that never complete are first-class (issue 23): the latency history keeps, of
-- each interval's failures, the time until failure, the statement_timeout cancels and the
-- latest SQLSTATE.
ALTER TABLE optidb.latency
    ADD COLUMN failed_ms double precision NOT NULL DEFAULT 0 CHECK (failed_ms >= 0),
    ADD COLUMN timeouts bigint NOT NULL DEFAULT 0 CHECK (timeouts >= 0),
    ADD COLUMN sqlstate text;

-- missing_ok: a newer library may list objects a later upgrade script creates.
SELECT optidb.apply_surface(true);

SET LOCAL search_path TO optidb, pg_temp;

-- Statements after the script are tracked again as the session's settings say (see the top).
SET LOCAL pg_stat_statements.track TO DEFAULT;
