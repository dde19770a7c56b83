//! Samples of real executions, so statements can be planned with the values they really run
//! with and in the search_path they ran in (src/postgres/replay.rs, src/postgres/explain.rs).
//!
//! A sample holds the statement's text as executed (literals kept, cut out of a multi-statement
//! string; the text of an SQL-level EXECUTE is its PREPARE), the search_path in effect, and for
//! the extended protocol and SQL EXECUTE the bound parameter values rendered with their types'
//! output functions. Only built-in types are rendered (their output functions cannot fail); a
//! value of another type, or longer than PARAM_BYTES, is kept as unknown. Text that mentions a
//! secret (what optidb_core::redact looks for) is redacted and keeps no parameter values.
//!
//! Taken for the first execution of each statement, then at most once per
//! `optidb.sample_interval` per statement (one compare-and-swap on the hot path, in the latency
//! table), plus every new slowest execution. Rendering runs only for those executions, after the
//! executor finished, outside any lock.
//!
//! Kept in a ring of slots in shared memory under a lock of its own; the snapshot and scan jobs
//! of each database drain their database's samples into optidb.sample. A full ring overwrites
//! its oldest slot, unless that holds another role's sample: then the role's own oldest sample
//! (or a free slot) among the next few gives way (optidb_core::slot_share::ring_slot) and the
//! other role's sample moves there, so a role that floods the ring between two snapshots
//! recycles its own samples rather than pushing out other roles'. Sampling is best effort and
//! never makes a statement wait.

use super::table::Key;
use super::{lwlock, raw};
use optidb_core::slot_share;
use pgrx::pg_sys;
use std::cell::UnsafeCell;
use std::ffi::CStr;

pub const PATH_BYTES: usize = 256;
/// Schemas recorded per path; a longer path is not kept (nor is one over PATH_BYTES).
pub const PATH_SCHEMAS: usize = 32;
pub const PAYLOAD_BYTES: usize = 4096;
pub const PARAM_BYTES: usize = 1024;

/// A parameter value as sampled.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    /// Not rendered (a type that is not built in, or too long).
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub type_oid: u32,
    pub value: Value,
}

/// The search_path a statement ran with: the schemas it found, by name (quoted, comma-separated,
/// as a search_path setting) and by OID in the same order. A replay uses a name only while it
/// still denotes the same schema: one dropped and recreated by someone else is a look-alike.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPath {
    pub text: String,
    pub oids: Vec<u32>,
}

/// One sampled execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub key: Key,
    pub elapsed_ns: u64,
    /// When the statement started (us since 2000-01-01, PostgreSQL's TimestampTz).
    pub started_us: i64,
    /// The slowest execution so far.
    pub slowest: bool,
    /// Taken on the sampling schedule (the first execution, then one per interval).
    pub typical: bool,
    pub search_path: Option<SearchPath>,
    /// None when it was too long, or redacted (then it cannot be replayed).
    pub text: Option<String>,
    pub params: Vec<Param>,
    /// The relations its plan used (up to MAX_RELATIONS): a replay must resolve to these.
    pub relations: Vec<u32>,
}

/// Relations recorded per sample; a statement using more keeps none (not checked then).
pub const MAX_RELATIONS: usize = 64;

#[repr(C)]
struct SlotData {
    used: bool,
    key: Key,
    elapsed_ns: u64,
    started_us: i64,
    slowest: bool,
    typical: bool,
    path_len: u16,
    path: [u8; PATH_BYTES],
    path_oid_count: u16,
    path_oids: [u32; PATH_SCHEMAS],
    payload_len: u32,
    payload: [u8; PAYLOAD_BYTES],
}

#[repr(C)]
struct Ring {
    lock: *mut pg_sys::LWLock,
    slots: usize,
    /// Only touched under the exclusive hold.
    next: UnsafeCell<usize>,
}

/// Slots follow the Ring header in shared memory; each is only touched under the exclusive hold.
type Slot = UnsafeCell<SlotData>;

static mut RING: *mut Ring = std::ptr::null_mut();
static mut SLOTS: usize = 0;

/// Slots for a table of `max_statements` entries: a quarter of them, 64 to 1024.
pub fn slots_for(max_statements: i64) -> usize {
    (max_statements as usize / 4).clamp(64, 1024)
}

pub fn shmem_size(slots: usize) -> usize {
    size_of::<Ring>() + slots * size_of::<Slot>()
}

/// # Safety
/// Only in the postmaster's shmem_request hook.
pub unsafe fn request(slots: usize) {
    // SAFETY: the postmaster is single-threaded while it loads libraries.
    unsafe {
        SLOTS = slots;
        pg_sys::RequestAddinShmemSpace(shmem_size(slots));
    }
}

/// # Safety
/// Only in the shmem_startup hook, with `lock` the LWLock reserved for the ring.
pub unsafe fn attach(lock: *mut pg_sys::LWLock) {
    // SAFETY: AddinShmemInitLock (held by the caller) serializes creation; a new ring's memory
    // is zeroed (every slot unused) before anyone can see it.
    unsafe {
        let mut found = false;
        let ring: *mut Ring =
            pg_sys::ShmemInitStruct(c"optidb samples".as_ptr(), shmem_size(SLOTS), &mut found)
                .cast();
        if !found {
            std::ptr::write_bytes(ring.cast::<u8>(), 0, shmem_size(SLOTS));
            std::ptr::write(
                ring,
                Ring {
                    lock,
                    slots: SLOTS,
                    next: UnsafeCell::new(0),
                },
            );
        }
        RING = ring;
    }
}

fn ring() -> Option<&'static Ring> {
    // SAFETY: set once per process at startup; lives as long as shared memory.
    unsafe { RING.as_ref() }
}

fn slot(ring: &Ring, i: usize) -> *mut SlotData {
    assert!(i < ring.slots);
    // SAFETY: the ring's `slots` slots follow its header in the same allocation, and the
    // header's size keeps them aligned (both are 8-byte aligned).
    unsafe { UnsafeCell::raw_get((ring as *const Ring).add(1).cast::<Slot>().add(i)) }
}

fn encode(text: Option<&str>, params: &[Param], relations: &[u32]) -> Option<Vec<u8>> {
    let text = text.unwrap_or("");
    let mut out = Vec::with_capacity(text.len() + 64);
    out.extend_from_slice(&(relations.len() as u16).to_le_bytes());
    for r in relations {
        out.extend_from_slice(&r.to_le_bytes());
    }
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&(params.len() as u16).to_le_bytes());
    for p in params {
        out.extend_from_slice(&p.type_oid.to_le_bytes());
        let (state, bytes): (u8, &[u8]) = match &p.value {
            Value::Null => (0, &[]),
            Value::Text(t) => (1, t.as_bytes()),
            Value::Unknown => (2, &[]),
        };
        out.push(state);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    (out.len() <= PAYLOAD_BYTES).then_some(out)
}

/// What a slot's payload holds: the text, the parameters and the relations.
type Payload = (Option<String>, Vec<Param>, Vec<u32>);

fn decode(bytes: &[u8]) -> Option<Payload> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let relation_count = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let relations = (0..relation_count)
        .map(|_| Some(u32::from_le_bytes(take(4)?.try_into().ok()?)))
        .collect::<Option<Vec<u32>>>()?;
    let text_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let text = String::from_utf8(take(text_len)?.to_vec()).ok()?;
    let count = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let mut params = Vec::with_capacity(count);
    for _ in 0..count {
        let type_oid = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let state = take(1)?[0];
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let value = match state {
            0 => Value::Null,
            1 => Value::Text(String::from_utf8(take(len)?.to_vec()).ok()?),
            _ => Value::Unknown,
        };
        params.push(Param { type_oid, value });
    }
    Some(((!text.is_empty()).then_some(text), params, relations))
}

/// Put a sample in the ring (overwriting the oldest slot when it is full).
pub fn push(sample: &Sample) {
    let Some(ring) = ring() else { return };
    // Too long to keep: the search_path and the relations alone are still worth it.
    let payload = encode(sample.text.as_deref(), &sample.params, &sample.relations)
        .or_else(|| encode(None, &[], &sample.relations))
        .unwrap_or_else(|| encode(None, &[], &[]).expect("an empty payload fits"));
    let (path, path_oids) = sample
        .search_path
        .as_ref()
        .filter(|p| p.text.len() <= PATH_BYTES && p.oids.len() <= PATH_SCHEMAS)
        .map_or(("", &[][..]), |p| (p.text.as_str(), p.oids.as_slice()));
    // SAFETY: the ring's lock lives in shared memory.
    let _hold = unsafe { lwlock::Hold::exclusive(ring.lock) };
    // SAFETY: the exclusive hold is the permission to touch `next` and the slots.
    unsafe {
        let next = &mut *ring.next.get();
        let held = |i: usize| {
            let s = &*slot(ring, i);
            s.used.then_some(s.key.userid)
        };
        // The entry dropped is slot i's; the oldest entry moves there when it is another's,
        // and the new one takes the oldest's place, so the ring's order is kept.
        let oldest = *next % ring.slots;
        let i = slot_share::ring_slot(ring.slots, oldest, held, sample.key.userid);
        if i != oldest {
            std::ptr::copy_nonoverlapping(slot(ring, oldest), slot(ring, i), 1);
        }
        *next = (oldest + 1) % ring.slots;
        let s = &mut *slot(ring, oldest);
        s.used = true;
        s.key = sample.key;
        s.elapsed_ns = sample.elapsed_ns;
        s.started_us = sample.started_us;
        s.slowest = sample.slowest;
        s.typical = sample.typical;
        s.path_len = path.len() as u16;
        s.path[..path.len()].copy_from_slice(path.as_bytes());
        s.path_oid_count = path_oids.len() as u16;
        s.path_oids[..path_oids.len()].copy_from_slice(path_oids);
        s.payload_len = payload.len() as u32;
        s.payload[..payload.len()].copy_from_slice(&payload);
    }
}

/// Take every sample of database `dbid` out of the ring.
pub fn drain(dbid: u32) -> Vec<Sample> {
    let Some(ring) = ring() else {
        return Vec::new();
    };
    let mut raw_samples = Vec::new();
    {
        // SAFETY: the ring's lock lives in shared memory.
        let _hold = unsafe { lwlock::Hold::exclusive(ring.lock) };
        for i in 0..ring.slots {
            // SAFETY: the exclusive hold is the permission to touch the slots.
            let s = unsafe { &mut *slot(ring, i) };
            if !s.used || s.key.dbid != dbid {
                continue;
            }
            s.used = false;
            raw_samples.push((
                s.key,
                s.elapsed_ns,
                s.started_us,
                (s.slowest, s.typical),
                (
                    s.path[..s.path_len as usize].to_vec(),
                    s.path_oids[..s.path_oid_count as usize].to_vec(),
                ),
                s.payload[..s.payload_len as usize].to_vec(),
            ));
        }
    }
    // Decoding (allocation, UTF-8 checks) happens after the lock is released.
    raw_samples
        .into_iter()
        .map(
            |(key, elapsed_ns, started_us, (slowest, typical), (path, oids), payload)| {
                let (text, params, relations) =
                    decode(&payload).unwrap_or((None, Vec::new(), Vec::new()));
                Sample {
                    key,
                    elapsed_ns,
                    started_us,
                    slowest,
                    typical,
                    search_path: String::from_utf8(path)
                        .ok()
                        .filter(|p| !p.is_empty())
                        .map(|text| SearchPath { text, oids }),
                    text,
                    params,
                    relations,
                }
            },
        )
        .collect()
}

/// The search_path in effect, as the schemas it found (pg_catalog included, in order) by name
/// and OID: `"$user"` and names of schemas that do not exist are resolved now, so a replay
/// cannot find a schema someone creates later (a look-alike named like the role, say). The
/// session's own temporary schema is left out: no other session can see it.
///
/// # Safety
/// In a backend, inside a transaction (the executor hooks are).
pub unsafe fn current_search_path() -> Option<SearchPath> {
    const FIRST_TRY: usize = 16;
    // SAFETY: fetch_search_path_array fills at most `len` oids and returns how many the path
    // has; get_namespace_name returns NULL for a schema dropped meanwhile (skipped) and
    // quote_identifier returns its argument or a palloc'd copy, read before the next call.
    unsafe {
        let mut oids = vec![pg_sys::InvalidOid; FIRST_TRY];
        let n = pg_sys::fetch_search_path_array(oids.as_mut_ptr(), FIRST_TRY as i32).max(0);
        if n as usize > FIRST_TRY {
            oids.resize(n as usize, pg_sys::InvalidOid);
            pg_sys::fetch_search_path_array(oids.as_mut_ptr(), n);
        }
        oids.truncate(n as usize);
        let (names, oids): (Vec<String>, Vec<u32>) = oids
            .into_iter()
            .filter_map(|oid| {
                let name = pg_sys::get_namespace_name(oid);
                (!name.is_null()).then(|| {
                    let quoted = CStr::from_ptr(pg_sys::quote_identifier(name));
                    (quoted.to_string_lossy().into_owned(), oid.to_u32())
                })
            })
            .unzip();
        (!names.is_empty()).then(|| SearchPath {
            text: names.join(", "),
            oids,
        })
    }
}

/// Render the bound parameters (their types only unless `values`). Built-in types only: their
/// output functions cannot fail.
///
/// # Safety
/// `params` is the executing statement's ParamListInfo (or null); call in the backend, outside
/// any optidb lock (output functions allocate).
pub unsafe fn render(params: pg_sys::ParamListInfo, values: bool) -> Vec<Param> {
    // SAFETY: a ParamListInfo is valid for the statement's life; a static list (no paramFetch)
    // holds numParams entries.
    unsafe {
        let Some(list) = params.as_ref() else {
            return Vec::new();
        };
        let n = list.numParams.max(0) as usize;
        if list.paramFetch.is_some() || !values {
            return (0..n)
                .map(|i| Param {
                    type_oid: if values {
                        0
                    } else {
                        list.params.as_slice(n)[i].ptype.to_u32()
                    },
                    value: Value::Unknown,
                })
                .collect();
        }
        list.params
            .as_slice(n)
            .iter()
            .map(|p| Param {
                type_oid: p.ptype.to_u32(),
                value: if p.isnull {
                    Value::Null
                } else if p.ptype.to_u32() == 0 || p.ptype.to_u32() >= pg_sys::FirstNormalObjectId {
                    Value::Unknown
                } else {
                    output(p.ptype, p.value)
                },
            })
            .collect()
    }
}

unsafe fn output(type_oid: pg_sys::Oid, value: pg_sys::Datum) -> Value {
    let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
    // SAFETY: a built-in type's output function; both calls are guarded (an error would become
    // a panic, which the hook contains), and neither fails for built-in types.
    let text = unsafe {
        pg_sys::getTypeOutputInfo(type_oid, &mut func, &mut varlena);
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(func, value))
    };
    let text = text.to_string_lossy();
    if text.len() > PARAM_BYTES {
        Value::Unknown
    } else {
        Value::Text(text.into_owned())
    }
}

/// The relations a plan uses (its relationOids), when there are at most MAX_RELATIONS.
///
/// # Safety
/// `stmt` is the executing statement's PlannedStmt.
pub unsafe fn relations(stmt: *const pg_sys::PlannedStmt) -> Vec<u32> {
    // SAFETY: as the caller promises.
    let (count, oids) = unsafe { relation_oids(stmt) };
    match count > MAX_RELATIONS {
        true => Vec::new(),
        false => oids.collect(),
    }
}

/// The first `out.len()` relations a plan uses (its relationOids), into `out` without
/// allocating (it runs for every statement on PostgreSQL 18); returns how many.
///
/// # Safety
/// `stmt` is the executing statement's PlannedStmt.
pub unsafe fn first_relations(stmt: *const pg_sys::PlannedStmt, out: &mut [u32]) -> usize {
    // SAFETY: as the caller promises.
    let (_, oids) = unsafe { relation_oids(stmt) };
    let mut n = 0;
    for (slot, oid) in out.iter_mut().zip(oids) {
        *slot = oid;
        n += 1;
    }
    n
}

/// The length of a plan's relationOids list and its non-zero OIDs.
///
/// # Safety
/// `stmt` is the executing statement's PlannedStmt; the iterator is used while it lives.
unsafe fn relation_oids(stmt: *const pg_sys::PlannedStmt) -> (usize, impl Iterator<Item = u32>) {
    // SAFETY: relationOids is a valid OID list (or null) for the plan's life; an OID list's
    // cells hold oid_value.
    let list = unsafe { (*stmt).relationOids.as_ref() };
    let (n, cells) = list.map_or((0, std::ptr::null()), |l| {
        (l.length.max(0) as usize, l.elements)
    });
    let oids = (0..n)
        // SAFETY: i < the list's length.
        .map(move |i| unsafe { (*cells.add(i)).oid_value.to_u32() })
        .filter(|&oid| oid != 0);
    (n, oids)
}

/// Whether string literals are read as the SQL standard says (backslashes are plain
/// characters). A sample's text taken with this off would be read differently when replayed,
/// so it is not kept then.
pub fn standard_strings() -> bool {
    // SAFETY: a plain global of this backend, maintained by the setting.
    unsafe { pg_sys::standard_conforming_strings }
}

/// When the current statement started (for the per-statement sampling interval).
#[allow(
    ffi_unwind_calls,
    reason = "GetCurrentStatementStartTimestamp only returns a backend global and never raises"
)]
pub fn statement_started_us() -> i64 {
    // SAFETY: reads a field of the current transaction state; never raises.
    unsafe { raw::GetCurrentStatementStartTimestamp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_refuse_what_does_not_fit() {
        let params = vec![
            Param {
                type_oid: 23,
                value: Value::Text("42".into()),
            },
            Param {
                type_oid: 25,
                value: Value::Null,
            },
            Param {
                type_oid: 99999,
                value: Value::Unknown,
            },
        ];
        let bytes = encode(Some("SELECT $1, $2, $3"), &params, &[16384, 16390]).unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            (
                Some("SELECT $1, $2, $3".to_string()),
                params,
                vec![16384, 16390]
            )
        );
        assert!(encode(Some(&"x".repeat(PAYLOAD_BYTES)), &[], &[]).is_none());
    }
}
