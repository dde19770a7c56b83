//! Settings changed for one piece of work and restored after it: a GUC nest level of optidb's
//! own (`NewGUCNestLevel`), popped however the work ends. The caller's session settings are
//! never altered. This is the only way optidb changes a setting temporarily (`read_only`: the
//! one setting PostgreSQL keeps out of nest levels).
//!
//! The level is popped as PostgreSQL's restricted operations pop theirs (REFRESH MATERIALIZED
//! VIEW, VACUUM: `AtEOXact_GUC(false, ...)`): a plain SET run by code inside the work (a
//! replayed statement's functions) is undone too, not merged into the session.
//!
//! Rule: call `with` inside the subtransaction (if any) that may roll back the work, so the
//! level is pushed and popped within it.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;

/// One setting and who is changing it.
pub struct Setting<'a> {
    name: &'a str,
    value: &'a str,
    context: pg_sys::GucContext::Type,
}

impl<'a> Setting<'a> {
    /// A setting any user may change (`plan_cache_mode`, `search_path`, `lock_timeout`, ...).
    pub fn user(name: &'a str, value: &'a str) -> Self {
        Setting {
            name,
            value,
            context: pg_sys::GucContext::PGC_USERSET,
        }
    }

    /// A superuser-only setting optidb changes for its own work whoever calls it: only ever
    /// with a constant name and value (pg_stat_statements.track = none around optidb's own
    /// statements).
    pub fn internal(name: &'a str, value: &'a str) -> Self {
        Setting {
            name,
            value,
            context: pg_sys::GucContext::PGC_SUSET,
        }
    }

    fn apply(&self) {
        let name = CString::new(self.name).expect("setting names have no NUL");
        let value = CString::new(self.value).unwrap_or_else(|_| {
            crate::postgres::errors::raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("the value for {} contains a NUL byte", self.name),
                None,
            )
        });
        // SAFETY: a guarded call (an ERROR, such as an invalid value, comes back as a Rust
        // panic) with NUL-terminated name and value that outlive it; GUC_ACTION_SAVE records the
        // old value at the current nest level, which `with` pushed and pops.
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                self.context,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
    }
}

/// True when the setting exists in this backend (a library's setting only once it is loaded).
pub fn exists(name: &str) -> bool {
    let name = CString::new(name).expect("setting names have no NUL");
    // SAFETY: a guarded call with a NUL-terminated name; missing_ok makes an unknown setting
    // come back as NULL instead of an ERROR, and the value itself is not read.
    unsafe { !pg_sys::GetConfigOption(name.as_ptr(), true, false).is_null() }
}

/// Run `work` with `settings` in effect; every one of them is restored afterwards, also when
/// `work` raises an error.
pub fn with<R>(settings: &[Setting], work: impl FnOnce() -> R) -> R {
    // SAFETY: a guarded call that only increments this backend's GUC nest level; the level is
    // popped by AtEOXact_GUC below however `work` ends.
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    PgTryBuilder::new(AssertUnwindSafe(|| {
        for setting in settings {
            setting.apply();
        }
        work()
    }))
    // SAFETY: a guarded call popping the level pushed above, in the same (sub)transaction
    // (the module's rule); `false` undoes every setting made at or inside it.
    .finally(|| unsafe { pg_sys::AtEOXact_GUC(false, nest) })
    .execute()
}

/// Run `work` in a read-only transaction state, as `SET TRANSACTION READ ONLY` would, and
/// restore the previous state however it ends. The flag behind transaction_read_only is set
/// directly: since PostgreSQL 16 that setting refuses a nest level ("cannot be set locally in
/// functions"). Code inside `work` cannot turn it off: PostgreSQL refuses read-write mode
/// inside a subtransaction or after the first snapshot.
pub fn read_only<R>(work: impl FnOnce() -> R) -> R {
    // SAFETY: XactReadOnly is this backend's own transaction flag, read and written only by
    // this (single) thread; it is restored below however `work` ends.
    let was = unsafe { pg_sys::XactReadOnly };
    PgTryBuilder::new(AssertUnwindSafe(|| {
        // SAFETY: as above.
        unsafe { pg_sys::XactReadOnly = true };
        work()
    }))
    // SAFETY: as above.
    .finally(|| unsafe { pg_sys::XactReadOnly = was })
    .execute()
}
