//! `optidb.can_see(owner oid)`: may the current user see statements run by role `owner`? The rule
//! row-level security and the metric views apply (sql/security.sql, sql/views.sql): members of
//! `owner`, of optidb_admin and of pg_read_all_stats may (superusers are members of every role).
//!
//! In Rust rather than SQL: the SQL version needs an EXISTS, which the planner will not inline,
//! so it ran as a SQL function per row (reading 5,000 rows of query_metrics took 13 ms instead
//! of 0.5 ms). This is a few lookups in caches PostgreSQL keeps per backend, and it resolves no
//! names through search_path.

use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_extern(stable, parallel_safe, strict)]
fn can_see(owner: pg_sys::Oid) -> bool {
    // SAFETY: guarded calls (an ERROR comes back as a Rust panic) that only read this backend's
    // current user and its role-membership cache; member_of_admin has no precondition beyond
    // running in a backend with a transaction, which an SQL function call always has.
    unsafe {
        let me = pg_sys::GetUserId();
        if pg_sys::is_member_of_role(me, owner)
            || pg_sys::is_member_of_role(me, pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS))
        {
            return true;
        }
        member_of_admin(me)
    }
}

/// Member of optidb_admin (superusers are members of every role).
unsafe fn member_of_admin(role: pg_sys::Oid) -> bool {
    // SAFETY: guarded calls with a NUL-terminated static name; missing_ok makes a missing
    // optidb_admin come back as InvalidOid (checked) instead of an ERROR, and
    // is_member_of_role only reads the backend's role-membership cache (in a transaction).
    unsafe {
        let admin = pg_sys::get_role_oid(c"optidb_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::is_member_of_role(role, admin)
    }
}

/// Is the role that called optidb (the session's current role, as SET ROLE left it) a member of
/// optidb_admin? Read inside SECURITY DEFINER functions, where the current user is optidb's
/// owner: EXECUTE on simulate() may be granted to others, its real mode stays for admins.
pub fn caller_is_admin() -> bool {
    // SAFETY: GetOuterUserId reads a backend global; member_of_admin needs a backend in a
    // transaction, which every caller (an optidb SQL function) is.
    unsafe { member_of_admin(pg_sys::GetOuterUserId()) }
}
