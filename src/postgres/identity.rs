//! Statements keep their role by name across clusters and their history across databases.
//!
//! optidb.query names a statement's role twice: by OID (`userid`, what pg_stat_statements and
//! optidb's hooks report) and by name (`role_name`), and records where that OID was assigned:
//! the cluster (`system_identifier`, as pg_control_system() reports it) and the database
//! (`dbid`). An OID means a role only in the cluster that assigned it: a dump restored into
//! another cluster brings OIDs that are another role there, or none. So within one cluster the
//! OID is the role (a rename keeps it); across clusters the name is.
//!
//! `reconcile()` runs at the start of every snapshot and scan (under the snapshot lock, before
//! anything is registered) and brings every row home:
//! - a row recorded in another cluster gets the OID of the role of its name here. No such role:
//!   `userid` becomes NULL and `role_missing` says why; admins see it, no reader does, nothing
//!   is replayed as anyone, and a role later created with that name takes it over;
//! - a row recorded in another database (a restore elsewhere on the same cluster, a database
//!   copied with CREATE DATABASE ... TEMPLATE) gets this database's OID, so new executions of
//!   the statement add to its restored history instead of starting a second one;
//! - a row whose role was renamed since gets the new name;
//! - the samples of a row recorded elsewhere forget the schema and relation OIDs they hold
//!   (another database's objects): their names are then vetted as a configured search_path's
//!   are, by who owns them (src/postgres/replay.rs).
//!
//! Until then nothing trusts an OID whose role does not carry the stored name: the readers'
//! row-level security policy on optidb.query (src/api/surface.rs) and replays
//! (src/postgres/replay.rs, `load`) compare the two, and refresh() reconciles before the metric
//! views copy the OIDs (readers see those by OID alone).

use crate::postgres::locks::{self, Lock};
use crate::postgres::rows;
use crate::postgres::settings::{self, Setting};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Where this session's OIDs belong: the cluster and the database.
struct Home {
    system_identifier: i64,
    dbid: pg_sys::Oid,
}

fn home() -> Home {
    // SAFETY: GetSystemIdentifier reads the control file's copy in shared memory, set at
    // startup and never changed; MyDatabaseId is set when the backend connected, before any
    // statement ran.
    unsafe {
        Home {
            // The same bits pg_control_system() shows (and the column default stores).
            system_identifier: pg_sys::GetSystemIdentifier() as i64,
            dbid: pg_sys::MyDatabaseId,
        }
    }
}

/// Are there rows whose OIDs were assigned in another cluster or database (a restore not yet
/// reconciled)?
fn foreign_rows(h: &Home) -> bool {
    rows::value::<bool>(
        "foreign statements",
        "SELECT EXISTS (SELECT FROM optidb.query q \
                        WHERE q.system_identifier <> $1 OR q.dbid <> $2)",
        &[h.system_identifier.into(), h.dbid.into()],
    )
    .unwrap_or(false)
}

/// For refresh(): the metric views copy optidb.query's OIDs and readers see their rows by OID
/// alone, so rows restored from elsewhere are reconciled first. Nothing to do (the usual case)
/// costs one look at optidb.query and takes no lock.
pub fn reconcile_before_copying_oids() {
    if foreign_rows(&home()) {
        locks::acquire_or_raise(
            Lock::Snapshot,
            "optidb.scan() or optidb.snapshot() is running in this database",
        );
        reconcile();
    }
}

/// What one row becomes: its role's OID here (None: no role) and, without one, why.
struct Decision {
    id: i64,
    /// Recorded in another cluster or database (not only a role retried).
    foreign: bool,
    userid: Option<pg_sys::Oid>,
    role_missing: Option<String>,
}

/// Each row to move, with the OID it gets. Same cluster: its own OID (roles are cluster-wide);
/// another cluster: the OID of the role of its name. Rows without a role are retried once a
/// role of their name exists (and its key is free), so a role created after the restore takes
/// its statements over. A row may not take a key
/// (fingerprint, role, database, source) another row holds (a statement of that role already recorded
/// here, or two copies of one role's statement: the role was dropped and re-created before the
/// dump): the latest seen keeps it, the others stay without a role, saying which one has it.
const DECISIONS: &str = "
WITH moving AS (
    -- Recorded in another cluster or database.
    SELECT q.id, q.fingerprint, q.source, q.last_seen, q.role_name, q.system_identifier, q.dbid,
           CASE WHEN q.userid IS NOT NULL AND q.system_identifier = $1 THEN q.userid
                ELSE r.oid END AS target
    FROM optidb.query q LEFT JOIN pg_catalog.pg_roles r ON r.rolname = q.role_name
    WHERE q.system_identifier <> $1 OR q.dbid <> $2
    UNION ALL
    -- Without a role, now that one of its name exists (and that role's key is free).
    SELECT q.id, q.fingerprint, q.source, q.last_seen, q.role_name, q.system_identifier, q.dbid,
           r.oid
    FROM optidb.query q JOIN pg_catalog.pg_roles r ON r.rolname = q.role_name
    WHERE q.userid IS NULL AND q.system_identifier = $1 AND q.dbid = $2
      AND NOT EXISTS (SELECT FROM optidb.query s
                      WHERE s.fingerprint = q.fingerprint AND s.userid = r.oid AND s.dbid = $2
                        AND s.source = q.source)
), ranked AS (
    SELECT m.*,
           pg_catalog.row_number() OVER w AS rank,
           pg_catalog.first_value(m.id) OVER w AS first_id,
           (SELECT s.id FROM optidb.query s
            WHERE s.fingerprint = m.fingerprint AND s.userid = m.target AND s.dbid = $2
              AND s.source = m.source
              AND s.id NOT IN (SELECT id FROM moving) LIMIT 1) AS holder
    FROM moving m
    WINDOW w AS (PARTITION BY m.fingerprint, m.source, m.target ORDER BY m.last_seen DESC, m.id DESC)
)
SELECT id, (system_identifier <> $1 OR dbid <> $2) AS foreign_row,
       CASE WHEN target IS NOT NULL AND holder IS NULL AND rank = 1 THEN target END AS userid,
       CASE WHEN target IS NULL AND role_name IS NULL THEN
                pg_catalog.format('the name of the role that ran it is unknown (dropped before '
                                  'optidb recorded role names; recorded in database %s of '
                                  'cluster %s)', dbid, system_identifier)
            WHEN target IS NULL THEN
                pg_catalog.format('no role named %I exists in this cluster (the statement was '
                                  'recorded in database %s of cluster %s)',
                                  role_name, dbid, system_identifier)
            WHEN holder IS NOT NULL OR rank > 1 THEN
                pg_catalog.format('role %I has this statement here already (query id %s): this '
                                  'copy is kept apart, without a role',
                                  role_name, COALESCE(holder, first_id))
       END AS role_missing
FROM ranked";

/// Bring every row home (see the module comment). Returns how many rows moved.
pub fn reconcile() -> usize {
    let h = home();
    // JIT off: the planner's estimate for a restored table of 20,000 statements starts a
    // compilation that took a second (measured) for a query that runs in a quarter of one.
    let decisions = settings::with(&[Setting::user("jit", "off")], || {
        rows::select(
            "statements to re-map",
            DECISIONS,
            &[h.system_identifier.into(), h.dbid.into()],
            |row| Decision {
                id: row.get("id"),
                foreign: row.get("foreign_row"),
                userid: row.opt("userid"),
                role_missing: row.opt("role_missing"),
            },
        )
    });
    if !decisions.is_empty() {
        apply(&h, &decisions);
        report(&decisions);
    }
    follow_renames();
    decisions.len()
}

/// Two steps: the moving rows first let go of their keys (NULLs never collide), so OIDs that
/// swap between two clusters' roles (created in another order) never meet a row not yet moved.
fn apply(h: &Home, decisions: &[Decision]) {
    let ids: Vec<i64> = decisions.iter().map(|d| d.id).collect();
    Spi::run_with_args(
        "UPDATE optidb.query SET userid = NULL WHERE id = ANY ($1) AND userid IS NOT NULL",
        &[ids.clone().into()],
    )
    .unwrap_or_else(|e| error!("re-mapping statements' roles failed: {e}"));
    Spi::run_with_args(
        "UPDATE optidb.query q SET userid = d.userid, dbid = $4, system_identifier = $5, \
             role_missing = d.role_missing \
         FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::oid[]), \
                         pg_catalog.unnest($3::text[])) AS d(id, userid, role_missing) \
         WHERE q.id = d.id",
        &[
            ids.into(),
            decisions
                .iter()
                .map(|d| d.userid)
                .collect::<Vec<_>>()
                .into(),
            decisions
                .iter()
                .map(|d| d.role_missing.clone())
                .collect::<Vec<_>>()
                .into(),
            h.dbid.into(),
            h.system_identifier.into(),
        ],
    )
    .unwrap_or_else(|e| error!("re-mapping statements' roles failed: {e}"));
    let foreign: Vec<i64> = decisions
        .iter()
        .filter(|d| d.foreign)
        .map(|d| d.id)
        .collect();
    Spi::run_with_args(
        "UPDATE optidb.sample SET search_path_oids = NULL, relation_oids = '{}' \
         WHERE query_id = ANY ($1) \
           AND (search_path_oids IS NOT NULL OR relation_oids <> '{}')",
        &[foreign.into()],
    )
    .unwrap_or_else(|e| error!("forgetting restored samples' OIDs failed: {e}"));
}

/// Say once what happened: a restore is rare and the DBA should know which statements lost
/// their role (the worker's snapshots log it; a scan() by hand also tells its caller).
fn report(decisions: &[Decision]) {
    let missing = decisions.iter().filter(|d| d.userid.is_none()).count();
    let line = format!(
        "optidb: {} statement(s) recorded in another cluster or database were re-mapped to this \
         database and to this cluster's roles by name; {missing} have no role here \
         (optidb.query.role_missing says why)",
        decisions.len()
    );
    log!("{line}");
    notice!("{line}");
}

/// A role renamed on this cluster keeps its OID: its statements take the new name. A row
/// without a name (its role was dropped before 0.6.0 recorded names) is left without one: an
/// OID reused since is another role.
fn follow_renames() {
    Spi::run(
        "UPDATE optidb.query q SET role_name = r.rolname FROM pg_catalog.pg_roles r \
         WHERE r.oid = q.userid AND q.role_name IS NOT NULL AND q.role_name <> r.rolname",
    )
    .unwrap_or_else(|e| error!("following renamed roles failed: {e}"));
}
