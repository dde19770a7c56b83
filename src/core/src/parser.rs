//! Every call into libpg_query goes through here.
//!
//! libpg_query recurses in C with no stack-depth check (about 2 kB per nesting level when it
//! writes a parse tree out): `a+a+...` a few thousand terms deep, which PostgreSQL itself
//! accepts and pg_stat_statements keeps, overflowed a backend's 8 MB stack and took the whole
//! server down when any role's statement was ingested. So each call runs on a thread of its own
//! with a large stack (virtual memory, committed only as it is used), and a text with more
//! tokens than that stack can nest is refused before it is parsed: a nesting level takes at
//! least two tokens, so `MAX_TOKENS` bounds the depth at 50,000 levels.
//! Parse trees handed back are at most 100 levels deep (prost's decoding limit), so the Rust
//! code walking them recurses little.

use pg_query::{Error, Fingerprint, ParseResult, Result};
use std::cell::Cell;

/// Stack of the parsing thread: ample for `MAX_TOKENS / 2` levels at 2 kB each.
const STACK_BYTES: usize = 256 << 20;
/// Longest text, in tokens, that is parsed at all.
pub const MAX_TOKENS: usize = 100_000;

pub fn parse(sql: &str) -> Result<ParseResult> {
    on_large_stack(|| within_limit(sql).and_then(|()| pg_query::parse(sql)))
}

pub fn fingerprint(sql: &str) -> Result<Fingerprint> {
    on_large_stack(|| within_limit(sql).and_then(|()| pg_query::fingerprint(sql)))
}

pub fn normalize(sql: &str) -> Result<String> {
    on_large_stack(|| within_limit(sql).and_then(|()| pg_query::normalize(sql)))
}

/// The scanner does not recurse: no thread needed.
pub fn scan(sql: &str) -> Result<pg_query::protobuf::ScanResult> {
    pg_query::scan(sql)
}

pub fn deparse(tree: &pg_query::protobuf::ParseResult) -> Result<String> {
    on_large_stack(|| pg_query::deparse(tree))
}

/// Run `work`, which may make many of the calls above, on one parsing thread: each call inside
/// runs there directly instead of starting a thread of its own (starting one, with its large
/// stack, costs several times what parsing a short statement does). Each call still starts from
/// the shallow stack of `work`, so it has the whole large stack to itself.
pub fn batch<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T> {
    on_large_stack(|| Ok(work()))
}

thread_local! {
    /// True on a parsing thread (which already has the large stack).
    static ON_PARSER_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn within_limit(sql: &str) -> Result<()> {
    let tokens = pg_query::scan(sql)?.tokens.len();
    if tokens > MAX_TOKENS {
        return Err(Error::Parse(format!(
            "statement too long to analyze: {tokens} tokens (at most {MAX_TOKENS})"
        )));
    }
    Ok(())
}

/// Run `work` on a new thread with a `STACK_BYTES` stack and every signal blocked there (the
/// server's signal handlers must run on its own thread), and wait for it. A panic inside comes
/// back as a panic here; a thread that cannot be started is a parse failure.
fn on_large_stack<T: Send>(work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if ON_PARSER_THREAD.with(Cell::get) {
        return work();
    }
    let blocked = BlockedSignals::new();
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("optidb-parser".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, || {
                ON_PARSER_THREAD.with(|on| on.set(true));
                work()
            });
        // The new thread inherited the blocked mask: the caller's can be restored now.
        drop(blocked);
        match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => Err(Error::Parse(format!(
                "could not start the parser thread: {e}"
            ))),
        }
    })
}

/// All signals blocked on this thread until dropped (a thread created meanwhile keeps them
/// blocked); pending ones are delivered when the previous mask is restored.
struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask only write the sets
        // they are given, and pthread_sigmask affects this thread only.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
            BlockedSignals(previous)
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores this thread's mask saved by `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(terms: usize) -> String {
        format!("SELECT id FROM t WHERE (v{}) = 7", "+v".repeat(terms))
    }

    #[test]
    fn deeply_nested_statements_are_parsed_or_refused_never_overflow() {
        // 4,000 levels crashed the server; 40,000 is past what PostgreSQL accepts by default.
        for terms in [4_000, 40_000] {
            let sql = chain(terms);
            assert!(fingerprint(&sql).is_ok(), "{terms}");
            assert!(normalize(&sql).is_ok(), "{terms}");
            // Parsing itself succeeds; handing the tree back stops at prost's depth limit.
            let parsed = parse(&sql);
            assert!(parsed.is_err(), "{terms}");
        }
        let refused = parse(&chain(MAX_TOKENS)).unwrap_err().to_string();
        assert!(refused.contains("too long to analyze"), "{refused}");
        assert!(parse("SELECT 1").is_ok());
    }

    #[test]
    fn a_batch_runs_every_call_on_one_parsing_thread_each_with_the_large_stack() {
        let outcome = batch(|| {
            let here = std::thread::current().id();
            let deep = fingerprint(&chain(40_000)).is_ok() && normalize(&chain(40_000)).is_ok();
            let simple = parse("SELECT 1").is_ok();
            // A call inside runs where it is called, with no thread of its own.
            let inner = on_large_stack(|| Ok(std::thread::current().id())).unwrap();
            (deep, simple, here, inner)
        })
        .unwrap();
        assert!(outcome.0 && outcome.1);
        assert_eq!(outcome.2, outcome.3);
        assert_ne!(outcome.2, std::thread::current().id());
        // Outside a batch, calls start their own thread again.
        assert!(!ON_PARSER_THREAD.with(Cell::get));
    }

    #[test]
    fn a_panic_inside_the_parser_thread_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| on_large_stack::<()>(|| panic!("inside")));
        assert!(caught.is_err());
    }
}
