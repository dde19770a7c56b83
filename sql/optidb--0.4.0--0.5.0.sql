-- optidb 0.4.0 -> 0.5.0, hand-written. tests/e2e/test_upgrade.py checks that an install
-- upgraded with it has exactly the schema of a fresh 0.5.0 install and keeps its data.
--
-- 0.5.0: samples record the OIDs of their search_path's schemas. A replay used a recorded
-- schema by name, so one its owner dropped and someone else recreated under the same name
-- stood in for it (its look-alike functions ran as the statement's owner). Samples recorded
-- before 0.5.0 have no OIDs: their path is vetted like a configured one.

-- Resolve every name below in pg_catalog first (what pgspot checks for).
SET LOCAL search_path TO pg_catalog, pg_temp;

ALTER TABLE optidb.sample ADD COLUMN search_path_oids oid[];
