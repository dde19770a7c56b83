//! Which plan advice should rest on: the generic plan (parameters unknown) or the custom plan
//! made for a typical sampled execution's real values.
//!
//! PostgreSQL plans every execution of a statement sent with literals (simple protocol) with
//! its values, and prepared statements with their values for the first five executions and
//! whenever a custom plan is estimated cheaper. So the custom plan of a typical execution is
//! what usually runs; the generic plan wins only when it predicts the rows executions actually
//! return better than the custom plan does (the sampled values being unrepresentative).

use serde::Serialize;

/// The chosen plan and why, in words that go into the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub custom: bool,
    pub reason: String,
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
}
