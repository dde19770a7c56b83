//! Raising PostgreSQL errors with a SQLSTATE, a message and a hint that says what to do.

use pgrx::pg_sys::elog::PgLogLevel;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;

/// Raise an ERROR; never returns. Unwinds like any pgrx error, so Rust destructors run and the
/// backend stays up.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "optidb");
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// Reject a negative or zero count argument with the SQLSTATE PostgreSQL uses for bad arguments.
pub fn require_positive(name: &str, value: i32) {
    if value <= 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{name} must be a positive integer, got {value}"),
            Some(&format!(
                "Pass {name} => 20, or leave it out to use the default."
            )),
        );
    }
}

/// Raise P0002 unless optidb has a statement with this id; `hint` says where to find ids.
pub fn require_known_query(id: i64, hint: &str) {
    let known = crate::postgres::rows::value::<bool>(
        "statement exists",
        "SELECT EXISTS (SELECT 1 FROM optidb.query WHERE id = $1)",
        &[id.into()],
    )
    .unwrap_or(false);
    if !known {
        raise(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("optidb has no statement with id {id}"),
            Some(hint),
        );
    }
}
