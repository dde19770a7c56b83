//! A hold of one of optidb's LWLocks, released when dropped: the one way optidb takes them.
//!
//! Drop is safe during unwinding (a contained panic in the bookkeeping): LWLockRelease never
//! raises. Nothing that can raise a PostgreSQL error runs while a hold exists, so a hold is
//! never skipped by a longjmp either. (Even so, PostgreSQL releases every LWLock at
//! transaction abort; a hold leaked past that point would be a bug, not a hang.)

use super::raw;
use pgrx::pg_sys;

pub struct Hold {
    lock: *mut pg_sys::LWLock,
}

impl Hold {
    /// # Safety
    /// `lock` points to an LWLock in shared memory.
    pub unsafe fn shared(lock: *mut pg_sys::LWLock) -> Hold {
        // SAFETY: the caller guarantees the lock; acquiring waits, it never raises.
        unsafe { raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED) };
        Hold { lock }
    }

    /// # Safety
    /// `lock` points to an LWLock in shared memory.
    pub unsafe fn exclusive(lock: *mut pg_sys::LWLock) -> Hold {
        // SAFETY: as in `shared`.
        unsafe { raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        Hold { lock }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // SAFETY: this hold acquired the lock; LWLockRelease never raises.
        unsafe { raw::LWLockRelease(self.lock) }
    }
}
