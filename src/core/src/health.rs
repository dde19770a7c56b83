//! The metrics catalog: every figure optidb.health() reports, history keeps, alert rules watch
//! and optidb.metrics() exports, with its unit, kind and where it comes from. One list, so
//! the README's catalog, the alert rules' CHECK constraint and the exporter's HELP lines agree.

use crate::vocabulary;

crate::vocabulary! {
    /// optidb.alert_rule.metric and optidb.health_history.item.
    pub enum Metric {
        CacheHitPct => "cache_hit_pct",
        CommitsTotal => "commits_total",
        RollbacksTotal => "rollbacks_total",
        RollbackPct => "rollback_pct",
        Connections => "connections",
        ConnectionsActive => "connections_active",
        ConnectionsIdle => "connections_idle",
        ConnectionsIdleInTransaction => "connections_idle_in_transaction",
        ConnectionsUsedPct => "connections_used_pct",
        LockWaits => "lock_waits",
        LockWaitMaxS => "lock_wait_max_s",
        LongestQueryS => "longest_query_s",
        LongestTransactionS => "longest_transaction_s",
        IdleInTransactionMaxS => "idle_in_transaction_max_s",
        DeadlocksTotal => "deadlocks_total",
        TempFilesTotal => "temp_files_total",
        TempBytesTotal => "temp_bytes_total",
        DeadTuples => "dead_tuples",
        TablesOverdueVacuum => "tables_overdue_vacuum",
        CheckpointsTotal => "checkpoints_total",
        BuffersWrittenTotal => "buffers_written_total",
        WalBytesTotal => "wal_bytes_total",
        DatabaseBytes => "database_bytes",
        Replicas => "replicas",
        ReplicationLagMaxS => "replication_lag_max_s",
        SourcesUnreachable => "sources_unreachable",
        SourcePullAgeMaxS => "source_pull_age_max_s",
        FailuresDropped => "failures_dropped",
        HighConfidenceRecommendation => "high_confidence_recommendation",
        StatementP95Ratio => "statement_p95_ratio",
    }
}

/// Whether a figure only grows (until a statistics reset) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// What one metric is, for people and for the exporter.
pub struct About {
    pub unit: &'static str,
    pub kind: Kind,
    /// One subject per database (None), or one per recommendation or statement.
    pub per: Option<&'static str>,
    pub meaning: &'static str,
    pub source: &'static str,
}

impl Metric {
    pub fn about(self) -> About {
        use Kind::{Counter, Gauge};
        let (unit, kind, per, meaning, source) = match self {
            Metric::CacheHitPct => ("%", Gauge, None, "share of block reads served from shared buffers since the statistics reset", "pg_stat_database blks_hit / (blks_hit + blks_read), this database"),
            Metric::CommitsTotal => ("transactions", Counter, None, "transactions committed", "pg_stat_database.xact_commit"),
            Metric::RollbacksTotal => ("transactions", Counter, None, "transactions rolled back", "pg_stat_database.xact_rollback"),
            Metric::RollbackPct => ("%", Gauge, None, "share of transactions rolled back since the statistics reset", "pg_stat_database xact_rollback / (xact_commit + xact_rollback)"),
            Metric::Connections => ("sessions", Gauge, None, "client sessions, all databases", "pg_stat_activity, backend_type = 'client backend'"),
            Metric::ConnectionsActive => ("sessions", Gauge, None, "client sessions running a statement", "pg_stat_activity.state = 'active'"),
            Metric::ConnectionsIdle => ("sessions", Gauge, None, "client sessions waiting for a command", "pg_stat_activity.state = 'idle'"),
            Metric::ConnectionsIdleInTransaction => ("sessions", Gauge, None, "client sessions idle inside an open transaction (they hold locks and snapshots)", "pg_stat_activity.state LIKE 'idle in transaction%'"),
            Metric::ConnectionsUsedPct => ("%", Gauge, None, "client sessions against the connections available to ordinary roles", "pg_stat_activity / (max_connections - superuser_reserved_connections)"),
            Metric::LockWaits => ("sessions", Gauge, None, "sessions waiting for a heavyweight lock", "pg_locks.granted = false"),
            Metric::LockWaitMaxS => ("s", Gauge, None, "the longest current lock wait; details name the blocked and blocking sessions and their statements", "pg_locks.waitstart, pg_blocking_pids(), pg_stat_activity"),
            Metric::LongestQueryS => ("s", Gauge, None, "the longest-running active statement (client sessions)", "now() - pg_stat_activity.query_start, state = 'active'"),
            Metric::LongestTransactionS => ("s", Gauge, None, "the oldest open transaction (client sessions): it holds back vacuum", "now() - pg_stat_activity.xact_start"),
            Metric::IdleInTransactionMaxS => ("s", Gauge, None, "the longest a session has been idle inside a transaction", "now() - pg_stat_activity.state_change, state 'idle in transaction'"),
            Metric::DeadlocksTotal => ("deadlocks", Counter, None, "deadlocks detected in this database", "pg_stat_database.deadlocks"),
            Metric::TempFilesTotal => ("files", Counter, None, "temporary files written by sorts and hashes that did not fit work_mem", "pg_stat_database.temp_files"),
            Metric::TempBytesTotal => ("bytes", Counter, None, "bytes written to temporary files", "pg_stat_database.temp_bytes"),
            Metric::DeadTuples => ("rows", Gauge, None, "dead rows waiting for vacuum, all tables of this database", "sum(pg_stat_all_tables.n_dead_tup)"),
            Metric::TablesOverdueVacuum => ("tables", Gauge, None, "tables whose dead rows passed autovacuum's trigger point (threshold + scale factor x rows); details list the worst", "pg_stat_all_tables, pg_class.reltuples, autovacuum_vacuum_threshold/_scale_factor"),
            Metric::CheckpointsTotal => ("checkpoints", Counter, None, "checkpoints, timed and requested", "pg_stat_bgwriter (pg_stat_checkpointer from PostgreSQL 17)"),
            Metric::BuffersWrittenTotal => ("buffers", Counter, None, "shared buffers written by checkpoints and the background writer (and backends, before PostgreSQL 17)", "pg_stat_bgwriter / pg_stat_checkpointer"),
            Metric::WalBytesTotal => ("bytes", Counter, None, "WAL position in bytes: its growth is the WAL volume written", "pg_current_wal_lsn() - '0/0' (NULL on a standby)"),
            Metric::DatabaseBytes => ("bytes", Gauge, None, "size of this database on disk", "pg_database_size(current_database())"),
            Metric::Replicas => ("replicas", Gauge, None, "streaming replicas connected to this server", "pg_stat_replication"),
            Metric::ReplicationLagMaxS => ("s", Gauge, None, "the largest replay lag of a connected replica (NULL without replicas)", "pg_stat_replication.replay_lag"),
            Metric::SourcesUnreachable => ("sources", Gauge, None, "registered read replicas whose last pull failed; details give every source's state, error and seconds since its last successful pull", "optidb.source.state = 'unreachable' (add_source())"),
            Metric::SourcePullAgeMaxS => ("s", Gauge, None, "the longest time since a registered source was last pulled (since registration if never; NULL without sources)", "now() - optidb.source.last_pulled_at"),
            Metric::FailuresDropped => ("failures", Gauge, None, "failed executions whose text and search_path the shared-memory failure slots could not keep since the latest snapshot or scan, all roles (details: per role; one role flooding failures shows here); each pass files it in optidb.scan_log.failures_dropped and starts again from 0", "optidb's shared-memory failure slots (src/postgres/latency/failed.rs)"),
            Metric::HighConfidenceRecommendation => ("confidence", Gauge, Some("recommendation"), "an open recommendation's confidence (0-1); alert source for new high-confidence advice", "optidb.recommendation, status 'open'"),
            Metric::StatementP95Ratio => ("ratio", Gauge, Some("statement"), "a statement's p95 over the last hour divided by its p95 over the 7 days before (at least 20 and 100 calls)", "optidb.latency (optidb's own histograms)"),
        };
        About {
            unit,
            kind,
            per,
            meaning,
            source,
        }
    }

    /// Figures of the database as a whole (what optidb.health() lists and history keeps).
    pub fn database_wide() -> impl Iterator<Item = Metric> {
        <Metric as vocabulary::Vocabulary>::ALL
            .iter()
            .copied()
            .filter(|m| m.about().per.is_none())
    }
}

/// The most severe of `severities` (declaration order: info < warning < critical).
pub fn worst(
    severities: impl Iterator<Item = vocabulary::Severity>,
) -> Option<vocabulary::Severity> {
    use vocabulary::Vocabulary;
    severities.max_by_key(|s| vocabulary::Severity::ALL.iter().position(|x| x == s))
}

/// A health status from the most severe rule whose condition holds now ("ok" if none).
pub fn status(worst: Option<vocabulary::Severity>) -> &'static str {
    worst.map_or("ok", |s| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described() {
        for m in <Metric as vocabulary::Vocabulary>::ALL {
            let a = m.about();
            assert!(!a.unit.is_empty() && !a.meaning.is_empty() && !a.source.is_empty());
            assert_eq!(
                a.kind == Kind::Counter,
                m.as_str().ends_with("_total"),
                "{m:?}"
            );
        }
        assert!(Metric::database_wide().any(|m| m == Metric::LockWaitMaxS));
        assert!(!Metric::database_wide().any(|m| m == Metric::StatementP95Ratio));
        assert_eq!(status(None), "ok");
        use vocabulary::Severity::*;
        assert_eq!(worst([Warning, Critical, Info].into_iter()), Some(Critical));
        assert_eq!(worst([Info].into_iter()), Some(Info));
        assert_eq!(status(Some(vocabulary::Severity::Critical)), "critical");
    }
}
