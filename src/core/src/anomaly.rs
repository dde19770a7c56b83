//! Robust anomaly detection on latency numbers: a window much slower than a statement's own
//! history, a statement much slower than its family, a plan whose shape changed.
//!
//! Median and MAD (median absolute deviation) rather than mean and standard deviation: one
//! earlier spike must not hide the next, and latencies are heavy-tailed. `1.4826 * MAD`
//! estimates the standard deviation of normal data, so the robust z-score reads like a z-score;
//! 3.5 is the usual cut-off for it (Iglewicz and Hoaglin).

use serde_json::Value;

/// Fewest earlier windows a spike is judged against.
pub const MIN_SAMPLES: usize = 6;
/// Smallest family whose members are compared with each other.
pub const MIN_FAMILY_MEMBERS: usize = 4;
/// Robust z-score above which a value is anomalous.
pub const Z_THRESHOLD: f64 = 3.5;
/// A value must also be this many times the median: a statistically clear 20% slowdown of a
/// very steady statement is not worth an alert.
pub const MIN_RATIO: f64 = 2.0;
/// MAD to standard deviation, for normally distributed data.
const MAD_SCALE: f64 = 1.4826;
/// The spread is never taken below this fraction of the median: real timings jitter at least
/// that much, and a perfectly flat history (MAD 0) must not make any wobble infinitely
/// significant.
const MIN_SPREAD: f64 = 0.01;

/// The latest window of a statement against its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    pub latest: f64,
    pub median: f64,
    pub mad: f64,
    /// latest / median.
    pub ratio: f64,
    pub robust_z: f64,
    /// Finite history values used.
    pub samples: usize,
}

/// A family member far slower than the family's typical latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub id: i64,
    pub value: f64,
    pub family_median: f64,
    pub robust_z: f64,
}

/// `Some` when `latest` is a spike against `history` (per-window values before the latest
/// one): at least `min_samples` finite history values, latest above `MIN_RATIO` times their
/// median, and robust z above `Z_THRESHOLD`. NaN and infinite values are ignored; a history
/// whose median is not positive has no scale to compare with, so nothing is flagged.
pub fn spike(history: &[f64], latest: f64, min_samples: usize) -> Option<Spike> {
    let values = finite(history);
    if !latest.is_finite() || values.len() < min_samples || values.is_empty() {
        return None;
    }
    let (median, mad) = median_mad(&values);
    if median <= 0.0 {
        return None;
    }
    let robust_z = robust_z(latest, median, mad);
    let flagged = latest > MIN_RATIO * median && robust_z > Z_THRESHOLD;
    flagged.then_some(Spike {
        latest,
        median,
        mad,
        ratio: latest / median,
        robust_z,
        samples: values.len(),
    })
}

/// Members (id, latency) far above their family's median, most anomalous first; none when
/// fewer than `min_members` have a finite value or the median is not positive.
pub fn family_outliers(members: &[(i64, f64)], min_members: usize) -> Vec<Outlier> {
    let valid: Vec<(i64, f64)> = members
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    if valid.len() < min_members || valid.is_empty() {
        return Vec::new();
    }
    let values: Vec<f64> = valid.iter().map(|(_, v)| *v).collect();
    let (median, mad) = median_mad(&values);
    if median <= 0.0 {
        return Vec::new();
    }
    let mut outliers: Vec<Outlier> = valid
        .into_iter()
        .map(|(id, value)| Outlier {
            id,
            value,
            family_median: median,
            robust_z: robust_z(value, median, mad),
        })
        .filter(|o| o.value > MIN_RATIO * median && o.robust_z > Z_THRESHOLD)
        .collect();
    outliers.sort_by(|a, b| b.robust_z.total_cmp(&a.robust_z).then(a.id.cmp(&b.id)));
    outliers
}

fn finite(values: &[f64]) -> Vec<f64> {
    values.iter().copied().filter(|v| v.is_finite()).collect()
}

/// (latest - median) / spread, the spread floored at `MIN_SPREAD` of the median.
fn robust_z(value: f64, median: f64, mad: f64) -> f64 {
    let spread = (MAD_SCALE * mad).max(MIN_SPREAD * median.abs());
    (value - median) / spread
}

/// Median and median absolute deviation of a non-empty slice of finite values.
fn median_mad(values: &[f64]) -> (f64, f64) {
    let m = median(values.to_vec());
    let deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    (m, median(deviations))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Compact signature of an `EXPLAIN (FORMAT JSON)` plan tree: node types (with join type,
/// aggregate strategy and parallelism, which are plan choices too), relation and index names;
/// never costs or row counts, which move with statistics without the plan changing. E.g.
/// `Hash Join(Seq Scan[orders],Hash(Index Scan[customers:customers_pkey]))`.
/// Accepts `[{"Plan": ...}]`, `{"Plan": ...}` or a bare plan node.
pub fn plan_shape(plan: &Value) -> Option<String> {
    let top = match plan {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let root = top.get("Plan").unwrap_or(top);
    root.get("Node Type")?;
    let mut out = String::new();
    shape_of(root, &mut out);
    Some(out)
}

fn shape_of(node: &Value, out: &mut String) {
    let field = |key: &str| node.get(key).and_then(Value::as_str);
    if node.get("Parallel Aware").and_then(Value::as_bool) == Some(true) {
        out.push_str("Parallel ");
    }
    out.push_str(field("Node Type").unwrap_or("?"));
    // Inner is the default: leaving it out keeps common signatures short.
    for key in ["Join Type", "Strategy"] {
        if let Some(v) = field(key).filter(|v| !matches!(*v, "Inner" | "Plain")) {
            out.push('/');
            out.push_str(v);
        }
    }
    let relation = field("Relation Name").or(field("CTE Name"));
    match (relation, field("Index Name")) {
        (Some(r), Some(i)) => out.push_str(&format!("[{r}:{i}]")),
        (None, Some(i)) => out.push_str(&format!("[:{i}]")),
        (Some(r), None) => out.push_str(&format!("[{r}]")),
        (None, None) => {}
    }
    if let Some(children) = node.get("Plans").and_then(Value::as_array) {
        out.push('(');
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            shape_of(child, out);
        }
        out.push(')');
    }
}

/// True when two signatures differ; an empty (unknown) signature is never a change.
pub fn plan_changed(before: &str, after: &str) -> bool {
    let (before, after) = (before.trim(), after.trim());
    !before.is_empty() && !after.is_empty() && before != after
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// About 100 with +-5% of deterministic noise.
    fn steady(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + ((i * 37 % 11) as f64 - 5.0))
            .collect()
    }

    #[test]
    fn steady_noise_is_no_spike() {
        let history = steady(24);
        for latest in [95.0, 100.0, 106.0, 150.0, 199.0] {
            assert_eq!(spike(&history, latest, MIN_SAMPLES), None, "{latest}");
        }
    }

    #[test]
    fn three_times_slower_is_a_spike() {
        let history = steady(24);
        let s = spike(&history, 300.0, MIN_SAMPLES).expect("spike");
        assert!((s.ratio - 3.0).abs() < 0.1, "{s:?}");
        assert!(s.robust_z > Z_THRESHOLD, "{s:?}");
        assert_eq!(s.samples, 24);
        assert_eq!(s.latest, 300.0);
        assert!(s.mad > 0.0);
        // A faster window is never a spike.
        assert_eq!(spike(&history, 10.0, MIN_SAMPLES), None);
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let history = steady(MIN_SAMPLES - 1);
        assert_eq!(spike(&history, 1_000.0, MIN_SAMPLES), None);
        assert!(spike(&steady(MIN_SAMPLES), 1_000.0, MIN_SAMPLES).is_some());
        // NaN and infinities do not count as samples.
        let mut dirty = steady(MIN_SAMPLES - 1);
        dirty.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(spike(&dirty, 1_000.0, MIN_SAMPLES), None);
        assert_eq!(spike(&steady(10), f64::NAN, MIN_SAMPLES), None);
        assert_eq!(spike(&steady(10), f64::INFINITY, MIN_SAMPLES), None);
        assert_eq!(spike(&[], 5.0, 0), None);
    }

    #[test]
    fn flat_history_uses_the_spread_floor() {
        let flat = vec![50.0; 10];
        let s = spike(&flat, 101.0, MIN_SAMPLES).expect("over 2x a flat history");
        assert_eq!((s.median, s.mad), (50.0, 0.0));
        // Spread floored at 1% of 50 = 0.5: z = 51 / 0.5.
        assert!((s.robust_z - 102.0).abs() < 1e-9, "{s:?}");
        assert_eq!(spike(&flat, 99.0, MIN_SAMPLES), None, "below 2x");
        assert_eq!(spike(&[0.0; 10], 5.0, MIN_SAMPLES), None, "no scale");
    }

    #[test]
    fn family_outliers_need_a_big_enough_family() {
        let members = [
            (1, 10.0),
            (2, 11.0),
            (3, 9.5),
            (4, 10.5),
            (5, 80.0),
            (6, 12.0),
        ];
        let out = family_outliers(&members, MIN_FAMILY_MEMBERS);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].id, 5);
        assert_eq!(out[0].value, 80.0);
        assert!((out[0].family_median - 10.75).abs() < 1e-9);
        assert!(out[0].robust_z > Z_THRESHOLD);
        assert!(family_outliers(&members[3..], MIN_FAMILY_MEMBERS).is_empty());
        // Spread-out families have no outliers at 2x.
        let spread = [(1, 5.0), (2, 20.0), (3, 40.0), (4, 60.0), (5, 90.0)];
        assert!(family_outliers(&spread, MIN_FAMILY_MEMBERS).is_empty());
        // Ordered by z, NaN ignored.
        let two = [
            (1, 1.0),
            (2, 1.0),
            (3, 1.0),
            (4, 1.0),
            (5, 9.0),
            (6, 30.0),
            (7, f64::NAN),
        ];
        let ids: Vec<i64> = family_outliers(&two, MIN_FAMILY_MEMBERS)
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, vec![6, 5]);
    }

    fn join_plan(outer_cost: f64, inner_scan: &str) -> Value {
        json!([{"Plan": {
        "Node Type": "Hash Join", "Join Type": "Inner", "Total Cost": outer_cost,
        "Plan Rows": outer_cost / 2.0,
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "orders", "Total Cost": 10.5,
             "Plan Rows": 100},
            {"Node Type": "Hash", "Plans": [
                {"Node Type": inner_scan, "Relation Name": "customers",
                 "Index Name": "customers_pkey", "Total Cost": outer_cost / 3.0}]}
        ]}}])
    }

    #[test]
    fn plan_shapes_ignore_costs_but_not_nodes() {
        let a = plan_shape(&join_plan(100.0, "Index Scan")).unwrap();
        assert_eq!(
            a,
            "Hash Join(Seq Scan[orders],Hash(Index Scan[customers:customers_pkey]))"
        );
        let b = plan_shape(&join_plan(7_000.0, "Index Scan")).unwrap();
        assert_eq!(a, b);
        assert!(!plan_changed(&a, &b));
        let c = plan_shape(&join_plan(100.0, "Index Only Scan")).unwrap();
        assert!(plan_changed(&a, &c));
        assert!(!plan_changed("", &c), "unknown before");
        // The inner object and a bare node are accepted too.
        let inner = join_plan(100.0, "Index Scan")[0].clone();
        assert_eq!(plan_shape(&inner).unwrap(), a);
        assert_eq!(plan_shape(&inner["Plan"]).unwrap(), a);
        assert_eq!(plan_shape(&json!([])), None);
        assert_eq!(plan_shape(&json!({"foo": 1})), None);
    }

    #[test]
    fn join_types_strategies_and_parallelism_are_part_of_the_shape() {
        let shape = plan_shape(
            &json!({"Plan": {"Node Type": "Aggregate", "Strategy": "Hashed",
            "Plans": [{"Node Type": "Nested Loop", "Join Type": "Left", "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "a", "Parallel Aware": true},
                {"Node Type": "Bitmap Index Scan", "Index Name": "b_idx"}]}]}}),
        )
        .unwrap();
        assert_eq!(
            shape,
            "Aggregate/Hashed(Nested Loop/Left(Parallel Seq Scan[a],Bitmap Index Scan[:b_idx]))"
        );
    }
}
