//! The words optidb stores in its enumerated columns, declared once. The Rust code uses these
//! types; the SQL CHECK constraints of sql/bootstrap.sql must allow exactly these values, which
//! tests/e2e/test_surface.py checks against `optidb.surface()` (built from `COLUMNS`).

/// A closed set of words stored in a text column.
pub trait Vocabulary: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

/// Every word of `T`, in declaration order.
pub fn words<T: Vocabulary>() -> Vec<&'static str> {
    T::ALL.iter().map(|w| w.as_str()).collect()
}

/// Declares an enum of words: the type, `ALL`, `as_str` and `parse`.
#[macro_export]
macro_rules! vocabulary {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $crate::vocabulary::Vocabulary for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                <Self as $crate::vocabulary::Vocabulary>::as_str(self)
            }

            pub fn parse(word: &str) -> Option<Self> {
                <Self as $crate::vocabulary::Vocabulary>::ALL
                    .iter()
                    .copied()
                    .find(|w| w.as_str() == word)
            }
        }
    };
}

vocabulary! {
    /// optidb.sample.kind: which execution a sample keeps.
    pub enum SampleKind { Slowest => "slowest", Typical => "typical" }
}

vocabulary! {
    /// optidb.plan.path_source: where a replay's search_path came from (src/replay.rs).
    pub enum PathSource {
        Recorded => "recorded",
        RoleDatabaseSetting => "role_database_setting",
        RoleSetting => "role_setting",
        DatabaseSetting => "database_setting",
        ServerDefault => "server_default",
        Inferred => "inferred",
    }
}

vocabulary! {
    /// optidb.plan.plan_kind: the generic plan, or a custom plan for a sample's values.
    pub enum PlanKind { Generic => "generic", Typical => "typical", Slowest => "slowest" }
}

vocabulary! {
    /// optidb.scan_log.kind: which job ran.
    pub enum ScanKind { Scan => "scan", Snapshot => "snapshot" }
}

vocabulary! {
    /// The stages of a scan after its ingest, in the order they run (src/api/scan.rs), as
    /// optidb.scan_log.stage_errors names them (a jsonb key: no CHECK constraint, not in COLUMNS).
    pub enum ScanStage {
        Prune => "prune",
        Plans => "plans",
        Advice => "advice",
        Families => "families",
        Anomalies => "anomalies",
    }
}

vocabulary! {
    /// optidb.source.state: registered and never pulled, pulled by the latest pass, not
    /// reached by it, or refused by its identity checks (last_error says why).
    pub enum SourceState {
        New => "new", Ok => "ok", Unreachable => "unreachable", Refused => "refused"
    }
}

vocabulary! {
    /// optidb.recommendation.status: shown, rejected by its simulations, or no longer derived.
    pub enum Status { Open => "open", Rejected => "rejected", Stale => "stale" }
}

vocabulary! {
    /// optidb.simulation.mode.
    pub enum SimulationMode { Hypopg => "hypopg", Real => "real" }
}

vocabulary! {
    /// optidb.simulation.plan_kind: parameters unknown, or a sample's values.
    pub enum SimulationBasis { Generic => "generic", Sampled => "sampled" }
}

vocabulary! {
    /// optidb.alert_rule.severity and optidb.alert.severity, mildest first.
    pub enum Severity { Info => "info", Warning => "warning", Critical => "critical" }
}

vocabulary! {
    /// optidb.alert_rule.comparison: how a rule compares a metric's value with its threshold.
    pub enum Comparison { Above => ">", AtLeast => ">=", Below => "<", AtMost => "<=" }
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }
}

vocabulary! {
    /// optidb.anomaly.kind: what raised an anomaly tag (src/api/anomalies.rs).
    pub enum AnomalyKind {
        LatencySpike => "latency_spike",
        FamilyOutlier => "family_outlier",
        PlanChange => "plan_change",
        LockContention => "lock_contention",
    }
}

/// Each enumerated column (`table.column`) and its words.
pub type Column = (&'static str, fn() -> Vec<&'static str>);

pub const COLUMNS: &[Column] = &[
    ("sample.kind", words::<SampleKind>),
    ("plan.path_source", words::<PathSource>),
    ("plan.plan_kind", words::<PlanKind>),
    ("scan_log.kind", words::<ScanKind>),
    ("recommendation.kind", words::<crate::advisor::Kind>),
    ("recommendation.status", words::<Status>),
    ("simulation.mode", words::<SimulationMode>),
    ("simulation.plan_kind", words::<SimulationBasis>),
    ("alert_rule.metric", words::<crate::health::Metric>),
    ("alert_rule.comparison", words::<Comparison>),
    ("alert_rule.severity", words::<Severity>),
    ("alert.severity", words::<Severity>),
    ("anomaly.kind", words::<AnomalyKind>),
    ("source.state", words::<SourceState>),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_back() {
        for (_, words) in COLUMNS {
            assert!(!words().is_empty());
        }
        assert_eq!(
            PathSource::parse("role_setting"),
            Some(PathSource::RoleSetting)
        );
        assert_eq!(PathSource::parse("nope"), None);
        assert_eq!(words::<Status>(), ["open", "rejected", "stale"]);
    }
}
