//! Why a statement is a bottleneck: turns its recorded metrics, its plan facts and the sizes of
//! the tables it reads into reasons a person can check, each citing the numbers it rests on,
//! plus a confidence that grows with corroborating evidence.

use crate::plan_facts::PlanFacts;
use serde::Serialize;

/// Thresholds are deliberately plain numbers: a reason must be explainable in one sentence.
const DOMINANT_SHARE: f64 = 0.20;
const SLOW_MEAN_MS: f64 = 100.0;
const LARGE_TABLE_ROWS: f64 = 10_000.0;
const LOW_HIT_RATIO: f64 = 0.90;
const MIN_READS_FOR_HIT_RATIO: i64 = 1_000;
const FREQUENT_CALLS: i64 = 10_000;
const FAST_MEAN_MS: f64 = 1.0;
const LARGE_SORT_ROWS: f64 = 100_000.0;
const ESTIMATE_SKEW: f64 = 10.0;
const MANY_ROWS_PER_CALL: f64 = 10_000.0;

/// Totals for one statement over the observed window.
#[derive(Debug, Clone, Default)]
pub struct StatementMetrics {
    pub calls: i64,
    pub total_ms: f64,
    pub rows: i64,
    pub shared_blks_hit: i64,
    pub shared_blks_read: i64,
    pub temp_blks_written: i64,
    /// This statement's fraction of the total execution time of all captured statements
    /// (time until failure of failed executions included).
    pub share_of_total: f64,
    /// Executions that failed (`calls` counts completed ones only), how many of them
    /// statement_timeout cancelled, their time until failure in all, and the latest SQLSTATE.
    pub failures: i64,
    pub timeouts: i64,
    pub failed_ms: f64,
    pub sqlstate: Option<String>,
}

impl StatementMetrics {
    pub fn mean_ms(&self) -> f64 {
        if self.calls > 0 {
            self.total_ms / self.calls as f64
        } else {
            0.0
        }
    }

    /// Mean time until failure of the failed executions (0 without failures).
    pub fn mean_failed_ms(&self) -> f64 {
        if self.failures > 0 {
            self.failed_ms / self.failures as f64
        } else {
            0.0
        }
    }

    /// Time the database spent on it: completed executions and failed ones until they failed.
    pub fn time_ms(&self) -> f64 {
        self.total_ms + self.failed_ms
    }
}

/// Why a statement does not complete, when its failures are the story: any execution cancelled
/// by statement_timeout, or failures at least as many as completed executions. A rare failure
/// (a unique violation now and then) is in the evidence, not a reason.
fn failure_reason(m: &StatementMetrics) -> Option<(Reason, f64)> {
    let executions = m.calls + m.failures;
    let after = fmt_ms(m.mean_failed_ms());
    if m.timeouts > 0 {
        let (code, head) = match m.calls {
            0 => ("never_completes", "never completes"),
            _ => ("times_out", "times out"),
        };
        return Some((
            Reason {
                code,
                text: format!(
                    "{head}: {} of {executions} executions cancelled by statement_timeout after {after}",
                    m.timeouts
                ),
            },
            0.3,
        ));
    }
    if m.failures == 0 || m.failures < m.calls {
        return None;
    }
    let head = if m.calls == 0 {
        "never completes"
    } else {
        "fails"
    };
    let sqlstate = m
        .sqlstate
        .as_deref()
        .map(|s| format!(" (SQLSTATE {s})"))
        .unwrap_or_default();
    Some((
        Reason {
            code: "fails",
            text: format!(
                "{head}: {} of {executions} executions failed{sqlstate} after {after}",
                m.failures
            ),
        },
        0.15,
    ))
}

/// Catalog size of a table the statement reads, as stored by the last scan.
#[derive(Debug, Clone)]
pub struct TableSize {
    pub relation: String,
    pub rows_est: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// Stable machine-readable code, e.g. `seq_scan_large_table`.
    pub code: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub reasons: Vec<Reason>,
    /// 0..1: how strongly the evidence supports calling this statement a bottleneck.
    pub confidence: f64,
}

impl Diagnosis {
    /// All reasons in one line, most important first.
    pub fn summary(&self) -> String {
        self.reasons
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub fn diagnose(m: &StatementMetrics, plan: Option<&PlanFacts>, tables: &[TableSize]) -> Diagnosis {
    let mut reasons = Vec::new();
    let mut confidence: f64 = 0.3;
    let mean = m.mean_ms();

    if let Some((reason, weight)) = failure_reason(m) {
        reasons.push(reason);
        confidence += weight;
    }
    if m.share_of_total >= DOMINANT_SHARE {
        let over = match m.failures {
            0 => format!("{} over {} calls", fmt_ms(m.total_ms), m.calls),
            failed => format!(
                "{} over {} calls and {failed} failed executions",
                fmt_ms(m.time_ms()),
                m.calls
            ),
        };
        reasons.push(Reason {
            code: "dominant_total_time",
            text: format!(
                "takes {:.0}% of all recorded execution time ({over})",
                m.share_of_total * 100.0,
            ),
        });
        confidence += 0.2;
    }
    if mean >= SLOW_MEAN_MS {
        reasons.push(Reason {
            code: "slow_per_call",
            text: format!("slow per call: mean {}", fmt_ms(mean)),
        });
        confidence += 0.15;
    }
    if m.calls >= FREQUENT_CALLS && mean < FAST_MEAN_MS && m.share_of_total >= 0.05 {
        reasons.push(Reason {
            code: "very_frequent",
            text: format!(
                "fast per call ({}) but called {} times: batch it or cache the result",
                fmt_ms(mean),
                m.calls
            ),
        });
        confidence += 0.05;
    }

    if let Some(plan) = plan {
        for scan in &plan.seq_scans {
            let rows = tables
                .iter()
                .find(|t| t.relation == scan.relation)
                .map(|t| t.rows_est)
                .unwrap_or(0.0);
            if rows >= LARGE_TABLE_ROWS {
                let filter = scan
                    .filter
                    .as_deref()
                    .map(|f| format!(" filtered by {f}"))
                    .unwrap_or_default();
                reasons.push(Reason {
                    code: "seq_scan_large_table",
                    text: format!(
                        "sequential scan of {} (~{} rows){filter}",
                        scan.relation,
                        fmt_count(rows)
                    ),
                });
                confidence += if scan.filter.is_some() { 0.25 } else { 0.1 };
            }
        }
        for sort in plan
            .sorts
            .iter()
            .filter(|s| s.est_rows >= LARGE_SORT_ROWS || s.on_disk)
        {
            reasons.push(Reason {
                code: "large_sort",
                text: format!(
                    "sorts ~{} rows by {}{}",
                    fmt_count(sort.est_rows),
                    sort.keys.join(", "),
                    if sort.on_disk { " on disk" } else { "" }
                ),
            });
            confidence += 0.05;
        }
        if let Some(ratio) = plan.worst_estimate_ratio.filter(|r| *r >= ESTIMATE_SKEW) {
            reasons.push(Reason {
                code: "estimate_skew",
                text: format!("row estimates off by {ratio:.0}x: statistics may be stale"),
            });
            confidence += 0.1;
        }
    }

    if m.temp_blks_written > 0 && m.calls > 0 {
        reasons.push(Reason {
            code: "temp_spill",
            text: format!(
                "spills to temporary files: {} blocks written per call",
                fmt_count(m.temp_blks_written as f64 / m.calls as f64)
            ),
        });
        confidence += 0.1;
    }
    let touched = m.shared_blks_hit + m.shared_blks_read;
    if m.shared_blks_read >= MIN_READS_FOR_HIT_RATIO && touched > 0 {
        let ratio = m.shared_blks_hit as f64 / touched as f64;
        if ratio < LOW_HIT_RATIO {
            reasons.push(Reason {
                code: "low_cache_hit",
                text: format!(
                    "shared-buffer hit ratio {:.0}% ({} blocks read from disk or OS cache)",
                    ratio * 100.0,
                    fmt_count(m.shared_blks_read as f64)
                ),
            });
            confidence += 0.05;
        }
    }
    if m.calls > 0 && m.rows as f64 / m.calls as f64 >= MANY_ROWS_PER_CALL {
        reasons.push(Reason {
            code: "many_rows",
            text: format!(
                "returns ~{} rows per call",
                fmt_count(m.rows as f64 / m.calls as f64)
            ),
        });
    }

    if reasons.is_empty() {
        reasons.push(Reason {
            code: "top_total_time",
            text: format!(
                "among the largest total execution times ({} over {} calls, {:.1}% of the total)",
                fmt_ms(m.total_ms),
                m.calls,
                m.share_of_total * 100.0
            ),
        });
    }
    Diagnosis {
        reasons,
        confidence: confidence.min(0.95),
    }
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

pub fn fmt_count(n: f64) -> String {
    if n >= 1_000_000.0 {
        format!("{:.1}M", n / 1_000_000.0)
    } else if n >= 10_000.0 {
        format!("{:.0}k", n / 1000.0)
    } else {
        format!("{n:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_facts::{PlanFacts, SeqScan};

    fn metrics(calls: i64, total_ms: f64, share: f64) -> StatementMetrics {
        StatementMetrics {
            calls,
            total_ms,
            share_of_total: share,
            ..Default::default()
        }
    }

    fn seq_plan(relation: &str, filter: Option<&str>) -> PlanFacts {
        PlanFacts {
            seq_scans: vec![SeqScan {
                relation: relation.into(),
                schema: None,
                alias: None,
                est_rows: 5.0,
                total_cost: 1000.0,
                filter: filter.map(str::to_string),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn seq_scan_on_large_table_with_filter_is_the_strongest_reason() {
        let tables = [TableSize {
            relation: "orders".into(),
            rows_est: 1_000_000.0,
        }];
        let plan = seq_plan("orders", Some("(customer_id = $1)"));
        let d = diagnose(&metrics(100, 25_000.0, 0.5), Some(&plan), &tables);
        let codes: Vec<_> = d.reasons.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            vec![
                "dominant_total_time",
                "slow_per_call",
                "seq_scan_large_table"
            ]
        );
        assert!(d
            .summary()
            .contains("sequential scan of orders (~1.0M rows) filtered by (customer_id = $1)"));
        assert!(d.confidence > 0.8, "{}", d.confidence);
    }

    #[test]
    fn seq_scan_on_small_table_is_not_a_reason() {
        let tables = [TableSize {
            relation: "tiny".into(),
            rows_est: 50.0,
        }];
        let plan = seq_plan("tiny", Some("(a = $1)"));
        let d = diagnose(&metrics(10, 1.0, 0.01), Some(&plan), &tables);
        assert_eq!(d.reasons.len(), 1);
        assert_eq!(d.reasons[0].code, "top_total_time");
        assert!(d.confidence < 0.5);
    }

    #[test]
    fn temp_spill_and_cache_misses_are_reported_with_numbers() {
        let m = StatementMetrics {
            calls: 10,
            total_ms: 50.0,
            temp_blks_written: 1000,
            shared_blks_hit: 100,
            shared_blks_read: 9_900,
            ..Default::default()
        };
        let d = diagnose(&m, None, &[]);
        let s = d.summary();
        assert!(s.contains("100 blocks written per call"), "{s}");
        assert!(s.contains("hit ratio 1%"), "{s}");
    }

    #[test]
    fn frequent_cheap_statement_is_flagged_as_such() {
        let d = diagnose(&metrics(50_000, 10_000.0, 0.3), None, &[]);
        assert!(d.reasons.iter().any(|r| r.code == "very_frequent"));
        assert!(!d.reasons.iter().any(|r| r.code == "slow_per_call"));
    }

    fn failing(calls: i64, failures: i64, timeouts: i64, failed_ms: f64) -> StatementMetrics {
        StatementMetrics {
            calls,
            failures,
            timeouts,
            failed_ms,
            sqlstate: Some(if timeouts > 0 { "57014" } else { "22012" }.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_statement_that_always_times_out_never_completes() {
        let d = diagnose(&failing(0, 3, 3, 900.0), None, &[]);
        assert_eq!(d.reasons[0].code, "never_completes");
        assert_eq!(
            d.reasons[0].text,
            "never completes: 3 of 3 executions cancelled by statement_timeout after 300 ms"
        );
        assert!(d.confidence >= 0.6, "{}", d.confidence);
        let some = diagnose(&failing(7, 1, 1, 2000.0), None, &[]);
        assert_eq!(some.reasons[0].code, "times_out");
        assert!(some.reasons[0]
            .text
            .starts_with("times out: 1 of 8 executions"));
    }

    #[test]
    fn other_failures_are_failing_not_timing_out() {
        let d = diagnose(&failing(0, 4, 0, 2.0), None, &[]);
        assert_eq!(d.reasons[0].code, "fails");
        assert_eq!(
            d.reasons[0].text,
            "never completes: 4 of 4 executions failed (SQLSTATE 22012) after 0.50 ms"
        );
        assert!(!d.summary().contains("statement_timeout"));
        // A rare failure is no reason.
        let rare = diagnose(&failing(100, 1, 0, 1.0), None, &[]);
        assert!(rare.reasons.iter().all(|r| r.code != "fails"));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(0.123), "0.12 ms");
        assert_eq!(fmt_ms(250.0), "250 ms");
        assert_eq!(fmt_ms(25_000.0), "25.0 s");
        assert_eq!(fmt_count(1_500_000.0), "1.5M");
        assert_eq!(fmt_count(25_000.0), "25k");
    }
}
