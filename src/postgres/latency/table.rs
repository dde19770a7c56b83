//! The shared-memory latency table: one entry per (queryid, userid, dbid) with exact call and
//! error counts, sum, min and max, and a log-bucketed histogram (optidb_core::histogram).
//!
//! Locking (the pg_stat_statements scheme):
//! - the table is a dynahash protected by one LWLock, only ever held through `Hold` (released
//!   on drop, also while a contained panic unwinds);
//! - lookups take it SHARED; only inserting and evicting take it EXCLUSIVE;
//! - counters are atomics updated under the SHARED hold, so readers and writers of different
//!   entries never wait for each other, and an entry cannot be removed while a backend
//!   updates it;
//! - nothing inside a hold can raise a PostgreSQL error: only the unguarded calls of raw.rs
//!   that report failure by return value, atomics and plain memory. Statement text is built
//!   and redacted before the lock is taken.
//!
//! Full table policy (pg_stat_statements' entry_dealloc): when an insert finds the table full,
//! the 5% least used entries are evicted at once. Usage is calls since the previous eviction
//! plus 0.99 x the usage before, and an entry created since then counts at least the median,
//! so a burst of new statements cannot evict each other one by one. Evictions are counted
//! (optidb.memory()) and logged to the server log at most once a minute, never sent to a
//! user's session.

use super::{lwlock, raw};
use crate::postgres::backend_local::BackendLocal;
use crate::postgres::gucs::Fault;
use optidb_core::histogram::{self, BUCKETS};
use pgrx::pg_sys;
use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Distinct SQLSTATE classes counted per statement; more share the last slot.
pub const ERROR_CLASSES: usize = 6;
/// Bytes kept of the slowest execution's statement text (with its literals, secrets redacted).
pub const SLOWEST_TEXT: usize = 1024;
/// Relations kept per statement (the first ones its plan used): which tenant's table each
/// statement resolved to (`optidb.statement_relation`, src/api/tenant_advice.rs). Where one
/// entry spans schemas (below), 32: a one-table statement records 32 tenants per snapshot
/// for 96 more bytes per entry; elsewhere every execution uses the same tables.
pub const ENTRY_RELATIONS: usize = if QUERYID_SPANS_SCHEMAS { 32 } else { 8 };
/// `relation_count` while one backend writes `relations` (0: not recorded yet; n + 1: n kept).
const RELATIONS_BUSY: u32 = u32::MAX;
/// PostgreSQL 18 computes a queryid from its tables' names, not their OIDs, so one entry spans
/// the same-named tables of every schema it ran in (a schema per tenant, through search_path):
/// its record then grows with each new table, up to ENTRY_RELATIONS, and starts again once
/// stored (`reopen_full_relations`). Before 18 every execution of an entry uses the same tables.
pub const QUERYID_SPANS_SCHEMAS: bool = cfg!(feature = "pg18");
/// The class recorded for a failure whose SQLSTATE is unknown ("??" once unpacked).
pub const UNKNOWN_CLASS: u32 = (b'?' - b'0') as u32 | (((b'?' - b'0') as u32) << 6);

const USAGE_DECAY: f64 = 0.99;
const EVICT_PERCENT: usize = 5;
const EVICTION_LOG_EVERY_US: i64 = 60_000_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub queryid: u64,
    pub userid: u32,
    pub dbid: u32,
}

/// The slowest execution so far: its time and text. Written only when a new maximum occurs,
/// by whoever wins `busy` (a try-lock: a busy writer or reader just skips).
#[repr(C)]
struct Slowest {
    busy: AtomicBool,
    ns: AtomicU64,
    len: AtomicU32,
    /// Only touched by the holder of `busy`.
    text: UnsafeCell<[u8; SLOWEST_TEXT]>,
}

#[repr(C)]
pub struct Entry {
    key: Key, // dynahash requires the key first
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    /// SQLSTATE class (two six-bit characters, as in the packed error code) per slot; 0 = free.
    pub error_class: [AtomicU32; ERROR_CLASSES],
    pub error_count: [AtomicU64; ERROR_CLASSES],
    pub sum_ns: AtomicU64,
    pub min_ns: AtomicU64,
    pub max_ns: AtomicU64,
    /// Min and max since the last snapshot took them (swap), for exact per-interval values.
    pub interval_min_ns: AtomicU64,
    pub interval_max_ns: AtomicU64,
    pub buckets: [AtomicU32; BUCKETS],
    slowest: Slowest,
    /// Statement start time (us since 2000) from which the next typical sample is due.
    sample_due_us: AtomicI64,
    /// The relations its plans used, written by the first execution that finds
    /// `relation_count` 0 and, on PostgreSQL 18 (QUERYID_SPANS_SCHEMAS), by any execution that
    /// used one not kept yet while there is room: 0 unknown, RELATIONS_BUSY being written,
    /// n + 1 when the first n are in `relations`.
    relation_count: AtomicU32,
    relations: [AtomicU32; ENTRY_RELATIONS],
    /// Eviction bookkeeping: only touched under the EXCLUSIVE hold.
    usage: UnsafeCell<f64>,
    calls_at_eviction: UnsafeCell<u64>,
}

// SAFETY: every field is an atomic, or an UnsafeCell whose access rule is stated on the field
// (the busy try-lock, or the exclusive table lock). Entries live in shared memory and are
// shared between processes, which is what Sync describes within one.
unsafe impl Sync for Entry {}

#[repr(C)]
struct Shared {
    lock: *mut pg_sys::LWLock,
    evictions: AtomicU64,
    /// When the last eviction was logged (us since 2000).
    logged_eviction_at: AtomicI64,
    /// Evictions not yet logged.
    unlogged_evictions: AtomicU64,
    /// f64 bits: the median usage at the last eviction. A new entry starts with it, so it is
    /// not the first to go at the next eviction.
    median_usage: AtomicU64,
    /// Bumped (under the exclusive hold) whenever entries are removed: a backend's cached entry
    /// pointers are valid while it has not changed, since dynahash never moves a live entry.
    generation: AtomicU64,
}

static mut SHARED: *mut Shared = std::ptr::null_mut();

/// One entry this backend found, with the table generation it was found in.
#[derive(Clone, Copy)]
struct CachedEntry {
    key: Key,
    entry: *const Entry,
    generation: u64,
}

const ENTRY_CACHE_SLOTS: usize = 64;

/// Entries this backend found lately, by queryid (direct-mapped).
static ENTRY_CACHE: BackendLocal<[CachedEntry; ENTRY_CACHE_SLOTS]> = BackendLocal::new(
    [CachedEntry {
        key: Key {
            queryid: 0,
            userid: 0,
            dbid: 0,
        },
        entry: std::ptr::null(),
        generation: 0,
    }; ENTRY_CACHE_SLOTS],
);
static mut TABLE: *mut pg_sys::HTAB = std::ptr::null_mut();
static mut MAX_ENTRIES: i64 = 0;

const TRANCHE: &CStr = c"optidb_latency";

pub fn shmem_size(max_entries: i64) -> usize {
    // SAFETY: pure arithmetic on the arguments.
    let table = unsafe { pg_sys::hash_estimate_size(max_entries, size_of::<Entry>()) };
    table + size_of::<Shared>()
}

/// From the shmem_request hook.
///
/// # Safety
/// Only in the postmaster's shmem_request hook.
pub unsafe fn request(max_entries: i64) {
    // SAFETY: the postmaster is single-threaded while it loads libraries.
    unsafe {
        MAX_ENTRIES = max_entries;
        pg_sys::RequestAddinShmemSpace(shmem_size(max_entries));
        // The table's lock, the sample ring's (samples.rs) and the failed statements' (failed.rs).
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 3);
    }
}

/// From the shmem_startup hook: attach (and in the postmaster, create) the table and the sample
/// ring. Returns true when this call created the table (the caller then loads saved counters).
///
/// # Safety
/// Only in the shmem_startup hook.
pub unsafe fn attach() -> bool {
    // SAFETY: AddinShmemInitLock serializes creation against every other process attaching;
    // the statics are written by this process only, before any statement runs.
    unsafe {
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        SHARED = pg_sys::ShmemInitStruct(
            c"optidb latency state".as_ptr(),
            size_of::<Shared>(),
            &mut found,
        )
        .cast();
        if !found {
            std::ptr::write(
                SHARED,
                Shared {
                    lock: &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock,
                    evictions: AtomicU64::new(0),
                    logged_eviction_at: AtomicI64::new(0),
                    unlogged_evictions: AtomicU64::new(0),
                    median_usage: AtomicU64::new(0),
                    generation: AtomicU64::new(0),
                },
            );
        }
        let mut info = pg_sys::HASHCTL {
            keysize: size_of::<Key>(),
            entrysize: size_of::<Entry>(),
            hash: Some(key_hash),
            ..Default::default()
        };
        TABLE = pg_sys::ShmemInitHash(
            c"optidb latency table".as_ptr(),
            MAX_ENTRIES,
            MAX_ENTRIES,
            &mut info,
            (pg_sys::HASH_ELEM | pg_sys::HASH_FUNCTION) as i32,
        );
        let locks = pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr());
        super::samples::attach(&raw mut (*locks.add(1)).lock);
        super::failed::attach(&raw mut (*locks.add(2)).lock);
        pg_sys::LWLockRelease(init_lock);
        !found
    }
}

/// The table's hash function. The queryid already is a 64-bit hash of the statement, so folding
/// the user and database into it is enough (generic byte hashing cost ~40 instructions a
/// statement). Pure arithmetic: it cannot fail.
unsafe extern "C-unwind" fn key_hash(key: *const std::ffi::c_void, _size: usize) -> u32 {
    // SAFETY: dynahash passes a pointer to a key of keysize bytes, which is a Key.
    let key = unsafe { &*key.cast::<Key>() };
    let who = ((key.userid as u64) << 32 | key.dbid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mixed = key.queryid ^ who;
    (mixed ^ (mixed >> 32)) as u32
}

pub fn attached() -> bool {
    // SAFETY: set once per process in shmem_startup, before any statement runs.
    unsafe { !SHARED.is_null() && !TABLE.is_null() }
}

fn shared() -> &'static Shared {
    // SAFETY: callers check attached(); the struct lives as long as shared memory.
    unsafe { &*SHARED }
}

/// A hold of the table lock (see lwlock.rs), with the lookups it permits. The inner hold is
/// never read: it is there to be dropped.
struct Hold(#[allow(dead_code)] lwlock::Hold);

impl Hold {
    fn shared() -> Hold {
        // SAFETY: the lock lives in shared memory for the life of the server.
        Hold(unsafe { lwlock::Hold::shared(shared().lock) })
    }

    fn exclusive() -> Hold {
        // SAFETY: as in `shared`.
        Hold(unsafe { lwlock::Hold::exclusive(shared().lock) })
    }

    /// The entry for `key`, valid while this hold lasts.
    #[allow(
        ffi_unwind_calls,
        reason = "hash_search with HASH_FIND reports a missing key by returning NULL and never \
                  raises, so no ERROR can leave the table lock held (see raw.rs)"
    )]
    fn find(&self, key: &Key) -> Option<&Entry> {
        let mut found = false;
        // SAFETY: the table is attached and the lock held; HASH_FIND never raises.
        let entry: *mut Entry = unsafe {
            raw::hash_search(
                TABLE,
                (key as *const Key).cast(),
                pg_sys::HASHACTION::HASH_FIND,
                &mut found,
            )
        }
        .cast();
        // SAFETY: dynahash returns null or a pointer to a live entry; it cannot be removed
        // while this hold (shared or exclusive) exists.
        unsafe { entry.as_ref() }
    }

    /// As `find`, through this backend's cache of entries it found before (a statement's next
    /// execution skips the hash lookup).
    fn find_cached(&self, key: &Key) -> Option<&Entry> {
        let generation = shared().generation.load(Ordering::Relaxed);
        let slot = ENTRY_CACHE.slot(key.queryid as usize % ENTRY_CACHE_SLOTS);
        let cached = slot.get();
        if cached.generation == generation && cached.key == *key && !cached.entry.is_null() {
            // SAFETY: found under a hold of the same generation: no entry was removed since,
            // and dynahash never moves a live entry, so it is still this key's entry.
            return Some(unsafe { &*cached.entry });
        }
        let entry = self.find(key)?;
        slot.set(CachedEntry {
            key: *key,
            entry,
            generation,
        });
        Some(entry)
    }

    /// Every entry, valid while this hold lasts.
    #[allow(
        ffi_unwind_calls,
        reason = "hash_seq_init and hash_seq_search do not raise here (hash_seq_init's one \
                  ERROR needs 100 unfinished scans; this one always ends), so no ERROR can \
                  leave the table lock held (see raw.rs)"
    )]
    fn entries(&self) -> Vec<&Entry> {
        let mut out = Vec::new();
        let mut status = std::mem::MaybeUninit::<pg_sys::HASH_SEQ_STATUS>::uninit();
        // SAFETY: the lock is held, so the table cannot change shape; the scan always runs to
        // the end (dynahash needs no hash_seq_term then). Neither call raises: hash_seq_init's
        // only ERROR is for more than 100 unfinished scans in the backend, and every scan
        // optidb starts is finished right here.
        unsafe {
            raw::hash_seq_init(status.as_mut_ptr(), TABLE);
            loop {
                let e: *mut Entry = raw::hash_seq_search(status.as_mut_ptr()).cast();
                match e.as_ref() {
                    Some(e) => out.push(e),
                    None => break,
                }
            }
        }
        out
    }
}

/// What happened while finding an entry.
#[derive(Default, Clone, Copy)]
pub struct Found {
    /// The table was full and this many entries were evicted to make room.
    pub evicted: usize,
}

/// Run `update` on the entry for `key` (created if needed) while holding the lock SHARED.
/// Does nothing when the table is not attached or no entry could be made.
fn with_entry<R>(key: &Key, update: impl FnOnce(&Entry) -> R) -> (Option<R>, Found) {
    let mut found = Found::default();
    if !attached() {
        return (None, found);
    }
    {
        let hold = Hold::shared();
        if let Some(e) = hold.find_cached(key) {
            return (Some(update(e)), found);
        }
    }
    {
        let hold = Hold::exclusive();
        if hold.find(key).is_none() {
            found.evicted = insert(&hold, key);
        }
    }
    // Continue as a reader: counters are only updated under the shared hold. The entry may
    // have been evicted in between; then this execution is not counted (as in pgss).
    let hold = Hold::shared();
    (hold.find(key).map(update), found)
}

/// Make a fresh entry for `key` (exclusive hold), evicting first when the table is full.
/// Returns how many entries were evicted.
#[allow(
    ffi_unwind_calls,
    reason = "hash_get_num_entries reads a counter, and HASH_ENTER_NULL on a shared table \
              reports out of memory by returning NULL: neither raises under the lock (see raw.rs)"
)]
fn insert(hold: &Hold, key: &Key) -> usize {
    // SAFETY: hold is exclusive; hash_get_num_entries reads a counter.
    let full = unsafe { raw::hash_get_num_entries(TABLE) } >= unsafe { MAX_ENTRIES };
    let evicted = if full { evict(hold) } else { 0 };
    let mut existed = false;
    // SAFETY: exclusive hold; HASH_ENTER_NULL on a shared table reports "out of memory" by
    // returning null instead of raising.
    let entry: *mut Entry = unsafe {
        raw::hash_search(
            TABLE,
            (key as *const Key).cast(),
            pg_sys::HASHACTION::HASH_ENTER_NULL,
            &mut existed,
        )
    }
    .cast();
    if !entry.is_null() && !existed {
        // SAFETY: a new entry of entrysize bytes whose key dynahash already wrote; zero every
        // counter (all-zero bytes are valid for atomics, UnsafeCell<f64/u64/[u8]>), then set
        // the extremes. Nobody else sees it before the exclusive hold ends.
        unsafe {
            std::ptr::write_bytes(
                (entry as *mut u8).add(size_of::<Key>()),
                0,
                size_of::<Entry>() - size_of::<Key>(),
            );
            let e = &*entry;
            e.min_ns.store(u64::MAX, Ordering::Relaxed);
            e.interval_min_ns.store(u64::MAX, Ordering::Relaxed);
            *e.usage.get() = f64::from_bits(shared().median_usage.load(Ordering::Relaxed));
        }
    }
    evicted
}

/// Evict the EVICT_PERCENT% least used entries (at least one). Exclusive hold.
#[allow(
    ffi_unwind_calls,
    reason = "hash_search with HASH_REMOVE of a key just read from the table never raises, so \
              no ERROR can leave the table lock held (see raw.rs)"
)]
fn evict(hold: &Hold) -> usize {
    let mut scored: Vec<(f64, Key)> = hold
        .entries()
        .into_iter()
        .map(|e| {
            // SAFETY: usage and calls_at_eviction are only touched under the exclusive hold.
            unsafe {
                let calls = e.calls.load(Ordering::Relaxed) + e.errors.load(Ordering::Relaxed);
                let new_calls = calls.saturating_sub(*e.calls_at_eviction.get());
                let usage = *e.usage.get() * USAGE_DECAY + new_calls as f64;
                *e.usage.get() = usage;
                *e.calls_at_eviction.get() = calls;
                (usage, e.key)
            }
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((median, _)) = scored.get(scored.len() / 2) {
        shared()
            .median_usage
            .store(median.to_bits(), Ordering::Relaxed);
    }
    let victims = (scored.len() * EVICT_PERCENT / 100)
        .max(1)
        .min(scored.len());
    shared().generation.fetch_add(1, Ordering::Relaxed);
    for (_, key) in &scored[..victims] {
        let mut found = false;
        // SAFETY: exclusive hold; HASH_REMOVE of an existing key never raises.
        unsafe {
            raw::hash_search(
                TABLE,
                (key as *const Key).cast(),
                pg_sys::HASHACTION::HASH_REMOVE,
                &mut found,
            );
        }
    }
    let s = shared();
    s.evictions.fetch_add(victims as u64, Ordering::Relaxed);
    s.unlogged_evictions
        .fetch_add(victims as u64, Ordering::Relaxed);
    victims
}

/// Log evictions not logged yet, at most once a minute across the cluster, to the server log
/// only. Called outside any hold and never while an error is being reported.
pub fn log_evictions(now_us: i64) {
    if !attached() {
        return;
    }
    let s = shared();
    if s.unlogged_evictions.load(Ordering::Relaxed) == 0 {
        return;
    }
    let last = s.logged_eviction_at.load(Ordering::Relaxed);
    if now_us - last < EVICTION_LOG_EVERY_US
        || s.logged_eviction_at
            .compare_exchange(last, now_us, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let n = s.unlogged_evictions.swap(0, Ordering::Relaxed);
    // SAFETY: MAX_ENTRIES is set once at startup.
    let max = unsafe { MAX_ENTRIES };
    // LOG_SERVER_ONLY: the server log, never the client of whichever statement got here.
    pgrx::ereport!(
        pgrx::PgLogLevel::LOG_SERVER_ONLY,
        pgrx::PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!(
            "optidb evicted {n} least used statements from its latency table ({max} entries); \
             raise optidb.max_statements to keep more"
        )
    );
}

// A locked read-modify-write costs ~20 ns even uncontended; after warm-up the extremes rarely
// change, so a plain load first keeps the hot path to the three counters that always move.
fn fetch_min(a: &AtomicU64, v: u64) {
    if v < a.load(Ordering::Relaxed) {
        a.fetch_min(v, Ordering::Relaxed);
    }
}

fn fetch_max(a: &AtomicU64, v: u64) {
    if v > a.load(Ordering::Relaxed) {
        a.fetch_max(v, Ordering::Relaxed);
    }
}

/// What recording one execution asks of the caller, who acts on it outside the lock.
#[derive(Default, Clone, Copy)]
pub struct Recorded {
    /// The slowest execution so far: call `keep_slowest` with its text.
    pub slowest: bool,
    /// A typical sample of this statement is due (see samples.rs).
    pub sample_due: bool,
    /// Relations it used are not recorded yet: call `keep_relations`.
    pub relations_due: bool,
    pub found: Found,
}

/// Count one successful execution of `elapsed_ns`. Samples are due every `sample_every_us`
/// (0: never), measured on statement start times from `now` (asked for only then). `fault` is
/// raised while the lock is held (tests). `plan_relations`: the first relations its plan used,
/// given only where an entry spans schemas (QUERYID_SPANS_SCHEMAS).
pub fn record_success(
    key: Key,
    elapsed_ns: u64,
    sample_every_us: i64,
    fault: Fault,
    now: impl FnOnce() -> i64,
    plan_relations: &[u32],
) -> Recorded {
    let (recorded, found) = with_entry(&key, |e| {
        if fault != Fault::None {
            inject(fault);
        }
        e.calls.fetch_add(1, Ordering::Relaxed);
        e.sum_ns.fetch_add(elapsed_ns, Ordering::Relaxed);
        fetch_min(&e.min_ns, elapsed_ns);
        fetch_max(&e.max_ns, elapsed_ns);
        fetch_min(&e.interval_min_ns, elapsed_ns);
        fetch_max(&e.interval_max_ns, elapsed_ns);
        e.buckets[histogram::bucket_of_ns(elapsed_ns)].fetch_add(1, Ordering::Relaxed);
        let sample_due = sample_every_us > 0 && {
            let (now, due) = (now(), e.sample_due_us.load(Ordering::Relaxed));
            // One backend wins the sample of each interval.
            now >= due
                && e.sample_due_us
                    .compare_exchange(
                        due,
                        now + sample_every_us,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
        };
        Recorded {
            slowest: elapsed_ns > e.slowest.ns.load(Ordering::Relaxed),
            sample_due,
            relations_due: relations_due(e, plan_relations),
            found: Found::default(),
        }
    });
    Recorded {
        found,
        ..recorded.unwrap_or_default()
    }
}

/// Fail as optidb.fault_injection says (tests), out of line: the common path stays short.
#[cold]
#[inline(never)]
fn inject(fault: Fault) {
    match fault {
        Fault::None | Fault::Families => {}
        Fault::Panic => panic!("optidb.fault_injection = panic"),
        Fault::Error => pgrx::error!("optidb.fault_injection = error"),
    }
}

/// Whether an execution that used `plan_relations` adds to the entry's record: none kept yet,
/// or (QUERYID_SPANS_SCHEMAS) one of them is new and there is room.
fn relations_due(e: &Entry, plan_relations: &[u32]) -> bool {
    match e.relation_count.load(Ordering::Relaxed) {
        0 => true,
        RELATIONS_BUSY => false,
        count => QUERYID_SPANS_SCHEMAS && adds_relations(e, count, plan_relations),
    }
}

/// Whether `relations` holds one the entry (with `count`) has not kept, and there is room.
fn adds_relations(e: &Entry, count: u32, relations: &[u32]) -> bool {
    let kept = &e.relations[..(count as usize - 1).min(ENTRY_RELATIONS)];
    kept.len() < ENTRY_RELATIONS
        && relations
            .iter()
            .any(|oid| !kept.iter().any(|r| r.load(Ordering::Relaxed) == *oid))
}

/// Add the relations of `relations` (OIDs a plan used) that the entry has not kept, up to
/// ENTRY_RELATIONS, unless another execution is writing them.
pub fn keep_relations(key: Key, relations: &[u32]) {
    with_entry(&key, |e| {
        let count = e.relation_count.load(Ordering::Acquire);
        let due = match count {
            0 => true,
            RELATIONS_BUSY => false,
            _ => adds_relations(e, count, relations),
        };
        if !due
            || e.relation_count
                .compare_exchange(count, RELATIONS_BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut n = (count.saturating_sub(1) as usize).min(ENTRY_RELATIONS);
        for oid in relations {
            if n == ENTRY_RELATIONS {
                break;
            }
            if !e.relations[..n]
                .iter()
                .any(|r| r.load(Ordering::Relaxed) == *oid)
            {
                e.relations[n].store(*oid, Ordering::Relaxed);
                n += 1;
            }
        }
        e.relation_count.store(n as u32 + 1, Ordering::Release);
    });
}

/// Where an entry spans schemas (QUERYID_SPANS_SCHEMAS), let the full records of database
/// `dbid`'s entries just stored (`stored`), start again, so later passes record tenants beyond the first ENTRY_RELATIONS. A
/// full record is never written (`adds_relations`), so nothing is lost in between.
pub fn reopen_full_relations(dbid: u32, stored: impl Fn(&Key) -> bool) {
    if !QUERYID_SPANS_SCHEMAS || !attached() {
        return;
    }
    let full = ENTRY_RELATIONS as u32 + 1;
    let hold = Hold::shared();
    for e in hold.entries() {
        if e.key.dbid == dbid && stored(&e.key) {
            let _ =
                e.relation_count
                    .compare_exchange(full, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The relations each entry of database `dbid` used, for entries that recorded some.
pub fn read_relations(dbid: u32) -> Vec<(Key, Vec<u32>)> {
    if !attached() {
        return Vec::new();
    }
    let hold = Hold::shared();
    hold.entries()
        .into_iter()
        .filter(|e| e.key.dbid == dbid)
        .filter_map(|e| {
            let count = e.relation_count.load(Ordering::Acquire);
            if count < 2 || count == RELATIONS_BUSY {
                return None;
            }
            let n = (count as usize - 1).min(ENTRY_RELATIONS);
            let oids = e.relations[..n]
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .collect();
            Some((e.key, oids))
        })
        .collect()
}

/// Keep `text` as the slowest execution's text if `elapsed_ns` still is the slowest.
pub fn keep_slowest(key: Key, elapsed_ns: u64, text: &str) {
    let mut len = text.len().min(SLOWEST_TEXT);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    with_entry(&key, |e| {
        store_slowest(e, elapsed_ns, &text.as_bytes()[..len])
    });
}

fn store_slowest(e: &Entry, elapsed_ns: u64, bytes: &[u8]) {
    let s = &e.slowest;
    if s.busy.swap(true, Ordering::Acquire) {
        return;
    }
    if elapsed_ns > s.ns.load(Ordering::Relaxed) {
        // SAFETY: we hold `busy`, the only permission to touch `text`; bytes.len() <= SLOWEST_TEXT.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), s.text.get().cast::<u8>(), bytes.len())
        };
        s.len.store(bytes.len() as u32, Ordering::Relaxed);
        s.ns.store(elapsed_ns, Ordering::Relaxed);
    }
    s.busy.store(false, Ordering::Release);
}

fn read_slowest(e: &Entry) -> Option<(u64, String)> {
    let s = &e.slowest;
    if s.busy.swap(true, Ordering::Acquire) {
        return None;
    }
    let len = (s.len.load(Ordering::Relaxed) as usize).min(SLOWEST_TEXT);
    let out = (len > 0).then(|| {
        // SAFETY: we hold `busy`, the only permission to touch `text`; the first `len` bytes
        // (len <= SLOWEST_TEXT) were written whole under it.
        let bytes = unsafe { &(&*s.text.get())[..len] };
        (
            s.ns.load(Ordering::Relaxed),
            String::from_utf8_lossy(bytes).into_owned(),
        )
    });
    s.busy.store(false, Ordering::Release);
    out
}

/// Count one failure with its SQLSTATE class (the low 12 bits of the packed error code, or
/// UNKNOWN_CLASS). Runs during transaction abort: it never logs anything itself.
pub fn record_failure(key: Key, class: u32) -> Found {
    with_entry(&key, |e| {
        e.errors.fetch_add(1, Ordering::Relaxed);
        let mut slot = ERROR_CLASSES - 1;
        for (i, c) in e.error_class.iter().enumerate() {
            match c.compare_exchange(0, class, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    slot = i;
                    break;
                }
                Err(existing) if existing == class => {
                    slot = i;
                    break;
                }
                Err(_) => {}
            }
        }
        e.error_count[slot].fetch_add(1, Ordering::Relaxed);
    })
    .1
}

/// A consistent-enough copy of one entry (each counter read atomically).
#[derive(Debug, PartialEq)]
pub struct EntryCopy {
    pub key: Key,
    pub calls: u64,
    pub errors: u64,
    pub error_classes: Vec<(String, u64)>,
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub interval_min_ns: u64,
    pub interval_max_ns: u64,
    pub buckets: Vec<u32>,
    /// Time and text of the slowest execution so far, if captured.
    pub slowest: Option<(u64, String)>,
}

pub fn class_text(class: u32) -> String {
    let c1 = ((class & 0x3F) as u8 + b'0') as char;
    let c2 = (((class >> 6) & 0x3F) as u8 + b'0') as char;
    format!("{c1}{c2}")
}

/// Inverse of `class_text`.
pub fn class_code(text: &str) -> u32 {
    let b = text.as_bytes();
    let six = |i: usize| (b.get(i).copied().unwrap_or(b'0').wrapping_sub(b'0') & 0x3F) as u32;
    six(0) | six(1) << 6
}

fn copy(e: &Entry, take_interval: bool) -> EntryCopy {
    let (imin, imax) = if take_interval {
        (
            e.interval_min_ns.swap(u64::MAX, Ordering::Relaxed),
            e.interval_max_ns.swap(0, Ordering::Relaxed),
        )
    } else {
        (
            e.interval_min_ns.load(Ordering::Relaxed),
            e.interval_max_ns.load(Ordering::Relaxed),
        )
    };
    EntryCopy {
        key: e.key,
        calls: e.calls.load(Ordering::Relaxed),
        errors: e.errors.load(Ordering::Relaxed),
        error_classes: e
            .error_class
            .iter()
            .zip(&e.error_count)
            .filter(|(c, _)| c.load(Ordering::Relaxed) != 0)
            .map(|(c, n)| {
                (
                    class_text(c.load(Ordering::Relaxed)),
                    n.load(Ordering::Relaxed),
                )
            })
            .collect(),
        sum_ns: e.sum_ns.load(Ordering::Relaxed),
        min_ns: e.min_ns.load(Ordering::Relaxed),
        max_ns: e.max_ns.load(Ordering::Relaxed),
        interval_min_ns: imin,
        interval_max_ns: imax,
        buckets: e
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        slowest: read_slowest(e),
    }
}

/// Copy every entry (of `dbid`, or all when None). `take_interval` resets the per-interval
/// min/max, which only the snapshot job should do.
pub fn read_all(dbid: Option<u32>, take_interval: bool) -> Vec<EntryCopy> {
    if !attached() {
        return Vec::new();
    }
    let hold = Hold::shared();
    hold.entries()
        .into_iter()
        .filter(|e| dbid.is_none_or(|d| d == e.key.dbid))
        .map(|e| copy(e, take_interval))
        .collect()
}

/// Restore one saved entry (dump.rs), at startup before any backend runs.
pub fn restore(saved: &EntryCopy) {
    let key = saved.key;
    with_entry(&key, |e| {
        e.calls.store(saved.calls, Ordering::Relaxed);
        e.errors.store(saved.errors, Ordering::Relaxed);
        e.sum_ns.store(saved.sum_ns, Ordering::Relaxed);
        e.min_ns.store(saved.min_ns, Ordering::Relaxed);
        e.max_ns.store(saved.max_ns, Ordering::Relaxed);
        for (i, (class, n)) in saved.error_classes.iter().take(ERROR_CLASSES).enumerate() {
            e.error_class[i].store(class_code(class), Ordering::Relaxed);
            e.error_count[i].store(*n, Ordering::Relaxed);
        }
        for (b, n) in e.buckets.iter().zip(&saved.buckets) {
            b.store(*n, Ordering::Relaxed);
        }
        if let Some((ns, text)) = &saved.slowest {
            let len = text.len().min(SLOWEST_TEXT);
            store_slowest(e, *ns, &text.as_bytes()[..len]);
        }
    });
}

pub struct Usage {
    pub entries: i64,
    pub max_entries: i64,
    pub entry_bytes: i64,
    pub shmem_bytes: i64,
    pub evictions: i64,
}

#[allow(
    ffi_unwind_calls,
    reason = "hash_get_num_entries only reads a counter and never raises (see raw.rs)"
)]
pub fn usage() -> Option<Usage> {
    if !attached() {
        return None;
    }
    let entries = {
        let _hold = Hold::shared();
        // SAFETY: the table is attached and the lock held.
        unsafe { raw::hash_get_num_entries(TABLE) }
    };
    // SAFETY: set once at startup.
    let max_entries = unsafe { MAX_ENTRIES };
    Some(Usage {
        entries,
        max_entries,
        entry_bytes: size_of::<Entry>() as i64,
        shmem_bytes: shmem_size(max_entries) as i64,
        evictions: shared().evictions.load(Ordering::Relaxed) as i64,
    })
}
