//! Which plan advice should rest on: the generic plan (parameters unknown) or the custom plan
//! made for a typical sampled execution's real values.
//!
//! PostgreSQL plans every execution of a statement sent with literals (simple protocol) with
//! its values, and prepared statements with their values for the first five executions and
//! whenever a custom plan is estimated cheaper. So the custom plan of a typical execution is
//! what usually runs; the generic plan wins only when it predicts the rows executions actually
//! return better than the custom plan does (the sampled values being unrepresentative).
//!
//! Two rules come before that comparison, so that what failed or was guessed is never the
//! evidence while a plan made from real values exists:
//! 1. a generic plan that failed (normalized text that does not re-plan) is never the basis
//!    when the sampled execution's plan exists (the caller passes no generic rows then);
//! 2. when a scan's row estimate in the generic plan is one of PostgreSQL's default
//!    selectivity guesses (selfuncs.h: 0.5% for equality, range and pattern matches, 1/3 for
//!    an inequality, 1% for matching; applied once or twice) of the table's rows, and the
//!    custom plan's estimate for the same scan differs, the custom plan is the basis: the
//!    generic number is what PostgreSQL assumes when it knows nothing of the value, the
//!    custom one comes from the column's statistics and the real value, whatever the top
//!    node's rows say.

use serde::Serialize;

/// The chosen plan and why, in words that go into the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub custom: bool,
    pub reason: String,
}

/// One scan both plans made of the same relation: its estimated rows in each, and the table's
/// rows as the catalog knows them (pg_class.reltuples).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanEstimates {
    pub relation: String,
    pub generic_rows: f64,
    pub custom_rows: f64,
    pub table_rows: f64,
}

/// PostgreSQL's default selectivities (selfuncs.h): DEFAULT_EQ_SEL, DEFAULT_RANGE_INEQ_SEL,
/// DEFAULT_MATCH_SEL and DEFAULT_UNK_SEL (all 0.005), DEFAULT_MATCHING_SEL, DEFAULT_INEQ_SEL.
const DEFAULT_SELECTIVITIES: [f64; 3] = [0.005, 0.010, 1.0 / 3.0];

/// Tables smaller than this are left out: their estimates round to a handful of rows, so any
/// selectivity looks like a default one.
const GUESS_MIN_TABLE_ROWS: f64 = 10_000.0;

/// Whether `rows` is PostgreSQL's default guess for a filter on a table of `table_rows`: one
/// default selectivity, or two of them combined (two guessed conditions ANDed), times the
/// table's rows, within the rounding of the estimate (1%, at least one row).
pub fn is_default_guess(rows: f64, table_rows: f64) -> bool {
    if table_rows < GUESS_MIN_TABLE_ROWS || rows <= 0.0 {
        return false;
    }
    let singles = DEFAULT_SELECTIVITIES.iter().copied();
    let pairs = DEFAULT_SELECTIVITIES
        .iter()
        .flat_map(|a| DEFAULT_SELECTIVITIES.iter().map(move |b| a * b));
    singles.chain(pairs).any(|sel| {
        let guess = (table_rows * sel).round().max(1.0);
        (rows - guess).abs() <= (guess * 0.01).max(1.0)
    })
}

/// The first scan whose generic estimate is a default guess and whose custom estimate differs
/// from it (by more than 10%), as words for the evidence.
fn guessed_scan(scans: &[ScanEstimates]) -> Option<String> {
    scans
        .iter()
        .find(|s| {
            is_default_guess(s.generic_rows, s.table_rows)
                && miss(s.generic_rows, s.custom_rows) > 1.1
        })
        .map(|s| {
            format!(
                "the generic plan's estimate for the scan of {} ({:.0} of {:.0} rows) is \
                 PostgreSQL's default selectivity guess; the custom plan for a typical sampled \
                 execution expects {:.0} from the column statistics and the real value, so it \
                 is used",
                s.relation, s.generic_rows, s.table_rows, s.custom_rows
            )
        })
}

/// `choose`, after rule 2 of the module comment: a generic plan whose scans rest on default
/// selectivity guesses where the custom plan's do not is never the basis.
pub fn choose_with_scans(
    generic_rows: f64,
    custom_rows: Option<f64>,
    observed_rows: Option<f64>,
    scans: &[ScanEstimates],
) -> Choice {
    match (custom_rows, guessed_scan(scans)) {
        (Some(_), Some(reason)) => Choice {
            custom: true,
            reason,
        },
        _ => choose(generic_rows, custom_rows, observed_rows),
    }
}

/// How far an estimate is from what happened, as a factor (>= 1).
fn miss(estimated: f64, observed: f64) -> f64 {
    let (e, o) = (estimated.max(1.0), observed.max(1.0));
    (e / o).max(o / e)
}

/// `generic_rows` and `custom_rows`: rows the top plan node is expected to return;
/// `observed_rows`: rows per execution measured (pg_stat_statements), when known.
pub fn choose(generic_rows: f64, custom_rows: Option<f64>, observed_rows: Option<f64>) -> Choice {
    let Some(custom) = custom_rows else {
        return Choice {
            custom: false,
            reason: "no sampled execution with known parameter values: the generic plan \
                     (parameters unknown) is used"
                .into(),
        };
    };
    let Some(observed) = observed_rows else {
        return Choice {
            custom: true,
            reason: "the custom plan for a typical sampled execution is used (no rows per \
                     execution measured yet)"
                .into(),
        };
    };
    let (g, c) = (miss(generic_rows, observed), miss(custom, observed));
    if c <= g {
        Choice {
            custom: true,
            reason: format!(
                "executions return {observed:.1} rows on average; the custom plan for a typical \
                 sampled execution expects {custom:.1}, the generic plan {generic_rows:.1}: the \
                 custom plan matches what executions do"
            ),
        }
    } else {
        Choice {
            custom: false,
            reason: format!(
                "executions return {observed:.1} rows on average; the generic plan expects \
                 {generic_rows:.1}, closer than the custom plan for the sampled values \
                 ({custom:.1}): the sampled values look unrepresentative"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_samples_the_generic_plan_is_used() {
        let c = choose(1000.0, None, Some(10.0));
        assert!(!c.custom);
        assert!(c.reason.contains("generic plan"));
    }

    #[test]
    fn the_plan_closer_to_observed_rows_wins_and_ties_go_to_the_custom_plan() {
        // Range predicate: generic guesses a third of the table, executions return a few rows.
        assert!(choose(33_000.0, Some(40.0), Some(35.0)).custom);
        // A sample with an extreme value: the generic plan predicts better.
        let c = choose(120.0, Some(90_000.0), Some(100.0));
        assert!(!c.custom, "{c:?}");
        assert!(c.reason.contains("unrepresentative"));
        // count(*): both expect one row.
        assert!(choose(1.0, Some(1.0), Some(1.0)).custom);
        // No measurement yet.
        assert!(choose(1.0, Some(5.0), None).custom);
    }

    fn scan(generic_rows: f64, custom_rows: f64, table_rows: f64) -> ScanEstimates {
        ScanEstimates {
            relation: "app.lineitem".into(),
            generic_rows,
            custom_rows,
            table_rows,
        }
    }

    #[test]
    fn default_guesses_are_recognised_once_or_twice_applied() {
        assert!(is_default_guess(1500.0, 300_000.0)); // 0.5%
        assert!(is_default_guess(100_000.0, 300_000.0)); // 1/3
        assert!(is_default_guess(500.0, 300_000.0)); // 1/3 * 0.5%
        assert!(is_default_guess(3000.0, 300_000.0)); // 1%
        assert!(is_default_guess(1507.0, 300_000.0)); // within rounding
        assert!(!is_default_guess(3_600.0, 300_000.0)); // 1.2%: statistics
        assert!(!is_default_guess(45.0, 9_000.0)); // 0.5% of a small table
        assert!(!is_default_guess(1.0, 200.0));
    }

    #[test]
    fn a_guessed_generic_scan_makes_the_custom_plan_the_basis() {
        // TPC-H-like: the generic plan guesses 0.5% of 300,000 rows, the sampled values 3.8%;
        // at the top node (an aggregate) both expect one row, the generic plan closer to the
        // observed rows would otherwise win.
        let scans = [scan(1500.0, 11_400.0, 300_000.0)];
        let c = choose_with_scans(1.0, Some(3.0), Some(1.0), &scans);
        assert!(c.custom, "{c:?}");
        assert!(c.reason.contains("default selectivity guess"), "{c:?}");
        assert!(!choose(1.0, Some(3.0), Some(1.0)).custom);
        // Same estimate in both plans: nothing was guessed that the values change.
        let same = [scan(1500.0, 1510.0, 300_000.0)];
        assert!(!choose_with_scans(1.0, Some(3.0), Some(1.0), &same).custom);
        // No custom plan: the generic plan, guessed or not.
        assert!(!choose_with_scans(1.0, None, Some(1.0), &scans).custom);
    }
}
