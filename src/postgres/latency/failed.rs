//! Statements that failed (timed out, cancelled, raised an error), kept in shared memory with
//! what is needed to show and replay them even when pg_stat_statements, which records only
//! completed statements, has no entry for them: their text (as the hooks saw it, secrets
//! redacted), the schemas of their search_path (by OID, named at ingest), their failures since
//! the last snapshot, the time until each failure and the latest SQLSTATE.
//!
//! Written only when a top-level statement fails (failures.rs, at transaction or
//! subtransaction abort): a statement that completes costs nothing here. Each snapshot and scan
//! of a database drains that database's slots (src/postgres/ingest.rs), so the counts held
//! are those since the previous one.
//!
//! A fixed number of slots under one LWLock; a statement's repeated failures share its slot
//! (one per queryid, role and database). A full store is shared fairly between roles, then by
//! cost (`place`): a statement of a role holding fewer slots than the role holding the most
//! takes the cheapest slot of that role (so a role flooding the store with many distinct
//! failing statements between two snapshots keeps at most an equal share once others fail
//! too); within its own share, a new statement takes the slot whose failures took the least
//! time in all, and is dropped when its own failure took less still (a flood of quick errors
//! cannot push out a statement that keeps hitting statement_timeout). The latency table counts
//! every failure anyway; what a dropped statement loses is its text until it fails again.
//! What was dropped is counted per role and database (`drain_dropped`: the failures of an
//! evicted slot, or the one failure that found no room), and each snapshot or scan stores it in
//! optidb.scan_log.failures_dropped.

use super::table::Key;
use super::{lwlock, raw};
use optidb_core::slot_share::{self, count_dropped, place, DropCount, Place};
use pgrx::pg_sys;
use std::cell::UnsafeCell;

pub const SLOTS: usize = slot_share::MAX_SLOTS;
/// Roles (per database) whose dropped failures are counted apart between two drains; a
/// database's further roles share one count under role 0.
pub const DROP_COUNTS: usize = 64;
/// Bytes of text kept; a longer statement keeps none (it could not be parsed or replayed).
pub const TEXT_BYTES: usize = 4096;
/// Schemas kept of the search_path; a longer one is not kept.
pub const PATH_SCHEMAS: usize = super::samples::PATH_SCHEMAS;

/// SQLSTATE 57014 (query_canceled) as PostgreSQL packs it (MAKE_SQLSTATE).
pub const QUERY_CANCELED: i32 = pack(*b"57014");

pub const fn pack(s: [u8; 5]) -> i32 {
    const fn six(c: u8) -> i32 {
        (c.wrapping_sub(b'0') & 0x3F) as i32
    }
    six(s[0]) | six(s[1]) << 6 | six(s[2]) << 12 | six(s[3]) << 18 | six(s[4]) << 24
}

/// The five characters of a packed SQLSTATE.
pub fn sqlstate_text(code: i32) -> String {
    (0..5)
        .map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// One failure as the hooks saw it.
pub struct Failure<'a> {
    pub sqlstate: i32,
    pub elapsed_us: i64,
    /// Cancelled by statement_timeout (57014 once the statement ran that long).
    pub timed_out: bool,
    /// When the statement started (us since 2000).
    pub started_us: i64,
    /// Redacted text, None when too long; `replayable` when nothing was redacted.
    pub text: Option<&'a str>,
    pub replayable: bool,
    /// The search_path's schemas (empty: not known).
    pub path_oids: &'a [u32],
}

/// What a slot held, drained by a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub key: Key,
    pub failures: u64,
    pub timeouts: u64,
    /// Sum and maximum of the time until failure.
    pub sum_us: i64,
    pub max_us: i64,
    pub sqlstate: String,
    /// Start of the latest failed execution (us since 2000).
    pub started_us: i64,
    pub text: Option<String>,
    pub replayable: bool,
    pub path_oids: Vec<u32>,
}

#[repr(C)]
struct SlotData {
    used: bool,
    key: Key,
    failures: u64,
    timeouts: u64,
    sum_us: i64,
    max_us: i64,
    sqlstate: i32,
    started_us: i64,
    replayable: bool,
    text_len: u32,
    text: [u8; TEXT_BYTES],
    path_count: u32,
    path_oids: [u32; PATH_SCHEMAS],
}

#[repr(C)]
struct Store {
    lock: *mut pg_sys::LWLock,
    /// Only touched under the exclusive hold.
    slots: UnsafeCell<[SlotData; SLOTS]>,
    /// Failures whose slot was taken or found none, per role; under the same hold.
    dropped: UnsafeCell<[DropCount; DROP_COUNTS]>,
}

static mut STORE: *mut Store = std::ptr::null_mut();

pub fn shmem_size() -> usize {
    size_of::<Store>()
}

/// # Safety
/// Only in the postmaster's shmem_request hook.
pub unsafe fn request() {
    // SAFETY: the postmaster is single-threaded while it loads libraries.
    unsafe { pg_sys::RequestAddinShmemSpace(shmem_size()) };
}

/// # Safety
/// Only in the shmem_startup hook under AddinShmemInitLock, with `lock` reserved for the store.
pub unsafe fn attach(lock: *mut pg_sys::LWLock) {
    // SAFETY: AddinShmemInitLock (held by the caller) serializes creation; a new store is
    // zeroed (every slot unused: all-zero bytes are valid for every field) before anyone sees it.
    unsafe {
        let mut found = false;
        let store: *mut Store = pg_sys::ShmemInitStruct(
            c"optidb failed statements".as_ptr(),
            shmem_size(),
            &mut found,
        )
        .cast();
        if !found {
            std::ptr::write_bytes(store.cast::<u8>(), 0, shmem_size());
            (*store).lock = lock;
        }
        STORE = store;
    }
}

fn store() -> Option<&'static Store> {
    // SAFETY: set once per process at startup; lives as long as shared memory.
    unsafe { STORE.as_ref() }
}

/// Count one failure of `key`. Runs at abort: nothing here raises or logs.
pub fn record(key: Key, f: &Failure) {
    let Some(store) = store() else { return };
    let text = f.text.filter(|t| t.len() <= TEXT_BYTES);
    let path = if f.path_oids.len() <= PATH_SCHEMAS {
        f.path_oids
    } else {
        &[]
    };
    // SAFETY: the lock lives in shared memory; the exclusive hold is the permission to touch
    // the slots, and nothing below can raise.
    let _hold = unsafe { lwlock::Hold::exclusive(store.lock) };
    // SAFETY: the exclusive hold above.
    let (slots, dropped) = unsafe { (&mut *store.slots.get(), &mut *store.dropped.get()) };
    let slot = match slots.iter().position(|s| s.used && s.key == key) {
        Some(i) => &mut slots[i],
        None => {
            let held = |i: usize| {
                let s = &slots[i];
                s.used.then_some((s.key.userid, s.sum_us))
            };
            let i = match place(SLOTS, held, key.userid, f.elapsed_us) {
                Place::Free(i) => i,
                Place::Evict(i) => {
                    let old = &slots[i];
                    count_dropped(dropped, old.key.userid, old.key.dbid, old.failures);
                    i
                }
                Place::Dropped => {
                    count_dropped(dropped, key.userid, key.dbid, 1);
                    return;
                }
            };
            let s = &mut slots[i];
            *s = SlotData {
                used: true,
                key,
                ..unused()
            };
            s
        }
    };
    slot.failures += 1;
    slot.timeouts += f.timed_out as u64;
    slot.sum_us += f.elapsed_us.max(0);
    slot.max_us = slot.max_us.max(f.elapsed_us);
    slot.sqlstate = f.sqlstate;
    slot.started_us = f.started_us;
    if let Some(t) = text {
        slot.text[..t.len()].copy_from_slice(t.as_bytes());
        slot.text_len = t.len() as u32;
        slot.replayable = f.replayable;
    }
    if !path.is_empty() {
        slot.path_oids[..path.len()].copy_from_slice(path);
        slot.path_count = path.len() as u32;
    }
}

fn unused() -> SlotData {
    SlotData {
        used: false,
        key: Key {
            queryid: 0,
            userid: 0,
            dbid: 0,
        },
        failures: 0,
        timeouts: 0,
        sum_us: 0,
        max_us: 0,
        sqlstate: 0,
        started_us: 0,
        replayable: false,
        text_len: 0,
        text: [0; TEXT_BYTES],
        path_count: 0,
        path_oids: [0; PATH_SCHEMAS],
    }
}

/// Take the counts of dropped failures of database `dbid` (role, failures; role 0: further
/// roles together) out of the store.
pub fn drain_dropped(dbid: u32) -> Vec<(u32, u64)> {
    let Some(store) = store() else {
        return Vec::new();
    };
    // SAFETY: as in `record`.
    let _hold = unsafe { lwlock::Hold::exclusive(store.lock) };
    // SAFETY: the exclusive hold above.
    let counts = unsafe { &mut *store.dropped.get() };
    let mut out = Vec::new();
    for c in counts.iter_mut().filter(|c| c.used && c.dbid == dbid) {
        c.used = false;
        out.push((c.userid, c.failures));
    }
    out
}

/// The counts `drain_dropped` would take now, left in the store (optidb.health()).
pub fn peek_dropped(dbid: u32) -> Vec<(u32, u64)> {
    let Some(store) = store() else {
        return Vec::new();
    };
    // SAFETY: as in `record`; the counts are only written under the exclusive hold.
    let _hold = unsafe { lwlock::Hold::shared(store.lock) };
    // SAFETY: the shared hold above.
    let counts = unsafe { &*store.dropped.get() };
    counts
        .iter()
        .filter(|c| c.used && c.dbid == dbid)
        .map(|c| (c.userid, c.failures))
        .collect()
}

/// Take every failed statement of database `dbid` out of the store.
pub fn drain(dbid: u32) -> Vec<Failed> {
    let Some(store) = store() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    {
        // SAFETY: as in `record`.
        let _hold = unsafe { lwlock::Hold::exclusive(store.lock) };
        // SAFETY: the exclusive hold above.
        let slots = unsafe { &mut *store.slots.get() };
        for s in slots.iter_mut().filter(|s| s.used && s.key.dbid == dbid) {
            s.used = false;
            out.push((
                s.key,
                [s.failures, s.timeouts],
                [s.sum_us, s.max_us, s.started_us],
                s.sqlstate,
                (s.text[..s.text_len as usize].to_vec(), s.replayable),
                s.path_oids[..s.path_count as usize].to_vec(),
            ));
        }
    }
    // Decoding happens after the lock is released.
    out.into_iter()
        .map(
            |(key, [failures, timeouts], [sum_us, max_us, started_us], code, (text, r), path)| {
                let text = String::from_utf8(text).ok().filter(|t| !t.is_empty());
                Failed {
                    key,
                    failures,
                    timeouts,
                    sum_us,
                    max_us,
                    sqlstate: sqlstate_text(code),
                    started_us,
                    replayable: r && text.is_some(),
                    text,
                    path_oids: path,
                }
            },
        )
        .collect()
}

/// The search_path's schemas now, up to PATH_SCHEMAS (empty when longer). Called while an
/// error is reported inside a statement, before the transaction aborts: the path was computed
/// when the statement's names were looked up, so this reads a list and looks nothing up.
#[allow(
    ffi_unwind_calls,
    reason = "fetch_search_path_array only reads the search path computed for the statement's \
              own name lookups"
)]
pub fn current_path(into: &mut [u32; PATH_SCHEMAS]) -> usize {
    let mut oids = [pg_sys::InvalidOid; PATH_SCHEMAS];
    // SAFETY: fills at most PATH_SCHEMAS oids and returns how many the path has.
    let n = unsafe { raw::fetch_search_path_array(oids.as_mut_ptr(), PATH_SCHEMAS as i32) };
    if n < 0 || n as usize > PATH_SCHEMAS {
        return 0;
    }
    for (o, i) in into.iter_mut().zip(&oids[..n as usize]) {
        *o = i.to_u32();
    }
    n as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_pack_as_postgres_does() {
        // ERRCODE_QUERY_CANCELED and ERRCODE_DIVISION_BY_ZERO as PostgreSQL 15 defines them.
        assert_eq!(QUERY_CANCELED, 0x0404_01C5);
        assert_eq!(sqlstate_text(QUERY_CANCELED), "57014");
        assert_eq!(sqlstate_text(pack(*b"22012")), "22012");
        assert_eq!(sqlstate_text(pack(*b"XX000")), "XX000");
    }
}
