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

/// The file's format version, and the entry layout it stands for: how many fields and bytes.
/// Add, remove or resize a field in `FIELDS` and the assertion below stops the build until the
/// version is bumped and its layout recorded here: a file of the old layout is then refused
/// with a LOG line instead of being read at the wrong offsets.
const FORMAT: u64 = 3;
const FORMAT_LAYOUT: (usize, usize) = (11, 5656);

/// One field of an entry in the file (fixed size, little-endian). The writer and the reader
/// both walk `FIELDS`, so they cannot disagree on an offset.
struct Field {
    bytes: usize,
    /// Writes the field into exactly `bytes` zeroed bytes.
    put: fn(&EntryCopy, &mut [u8]),
    /// Reads it back from those bytes.
    get: fn(&mut EntryCopy, &[u8]),
}

/// A counter stored as 8 bytes (the OIDs too: widened, narrowed back on reading).
macro_rules! word {
    ($($field:ident).+ as $t:ty) => {
        Field {
            bytes: 8,
            put: |e, out| out.copy_from_slice(&(e.$($field).+ as u64).to_le_bytes()),
            get: |e, b| e.$($field).+ = u64_at(b, 0) as $t,
        }
    };
}

/// The entry's fields in file order.
const FIELDS: &[Field] = &[
    word!(key.queryid as u64),
    word!(key.userid as u32),
    word!(key.dbid as u32),
    word!(calls as u64),
    word!(errors as u64),
    word!(sum_ns as u64),
    word!(min_ns as u64),
    word!(max_ns as u64),
    Field {
        bytes: ERROR_CLASSES * 16,
        put: put_error_classes,
        get: get_error_classes,
    },
    Field {
        bytes: 16 + SLOWEST_TEXT,
        put: put_slowest,
        get: get_slowest,
    },
    Field {
        bytes: BUCKETS * 4,
        put: put_buckets,
        get: get_buckets,
    },
];

/// Bytes of one entry: the sum of its fields' sizes.
const ENTRY_BYTES: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < FIELDS.len() {
        total += FIELDS[i].bytes;
        i += 1;
    }
    total
};

const _: () = assert!(
    FORMAT_LAYOUT.0 == FIELDS.len() && FORMAT_LAYOUT.1 == ENTRY_BYTES,
    "the latency dump's fields changed: bump FORMAT and record the new FORMAT_LAYOUT"
);

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

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Up to ERROR_CLASSES (class code, failures) pairs; an unused pair is (0, 0).
fn put_error_classes(e: &EntryCopy, out: &mut [u8]) {
    for (i, (class, n)) in e.error_classes.iter().take(ERROR_CLASSES).enumerate() {
        put_u64(out, i * 16, table::class_code(class) as u64);
        put_u64(out, i * 16 + 8, *n);
    }
}

fn get_error_classes(e: &mut EntryCopy, b: &[u8]) {
    e.error_classes = (0..ERROR_CLASSES)
        .map(|i| (u64_at(b, i * 16), u64_at(b, i * 16 + 8)))
        .filter(|(class, _)| *class != 0)
        .map(|(class, n)| (table::class_text(class as u32), n))
        .collect();
}

/// The slowest execution's time, its text's length and the text, zero-padded to SLOWEST_TEXT.
fn put_slowest(e: &EntryCopy, out: &mut [u8]) {
    let (ns, text) = e
        .slowest
        .as_ref()
        .map_or((0, ""), |(ns, t)| (*ns, t.as_str()));
    let text = &text.as_bytes()[..text.len().min(SLOWEST_TEXT)];
    put_u64(out, 0, ns);
    put_u64(out, 8, text.len() as u64);
    out[16..16 + text.len()].copy_from_slice(text);
}

fn get_slowest(e: &mut EntryCopy, b: &[u8]) {
    let len = (u64_at(b, 8) as usize).min(SLOWEST_TEXT);
    let text = String::from_utf8_lossy(&b[16..16 + len]).into_owned();
    e.slowest = (len > 0).then(|| (u64_at(b, 0), text));
}

fn put_buckets(e: &EntryCopy, out: &mut [u8]) {
    for (slot, n) in out.chunks_exact_mut(4).zip(&e.buckets) {
        slot.copy_from_slice(&n.to_le_bytes());
    }
}

fn get_buckets(e: &mut EntryCopy, b: &[u8]) {
    e.buckets = b
        .chunks_exact(4)
        .map(|n| u32::from_le_bytes(n.try_into().expect("4 bytes")))
        .collect();
}

fn encode(e: &EntryCopy, out: &mut Vec<u8>) {
    let mut at = out.len();
    out.resize(at + ENTRY_BYTES, 0);
    for f in FIELDS {
        (f.put)(e, &mut out[at..at + f.bytes]);
        at += f.bytes;
    }
}

fn decode(chunk: &[u8]) -> EntryCopy {
    let mut e = EntryCopy {
        key: Key {
            queryid: 0,
            userid: 0,
            dbid: 0,
        },
        calls: 0,
        errors: 0,
        error_classes: Vec::new(),
        sum_ns: 0,
        min_ns: 0,
        max_ns: 0,
        // The interval extremes are not kept: the first snapshot after start reads afresh.
        interval_min_ns: u64::MAX,
        interval_max_ns: 0,
        buckets: Vec::new(),
        slowest: None,
    };
    let mut at = 0;
    for f in FIELDS {
        (f.get)(&mut e, &chunk[at..at + f.bytes]);
        at += f.bytes;
    }
    e
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
    match parse(&bytes) {
        Ok(entries) => entries.iter().for_each(table::restore),
        Err(why) => pgrx::log!("optidb: ignoring {FILE}: {why}"),
    }
}

/// The entries of a whole file, or why it cannot be read: another magic number, format
/// version, PostgreSQL major or histogram size than this build's, or a torn body. Nothing
/// is restored from a file that does not match in full.
fn parse(bytes: &[u8]) -> Result<Vec<EntryCopy>, String> {
    let expected = header(0);
    let fixed = expected.len() - 8;
    if bytes.len() < 8 || u64_at(bytes, 0) != MAGIC {
        return Err("not an optidb latency file".into());
    }
    if bytes.len() < expected.len() || bytes[..fixed] != expected[..fixed] {
        let found = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .map_or("none".into(), |_| u64_at(bytes, i * 8).to_string())
        };
        return Err(format!(
            "written by another optidb or PostgreSQL version (format {}, major {}, {} buckets; \
             this server reads format {FORMAT}, major {}, {BUCKETS} buckets)",
            found(1),
            found(2),
            found(3),
            server_major(),
        ));
    }
    let count = u64_at(bytes, fixed);
    let body = &bytes[expected.len()..];
    if count.checked_mul(ENTRY_BYTES as u64) != Some(body.len() as u64) {
        return Err(format!(
            "truncated: {count} entries announced, {} bytes",
            body.len()
        ));
    }
    Ok(body.chunks_exact(ENTRY_BYTES).map(decode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two entries, every field set in the first: the ones in testdata/latency_entries_v3.bin
    /// (written by the format-3 code before the field list existed).
    fn entries() -> Vec<EntryCopy> {
        let mut buckets = vec![0u32; BUCKETS];
        buckets[3] = 7;
        buckets[BUCKETS - 1] = 1;
        let mut quiet = vec![0u32; BUCKETS];
        quiet[0] = 1;
        quiet[500] = 2;
        vec![
            EntryCopy {
                key: Key {
                    queryid: 0xF123_4567_89AB_CDEF,
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
                slowest: Some((900, "SELECT 1 / 0 -- \u{e9}".into())),
            },
            EntryCopy {
                key: Key {
                    queryid: 7,
                    userid: u32::MAX,
                    dbid: 16384,
                },
                calls: 3,
                errors: 0,
                error_classes: vec![],
                sum_ns: 30,
                min_ns: 9,
                max_ns: 12,
                interval_min_ns: u64::MAX,
                interval_max_ns: 0,
                buckets: quiet,
                slowest: None,
            },
        ]
    }

    fn file(entries: &[EntryCopy]) -> Vec<u8> {
        let mut bytes = header(entries.len());
        entries.iter().for_each(|e| encode(e, &mut bytes));
        bytes
    }

    #[test]
    fn entries_survive_writing_and_reading() {
        let written = entries();
        let bytes = file(&written);
        assert_eq!(bytes.len(), header(0).len() + 2 * ENTRY_BYTES);
        assert_eq!(parse(&bytes), Ok(written));
    }

    /// The bytes of format 3 are frozen: a field added, moved or resized without a new FORMAT
    /// (and FORMAT_LAYOUT) fails here, as files written by the previous build would be misread.
    #[test]
    fn format_3_files_still_read_byte_for_byte() {
        let frozen = include_bytes!("testdata/latency_entries_v3.bin");
        assert_eq!(
            FORMAT, 3,
            "a new format: freeze its own bytes in testdata/ and keep this one refused"
        );
        let mut bytes = Vec::new();
        entries().iter().for_each(|e| encode(e, &mut bytes));
        assert!(
            bytes == frozen,
            "format 3 is written differently than before"
        );
        let read: Vec<_> = frozen.chunks_exact(ENTRY_BYTES).map(decode).collect();
        assert_eq!(read, entries());
    }

    #[test]
    fn a_file_of_another_format_or_torn_is_refused_whole() {
        let good = file(&entries());
        let mut older = good.clone();
        older[8..16].copy_from_slice(&(FORMAT - 1).to_le_bytes());
        let err = parse(&older).unwrap_err();
        assert!(err.contains(&format!("format {}", FORMAT - 1)), "{err}");
        assert_eq!(
            parse(&good[..good.len() - 1]).unwrap_err(),
            format!(
                "truncated: 2 entries announced, {} bytes",
                2 * ENTRY_BYTES - 1
            )
        );
        let mut huge = good.clone();
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&huge).unwrap_err().starts_with("truncated"));
        assert_eq!(
            parse(&good[..20]).unwrap_err().split(' ').next(),
            Some("written")
        );
        assert_eq!(parse(b"junk").unwrap_err(), "not an optidb latency file");
        assert_eq!(parse(&[0u8; 64]).unwrap_err(), "not an optidb latency file");
    }
}
