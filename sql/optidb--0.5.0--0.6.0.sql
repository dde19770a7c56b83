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

-- missing_ok: a newer library may list objects a later upgrade script creates.
SELECT optidb.apply_surface(true);

SET LOCAL search_path TO optidb, pg_temp;

-- Statements after the script are tracked again as the session's settings say (see the top).
SET LOCAL pg_stat_statements.track TO DEFAULT;
