//! Persistence of the latency table across a clean restart: the postmaster writes every entry
//! (counters, histogram, failures per SQLSTATE class, the slowest execution's text) to
//! `pg_stat/optidb_latency.stat` at clean shutdown and reads it back, then deletes it, at start,
//! so a crash never reloads stale counters (history already snapshotted into optidb.latency is
//! kept either way).
//!
//! The file starts with a magic number, the format version, the PostgreSQL major version and
//! the histogram size; a file that does not match is ignored with a LOG line. It is written to
//! a temporary name, fsynced and renamed into place with `durable_rename`, so a crash while
//! writing leaves either the old file or none, never a torn one.

use super::table::{self, EntryCopy, Key, ERROR_CLASSES, SLOWEST_TEXT};
use optidb_core::histogram::BUCKETS;
use pgrx::pg_sys;
use std::ffi::CString;
use std::io::{Read, Write};

const FILE: &str = "pg_stat/optidb_latency.stat";
const MAGIC: u64 = 0x6f70_7469_6462_6c74; // "optidblt"
const FORMAT: u64 = 3;

/// One entry in the file: fixed size, little-endian.
const ENTRY_BYTES: usize = 8 * 8 + ERROR_CLASSES * 16 + 16 + SLOWEST_TEXT + BUCKETS * 4;

fn server_major() -> u64 {
    pg_sys::PG_VERSION_NUM as u64 / 10_000
}

/// Registered in the postmaster: write the file at clean shutdown.
pub fn register() {
    // SAFETY: called from the shmem_startup hook of the postmaster.
    unsafe { pg_sys::on_shmem_exit(Some(save_at_exit), pg_sys::Datum::from(0)) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn save_at_exit(code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // Only a clean shutdown writes the file; after a crash the counters start afresh.
    if code != 0 || !table::attached() {
        return;
    }
    if let Err(e) = save() {
        pgrx::log!("optidb: could not save latency counters: {e}");
    }
}

fn encode(e: &EntryCopy, out: &mut Vec<u8>) {
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
            .map_or((0, 0), |(c, n)| (table::class_code(c), *n));
        words.extend([class as u64, n]);
    }
    let (slowest_ns, text) = e
        .slowest
        .as_ref()
        .map_or((0, ""), |(ns, t)| (*ns, t.as_str()));
    let text = &text.as_bytes()[..text.len().min(SLOWEST_TEXT)];
    words.extend([slowest_ns, text.len() as u64]);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(text);
    out.resize(out.len() + SLOWEST_TEXT - text.len(), 0);
    for b in &e.buckets {
        out.extend_from_slice(&b.to_le_bytes());
    }
}

fn decode(chunk: &[u8]) -> EntryCopy {
    let w = |i: usize| u64::from_le_bytes(chunk[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let slowest_at = 8 + ERROR_CLASSES * 2;
    let text_at = (slowest_at + 2) * 8;
    let text_len = (w(slowest_at + 1) as usize).min(SLOWEST_TEXT);
    let text = String::from_utf8_lossy(&chunk[text_at..text_at + text_len]).into_owned();
    let buckets_at = text_at + SLOWEST_TEXT;
    EntryCopy {
        key: Key {
            queryid: w(0),
            userid: w(1) as u32,
            dbid: w(2) as u32,
        },
        calls: w(3),
        errors: w(4),
        sum_ns: w(5),
        min_ns: w(6),
        max_ns: w(7),
        error_classes: (0..ERROR_CLASSES)
            .filter(|i| w(8 + 2 * i) != 0)
            .map(|i| (table::class_text(w(8 + 2 * i) as u32), w(9 + 2 * i)))
            .collect(),
        interval_min_ns: u64::MAX,
        interval_max_ns: 0,
        buckets: (0..BUCKETS)
            .map(|i| {
                let at = buckets_at + i * 4;
                u32::from_le_bytes(chunk[at..at + 4].try_into().expect("4 bytes"))
            })
            .collect(),
        slowest: (text_len > 0).then(|| (w(slowest_at), text)),
    }
}

fn header(entries: usize) -> Vec<u8> {
    [
        MAGIC,
        FORMAT,
        server_major(),
        BUCKETS as u64,
        entries as u64,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect()
}

fn save() -> std::io::Result<()> {
    let entries = table::read_all(None, false);
    let mut bytes = header(entries.len());
    for e in &entries {
        encode(e, &mut bytes);
    }
    let tmp = format!("{FILE}.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    let (from, to) = (CString::new(tmp)?, CString::new(FILE)?);
    // SAFETY: two NUL-terminated paths; LOG level reports failure by return value.
    let rc = unsafe { pg_sys::durable_rename(from.as_ptr(), to.as_ptr(), pg_sys::LOG as i32) };
    if rc != 0 {
        return Err(std::io::Error::other("durable_rename failed (see the log)"));
    }
    Ok(())
}

/// In the postmaster, right after the table was created: load and delete the file.
pub fn load() {
    let Ok(mut f) = std::fs::File::open(FILE) else {
        return;
    };
    let mut bytes = Vec::new();
    let ok = f.read_to_end(&mut bytes).is_ok();
    // Never reload the same file twice (a crash after this must not resurrect it).
    let _ = std::fs::remove_file(FILE);
    if !ok {
        return;
    }
    let expected = header(0);
    let fixed = expected.len() - 8;
    if bytes.len() < expected.len() || bytes[..fixed] != expected[..fixed] {
        pgrx::log!("optidb: ignoring {FILE}: written by another optidb or PostgreSQL version");
        return;
    }
    let count = u64::from_le_bytes(bytes[fixed..expected.len()].try_into().expect("8 bytes"));
    let body = &bytes[expected.len()..];
    if body.len() as u64 != count * ENTRY_BYTES as u64 {
        pgrx::log!("optidb: ignoring {FILE}: truncated");
        return;
    }
    for chunk in body.chunks_exact(ENTRY_BYTES) {
        table::restore(&decode(chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_survives_encoding() {
        let mut buckets = vec![0u32; BUCKETS];
        buckets[3] = 7;
        buckets[BUCKETS - 1] = 1;
        let e = EntryCopy {
            key: Key {
                queryid: 42,
                userid: 10,
                dbid: 5,
            },
            calls: 8,
            errors: 2,
            error_classes: vec![("22".into(), 1), ("57".into(), 1)],
            sum_ns: 1234,
            min_ns: 5,
            max_ns: 900,
            interval_min_ns: u64::MAX,
            interval_max_ns: 0,
            buckets,
            slowest: Some((900, "SELECT 1 / 0".into())),
        };
        let mut bytes = Vec::new();
        encode(&e, &mut bytes);
        assert_eq!(bytes.len(), ENTRY_BYTES);
        let back = decode(&bytes);
        assert_eq!(back.key, e.key);
        assert_eq!((back.calls, back.errors, back.sum_ns), (8, 2, 1234));
        assert_eq!(back.error_classes, e.error_classes);
        assert_eq!(back.buckets, e.buckets);
        assert_eq!(back.slowest, e.slowest);
    }
}
