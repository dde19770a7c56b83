//! State private to one backend process (nesting levels, the statement in flight, ...).
//!
//! A PostgreSQL backend runs optidb's code on a single thread, so a plain `Cell` in a static is
//! enough; `thread_local!` would cost a TLS lookup on every statement in a shared library.

use std::cell::Cell;

pub struct BackendLocal<T>(Cell<T>);

// SAFETY: PostgreSQL backends are single-threaded, and optidb never touches these from another
// thread (its background worker is a process of its own).
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T: Copy> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        BackendLocal(Cell::new(value))
    }

    #[inline]
    pub fn get(&self) -> T {
        self.0.get()
    }

    #[inline]
    pub fn set(&self, value: T) {
        self.0.set(value)
    }

    /// The value, leaving `empty` in its place.
    pub fn replace(&self, empty: T) -> T {
        self.0.replace(empty)
    }
}

impl<T: Copy, const N: usize> BackendLocal<[T; N]> {
    /// Element `i` of an array kept here (panics when out of bounds).
    #[inline]
    pub fn slot(&self, i: usize) -> &Cell<T> {
        &self.0.as_array_of_cells()[i]
    }
}
