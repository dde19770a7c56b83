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
        // SAFETY: passed on from the caller.
        unsafe { Hold::acquire(lock, pg_sys::LWLockMode::LW_SHARED) }
    }

    /// # Safety
    /// `lock` points to an LWLock in shared memory.
    pub unsafe fn exclusive(lock: *mut pg_sys::LWLock) -> Hold {
        // SAFETY: passed on from the caller.
        unsafe { Hold::acquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE) }
    }

    /// # Safety
    /// `lock` points to an LWLock in shared memory.
    #[allow(
        ffi_unwind_calls,
        reason = "LWLockAcquire waits rather than raising; its one ERROR (over 200 LWLocks held \
                  at once) cannot occur with optidb holding at most one (see raw.rs)"
    )]
    unsafe fn acquire(lock: *mut pg_sys::LWLock, mode: pg_sys::LWLockMode::Type) -> Hold {
        // SAFETY: the caller guarantees `lock` is an LWLock in shared memory. LWLockAcquire
        // waits for it; its only ERROR ("too many LWLocks taken", MAX_SIMUL_LWLOCKS) cannot
        // occur, since optidb never holds more than one of its locks and never takes one inside
        // code that holds many.
        unsafe { raw::LWLockAcquire(lock, mode) };
        Hold { lock }
    }
}

impl Drop for Hold {
    #[allow(
        ffi_unwind_calls,
        reason = "LWLockRelease of a lock this hold acquired never raises, so it is also safe \
                  while a panic unwinds (see the module comment)"
    )]
    fn drop(&mut self) {
        // SAFETY: this hold acquired the lock, and nothing that can raise runs while it exists
        // (so transaction abort cannot have released it first): LWLockRelease finds it held
        // and does not raise ("lock is not held" is its only ERROR).
        unsafe { raw::LWLockRelease(self.lock) }
    }
}
