//! The shared-memory latency table: one entry per (queryid, userid, dbid) with exact call and
//! error counts, sum, min and max, and a log-bucketed histogram (optidb_core::histogram).
//!
//! Locking (the pg_stat_statements scheme):
//! - the table itself is a dynahash protected by one LWLock;
//! - lookups take it SHARED; only inserting (and evicting) takes it EXCLUSIVE;
//! - counters are atomics, updated while holding the lock SHARED, so readers and writers of
//!   different entries never wait for each other, and an entry cannot be removed while a
//!   backend updates it.
//!
//! Full table policy: a statement never waits or fails because of us. When the table holds
//! `optidb.max_statements` entries, the entry with the fewest calls is evicted to make room,
//! the eviction is counted, and the first one logs a WARNING suggesting a larger setting.
//!
//! Persistence: the postmaster writes the table (counters, histograms, failures per SQLSTATE
//! class, the slowest execution's text) to `pg_stat/optidb_latency.stat` at clean shutdown and
//! reads it back (then deletes it) at start, so a crash never reloads stale counters; history
//! already snapshotted into optidb.latency is kept.

use super::raw;
use optidb_core::histogram::{self, BUCKETS};
use pgrx::pg_sys;
use std::ffi::CStr;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Distinct SQLSTATE classes counted per statement; more share the last slot.
pub const ERROR_CLASSES: usize = 6;
/// Bytes kept of the slowest execution's statement text (with its literals, secrets redacted).
pub const SLOWEST_TEXT: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub queryid: u64,
    pub userid: u32,
    pub dbid: u32,
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
    /// The slowest execution so far: its time and text. Written only when a new maximum
    /// occurs, under `slowest_busy` (a try-lock: a busy writer or reader just skips).
    slowest_busy: AtomicBool,
    slowest_ns: AtomicU64,
    slowest_len: AtomicU32,
    slowest_text: [u8; SLOWEST_TEXT],
}

#[repr(C)]
struct Shared {
    lock: *mut pg_sys::LWLock,
    evictions: AtomicU64,
    warned: AtomicBool,
}

static mut SHARED: *mut Shared = std::ptr::null_mut();
static mut TABLE: *mut pg_sys::HTAB = std::ptr::null_mut();
static mut MAX_ENTRIES: i64 = 0;

const TRANCHE: &CStr = c"optidb_latency";
const DUMP_FILE: &str = "pg_stat/optidb_latency.stat";
const DUMP_MAGIC: u64 = 0x6f70_7469_6462_0002;

pub fn shmem_size(max_entries: i64) -> usize {
    let table = unsafe { pg_sys::hash_estimate_size(max_entries, size_of::<Entry>()) };
    table + size_of::<Shared>()
}

/// From the shmem_request hook.
pub unsafe fn request(max_entries: i64) {
    MAX_ENTRIES = max_entries;
    pg_sys::RequestAddinShmemSpace(shmem_size(max_entries));
    pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
}

/// From the shmem_startup hook: attach (and in the postmaster, create and load) the table.
pub unsafe fn attach() {
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
                warned: AtomicBool::new(false),
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
    pg_sys::LWLockRelease(init_lock);

    if !pg_sys::IsUnderPostmaster {
        pg_sys::on_shmem_exit(Some(save_at_exit), pg_sys::Datum::from(0));
        if !found {
            load();
        }
    }
}

/// The table's hash function. The queryid already is a 64-bit hash of the statement, so folding
/// the user and database into it is enough (generic byte hashing cost ~40 instructions a
/// statement). Pure arithmetic: it cannot fail.
unsafe extern "C-unwind" fn key_hash(key: *const std::ffi::c_void, _size: usize) -> u32 {
    let key = &*key.cast::<Key>();
    let who = ((key.userid as u64) << 32 | key.dbid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mixed = key.queryid ^ who;
    (mixed ^ (mixed >> 32)) as u32
}

pub fn attached() -> bool {
    unsafe { !SHARED.is_null() && !TABLE.is_null() }
}

fn lock() -> *mut pg_sys::LWLock {
    unsafe { (*SHARED).lock }
}

unsafe fn find(key: &Key) -> *mut Entry {
    let mut found = false;
    raw::hash_search(
        TABLE,
        (key as *const Key).cast(),
        pg_sys::HASHACTION::HASH_FIND,
        &mut found,
    )
    .cast()
}

/// What happened while finding an entry.
#[derive(Default)]
struct Found {
    /// A new entry was made.
    created: bool,
    /// The table was full and its least used entry was evicted for this one.
    evicted: bool,
}

/// Find or create the entry for `key`, holding the lock SHARED on return (entry non-null), or
/// with the lock released when no entry could be made. Never raises: the calls it makes report
/// failure by return value.
unsafe fn find_or_insert(key: &Key, found: &mut Found) -> *mut Entry {
    raw::LWLockAcquire(lock(), pg_sys::LWLockMode::LW_SHARED);
    let entry = find(key);
    if !entry.is_null() {
        return entry;
    }
    raw::LWLockRelease(lock());
    raw::LWLockAcquire(lock(), pg_sys::LWLockMode::LW_EXCLUSIVE);
    if pg_sys::hash_get_num_entries(TABLE) >= MAX_ENTRIES {
        found.evicted = evict_least_used();
    }
    let mut existed = false;
    let entry: *mut Entry = raw::hash_search(
        TABLE,
        (key as *const Key).cast(),
        pg_sys::HASHACTION::HASH_ENTER_NULL,
        &mut existed,
    )
    .cast();
    if !entry.is_null() && !existed {
        // Zero every counter (atomics are plain integers in memory), then set the extremes.
        std::ptr::write_bytes(
            (entry as *mut u8).add(size_of::<Key>()),
            0,
            size_of::<Entry>() - size_of::<Key>(),
        );
        (*entry).min_ns.store(u64::MAX, Ordering::Relaxed);
        (*entry).interval_min_ns.store(u64::MAX, Ordering::Relaxed);
        found.created = true;
    }
    // Continue as a reader: counters are updated under the shared lock only.
    raw::LWLockRelease(lock());
    if entry.is_null() {
        return entry;
    }
    raw::LWLockAcquire(lock(), pg_sys::LWLockMode::LW_SHARED);
    let again = find(key);
    if again.is_null() {
        raw::LWLockRelease(lock());
    }
    again
}

/// Exclusive lock held. Linear scan: only runs when the table is full. True if one was evicted.
unsafe fn evict_least_used() -> bool {
    let mut status = std::mem::MaybeUninit::<pg_sys::HASH_SEQ_STATUS>::uninit();
    pg_sys::hash_seq_init(status.as_mut_ptr(), TABLE);
    let mut victim: Option<(Key, u64)> = None;
    loop {
        let e: *mut Entry = pg_sys::hash_seq_search(status.as_mut_ptr()).cast();
        if e.is_null() {
            break;
        }
        let used = (*e).calls.load(Ordering::Relaxed) + (*e).errors.load(Ordering::Relaxed);
        if victim.is_none_or(|(_, v)| used < v) {
            victim = Some(((*e).key, used));
        }
    }
    let Some((key, _)) = victim else {
        return false;
    };
    let mut found = false;
    raw::hash_search(
        TABLE,
        (&key as *const Key).cast(),
        pg_sys::HASHACTION::HASH_REMOVE,
        &mut found,
    );
    (*SHARED).evictions.fetch_add(1, Ordering::Relaxed);
    true
}

/// The first eviction since start logs one WARNING (not while an error is being reported,
/// where raising another message would recurse; a later eviction then reports it).
fn warn_first_eviction() {
    unsafe {
        if !(*SHARED).warned.swap(true, Ordering::Relaxed) {
            let max = MAX_ENTRIES;
            pgrx::warning!(
                "optidb latency table is full ({} statements): evicting the least used; \
                 raise optidb.max_statements to keep more",
                max
            );
        }
    }
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

/// Run `update` on the entry for `key` (created if needed) while holding the table lock shared.
/// Does nothing when the table is not attached or no entry could be made.
fn with_entry(key: &Key, update: impl FnOnce(&Entry)) -> Found {
    let mut found = Found::default();
    if !attached() {
        return found;
    }
    unsafe {
        let e = find_or_insert(key, &mut found);
        if !e.is_null() {
            // Released however `update` ends: the hooks contain panics and go on, and a shared
            // hold left behind would block every later insertion.
            let _hold = SharedHold;
            update(&*e);
        }
    }
    found
}

/// Releases the table lock held SHARED when dropped.
struct SharedHold;

impl Drop for SharedHold {
    fn drop(&mut self) {
        unsafe { raw::LWLockRelease(lock()) }
    }
}

/// Count one successful execution of `elapsed_ns`. `text` is asked for only when this is the
/// slowest execution so far (rare after warm-up), so the hot path never builds it.
pub fn record_success(key: Key, elapsed_ns: u64, text: impl FnOnce() -> Option<String>) {
    let found = with_entry(&key, |e| {
        e.calls.fetch_add(1, Ordering::Relaxed);
        e.sum_ns.fetch_add(elapsed_ns, Ordering::Relaxed);
        fetch_min(&e.min_ns, elapsed_ns);
        fetch_max(&e.max_ns, elapsed_ns);
        fetch_min(&e.interval_min_ns, elapsed_ns);
        fetch_max(&e.interval_max_ns, elapsed_ns);
        e.buckets[histogram::bucket_of(elapsed_ns as f64 / 1000.0)].fetch_add(1, Ordering::Relaxed);
        if elapsed_ns > e.slowest_ns.load(Ordering::Relaxed) {
            unsafe { keep_slowest(e as *const Entry as *mut Entry, elapsed_ns, text) };
        }
    });
    if found.evicted {
        warn_first_eviction();
    }
}

unsafe fn keep_slowest(e: *mut Entry, elapsed_ns: u64, text: impl FnOnce() -> Option<String>) {
    let Some(text) = text() else { return };
    if (*e).slowest_busy.swap(true, Ordering::Acquire) {
        return;
    }
    if elapsed_ns > (*e).slowest_ns.load(Ordering::Relaxed) {
        let mut len = text.len().min(SLOWEST_TEXT);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        std::ptr::copy_nonoverlapping(
            text.as_ptr(),
            (&raw mut (*e).slowest_text).cast::<u8>(),
            len,
        );
        (*e).slowest_len.store(len as u32, Ordering::Relaxed);
        (*e).slowest_ns.store(elapsed_ns, Ordering::Relaxed);
    }
    (*e).slowest_busy.store(false, Ordering::Release);
}

unsafe fn read_slowest(e: &Entry) -> Option<(u64, String)> {
    if e.slowest_busy.swap(true, Ordering::Acquire) {
        return None;
    }
    let len = e.slowest_len.load(Ordering::Relaxed) as usize;
    let out = (len > 0).then(|| {
        (
            e.slowest_ns.load(Ordering::Relaxed),
            String::from_utf8_lossy(&e.slowest_text[..len.min(SLOWEST_TEXT)]).into_owned(),
        )
    });
    e.slowest_busy.store(false, Ordering::Release);
    out
}

/// Count one failure with its SQLSTATE class (the low 12 bits of the packed error code).
/// Called while the error is being reported, so it never logs anything itself.
pub fn record_failure(key: Key, class: u32) {
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
    });
}

/// A consistent-enough copy of one entry (each counter read atomically).
pub struct Snapshot {
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

fn class_text(class: u32) -> String {
    let c1 = ((class & 0x3F) as u8 + b'0') as char;
    let c2 = (((class >> 6) & 0x3F) as u8 + b'0') as char;
    format!("{c1}{c2}")
}

/// Inverse of `class_text`.
fn class_code(text: &str) -> u32 {
    let b = text.as_bytes();
    let six = |i: usize| (b.get(i).copied().unwrap_or(b'0').wrapping_sub(b'0') & 0x3F) as u32;
    six(0) | six(1) << 6
}

/// Copy every entry (of `dbid`, or all when None). `take_interval` resets the per-interval
/// min/max, which only the snapshot job should do.
pub fn read_all(dbid: Option<u32>, take_interval: bool) -> Vec<Snapshot> {
    if !attached() {
        return Vec::new();
    }
    let mut out = Vec::new();
    unsafe {
        pg_sys::LWLockAcquire(lock(), pg_sys::LWLockMode::LW_SHARED);
        let mut status = std::mem::MaybeUninit::<pg_sys::HASH_SEQ_STATUS>::uninit();
        pg_sys::hash_seq_init(status.as_mut_ptr(), TABLE);
        loop {
            let e: *mut Entry = pg_sys::hash_seq_search(status.as_mut_ptr()).cast();
            if e.is_null() {
                break;
            }
            let e = &*e;
            if dbid.is_some_and(|d| d != e.key.dbid) {
                continue;
            }
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
            out.push(Snapshot {
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
            });
        }
        pg_sys::LWLockRelease(lock());
    }
    out
}

pub struct Usage {
    pub entries: i64,
    pub max_entries: i64,
    pub entry_bytes: i64,
    pub shmem_bytes: i64,
    pub evictions: i64,
}

pub fn usage() -> Option<Usage> {
    if !attached() {
        return None;
    }
    unsafe {
        pg_sys::LWLockAcquire(lock(), pg_sys::LWLockMode::LW_SHARED);
        let entries = pg_sys::hash_get_num_entries(TABLE);
        pg_sys::LWLockRelease(lock());
        Some(Usage {
            entries,
            max_entries: MAX_ENTRIES,
            entry_bytes: size_of::<Entry>() as i64,
            shmem_bytes: shmem_size(MAX_ENTRIES) as i64,
            evictions: (*SHARED).evictions.load(Ordering::Relaxed) as i64,
        })
    }
}

// ---- persistence (postmaster only) ----

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn save_at_exit(code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // Only a clean shutdown writes the file; after a crash the counters start afresh.
    if code != 0 || !attached() {
        return;
    }
    if let Err(e) = save() {
        pgrx::log!("optidb: could not save latency counters: {e}");
    }
}

/// One entry in the dump file: fixed size, little-endian.
const DUMP_ENTRY: usize = 8 * 8 + ERROR_CLASSES * 16 + 16 + SLOWEST_TEXT + BUCKETS * 4;

fn save() -> std::io::Result<()> {
    let tmp = format!("{DUMP_FILE}.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let entries = read_all(None, false);
    f.write_all(&DUMP_MAGIC.to_le_bytes())?;
    f.write_all(&(BUCKETS as u64).to_le_bytes())?;
    f.write_all(&(entries.len() as u64).to_le_bytes())?;
    for e in &entries {
        let mut words = vec![
            e.key.queryid,
            e.key.userid as u64,
            e.key.dbid as u64,
            e.calls,
            e.errors,
            e.sum_ns,
            e.min_ns,
            e.max_ns,
        ];
        for i in 0..ERROR_CLASSES {
            let (class, n) = e
                .error_classes
                .get(i)
                .map_or((0, 0), |(c, n)| (class_code(c), *n));
            words.extend([class as u64, n]);
        }
        let (slowest_ns, text) = e
            .slowest
            .as_ref()
            .map_or((0, ""), |(ns, t)| (*ns, t.as_str()));
        let text = &text.as_bytes()[..text.len().min(SLOWEST_TEXT)];
        words.extend([slowest_ns, text.len() as u64]);
        for w in words {
            f.write_all(&w.to_le_bytes())?;
        }
        f.write_all(text)?;
        f.write_all(&vec![0; SLOWEST_TEXT - text.len()])?;
        for b in &e.buckets {
            f.write_all(&b.to_le_bytes())?;
        }
    }
    f.flush()?;
    drop(f);
    std::fs::rename(tmp, DUMP_FILE)
}

unsafe fn load() {
    let Ok(mut f) = std::fs::File::open(DUMP_FILE) else {
        return;
    };
    let mut bytes = Vec::new();
    let ok = f.read_to_end(&mut bytes).is_ok();
    // Never reload the same file twice (a crash after this must not resurrect it).
    let _ = std::fs::remove_file(DUMP_FILE);
    if !ok {
        return;
    }
    let mut words = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()));
    if words.next() != Some(DUMP_MAGIC) || words.next() != Some(BUCKETS as u64) {
        pgrx::log!("optidb: ignoring {DUMP_FILE}: written by another version");
        return;
    }
    let Some(count) = words.next() else { return };
    let body = &bytes[24..];
    if body.len() != count as usize * DUMP_ENTRY {
        pgrx::log!("optidb: ignoring {DUMP_FILE}: truncated");
        return;
    }
    for chunk in body.chunks_exact(DUMP_ENTRY) {
        let w = |i: usize| u64::from_le_bytes(chunk[i * 8..i * 8 + 8].try_into().unwrap());
        let key = Key {
            queryid: w(0),
            userid: w(1) as u32,
            dbid: w(2) as u32,
        };
        let slowest_at = 8 + ERROR_CLASSES * 2;
        let text_at = (slowest_at + 2) * 8;
        let text_len = (w(slowest_at + 1) as usize).min(SLOWEST_TEXT);
        let text = String::from_utf8_lossy(&chunk[text_at..text_at + text_len]).into_owned();
        let buckets_at = text_at + SLOWEST_TEXT;
        with_entry(&key, |e| {
            e.calls.store(w(3), Ordering::Relaxed);
            e.errors.store(w(4), Ordering::Relaxed);
            e.sum_ns.store(w(5), Ordering::Relaxed);
            e.min_ns.store(w(6), Ordering::Relaxed);
            e.max_ns.store(w(7), Ordering::Relaxed);
            for i in 0..ERROR_CLASSES {
                e.error_class[i].store(w(8 + 2 * i) as u32, Ordering::Relaxed);
                e.error_count[i].store(w(9 + 2 * i), Ordering::Relaxed);
            }
            for (i, b) in e.buckets.iter().enumerate() {
                let at = buckets_at + i * 4;
                b.store(
                    u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap()),
                    Ordering::Relaxed,
                );
            }
            if text_len > 0 {
                keep_slowest(e as *const Entry as *mut Entry, w(slowest_at), || {
                    Some(text)
                });
            }
        });
    }
}
