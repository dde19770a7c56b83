//! When an alert rule fires and resolves: one alert per incident.
//!
//! A rule fires once its condition has held for `hold`; the alert stays open until the
//! condition has been clear for `clear_for`. A condition flapping around its threshold faster
//! than `clear_for` is one incident, one alert, one notification, not one per evaluation. A
//! subject that is no longer observed (a recommendation applied, a statement gone) counts as
//! clear.

use crate::vocabulary::Comparison;

pub struct Rule {
    pub comparison: Comparison,
    pub threshold: f64,
    pub hold_s: f64,
    pub clear_for_s: f64,
}

/// Where one rule stands for one subject between evaluations (times in seconds, any epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tracked {
    /// The condition has held since then (None: it does not hold).
    pub holding_since: Option<f64>,
    /// An open alert's condition has been clear since then.
    pub clear_since: Option<f64>,
    pub open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open an alert (notify, log).
    Fire,
    /// Close the open alert (notify).
    Resolve,
    /// The open alert's condition still holds: refresh its latest value.
    StillFiring,
    /// Nothing to report.
    Quiet,
}

/// Whether `value` (None: not observed) meets the rule.
pub fn holds(rule: &Rule, value: Option<f64>) -> bool {
    value.is_some_and(|v| v.is_finite() && rule.comparison.holds(v, rule.threshold))
}

/// Advance `state` to `now_s` given whether the condition holds now.
pub fn step(rule: &Rule, state: &mut Tracked, holding: bool, now_s: f64) -> Step {
    if holding {
        let since = *state.holding_since.get_or_insert(now_s);
        state.clear_since = None;
        if state.open {
            Step::StillFiring
        } else if now_s - since >= rule.hold_s {
            state.open = true;
            Step::Fire
        } else {
            Step::Quiet
        }
    } else {
        state.holding_since = None;
        if !state.open {
            return Step::Quiet;
        }
        let since = *state.clear_since.get_or_insert(now_s);
        if now_s - since >= rule.clear_for_s {
            *state = Tracked::default();
            Step::Resolve
        } else {
            Step::Quiet
        }
    }
}

/// Nothing left to remember: the row can go.
pub fn forgettable(state: &Tracked) -> bool {
    *state == Tracked::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hold_s: f64, clear_for_s: f64) -> Rule {
        Rule {
            comparison: Comparison::Above,
            threshold: 5.0,
            hold_s,
            clear_for_s,
        }
    }

    #[test]
    fn fires_after_hold_and_resolves_after_clear_for() {
        let r = rule(10.0, 30.0);
        let mut s = Tracked::default();
        assert_eq!(step(&r, &mut s, holds(&r, Some(6.0)), 0.0), Step::Quiet);
        assert_eq!(step(&r, &mut s, holds(&r, Some(7.0)), 9.0), Step::Quiet);
        assert_eq!(step(&r, &mut s, holds(&r, Some(7.0)), 10.0), Step::Fire);
        assert_eq!(step(&r, &mut s, true, 20.0), Step::StillFiring);
        assert_eq!(step(&r, &mut s, holds(&r, Some(1.0)), 25.0), Step::Quiet);
        assert_eq!(step(&r, &mut s, holds(&r, None), 55.0), Step::Resolve);
        assert!(forgettable(&s));
    }

    #[test]
    fn a_condition_that_clears_before_hold_never_fires() {
        let r = rule(10.0, 0.0);
        let mut s = Tracked::default();
        for t in 0..20 {
            let holding = t % 2 == 0;
            assert_eq!(step(&r, &mut s, holding, t as f64 * 5.0), Step::Quiet);
        }
    }

    #[test]
    fn flapping_for_a_minute_is_one_incident() {
        let r = rule(0.0, 30.0);
        let mut s = Tracked::default();
        let steps: Vec<Step> = (0..12)
            .map(|i| {
                let value = if i % 2 == 0 { 6.0 } else { 4.0 };
                step(&r, &mut s, holds(&r, Some(value)), i as f64 * 5.0)
            })
            .collect();
        assert_eq!(steps.iter().filter(|s| **s == Step::Fire).count(), 1);
        assert!(!steps.contains(&Step::Resolve));
        // Quiet for clear_for afterwards: resolved once.
        assert_eq!(step(&r, &mut s, false, 60.0), Step::Quiet);
        assert_eq!(step(&r, &mut s, false, 91.0), Step::Resolve);
    }

    #[test]
    fn no_value_or_nan_never_holds() {
        let r = rule(0.0, 0.0);
        assert!(!holds(&r, None));
        assert!(!holds(&r, Some(f64::NAN)));
        assert!(!holds(&r, Some(f64::INFINITY)));
        assert!(holds(&r, Some(5.5)));
    }
}
