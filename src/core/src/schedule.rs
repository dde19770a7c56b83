//! The background worker's timetable: jobs that repeat at fixed intervals without drift.
//!
//! A job's next run is its previous *due* time plus its interval, not the time it finished, so
//! slow jobs do not push the schedule later and later. Runs missed while a job was busy (or the
//! server was paused) are skipped, never replayed in a burst. Times are offsets from the
//! worker's start, so the logic needs no clock and tests drive it directly.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
struct Slot<J> {
    job: J,
    interval: Duration,
    next_due: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule<J> {
    slots: Vec<Slot<J>>,
}

impl<J: Copy + PartialEq> Schedule<J> {
    /// Every job is due at `now` (the first round runs immediately).
    pub fn new(jobs: &[(J, Duration)], now: Duration) -> Self {
        Schedule {
            slots: jobs
                .iter()
                .map(|&(job, interval)| Slot {
                    job,
                    interval: interval.max(Duration::from_millis(1)),
                    next_due: now,
                })
                .collect(),
        }
    }

    /// How long to sleep from `now` until the next job is due (zero if one is due already).
    pub fn wait(&self, now: Duration) -> Duration {
        self.slots
            .iter()
            .map(|s| s.next_due.saturating_sub(now))
            .min()
            .unwrap_or(Duration::from_secs(60))
    }

    /// The jobs due at `now`, in the order they were given; each is moved to its next slot on
    /// its own grid (due + k * interval, the first one after `now`).
    pub fn take_due(&mut self, now: Duration) -> Vec<J> {
        let mut due = Vec::new();
        for slot in &mut self.slots {
            if slot.next_due <= now {
                due.push(slot.job);
                let behind = (now - slot.next_due).as_nanos() / slot.interval.as_nanos();
                slot.next_due += slot.interval * (behind as u32 + 1);
            }
        }
        due
    }

    /// Apply a new interval (after a configuration reload): the next run is re-anchored to the
    /// last due time, so shortening an interval takes effect at once.
    pub fn set_interval(&mut self, job: J, interval: Duration) {
        let interval = interval.max(Duration::from_millis(1));
        if let Some(slot) = self.slots.iter_mut().find(|s| s.job == job) {
            let last_due = slot.next_due.saturating_sub(slot.interval);
            slot.interval = interval;
            slot.next_due = last_due + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Job {
        Snapshot,
        Refresh,
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn runs_everything_first_then_on_each_grid() {
        let mut sched = Schedule::new(&[(Job::Snapshot, s(60)), (Job::Refresh, s(300))], s(0));
        assert_eq!(sched.take_due(s(0)), vec![Job::Snapshot, Job::Refresh]);
        assert_eq!(sched.wait(s(0)), s(60));
        assert!(sched.take_due(s(59)).is_empty());
        assert_eq!(sched.take_due(s(60)), vec![Job::Snapshot]);
        assert_eq!(sched.wait(s(60)), s(60));
        assert_eq!(sched.take_due(s(300)), vec![Job::Snapshot, Job::Refresh]);
    }

    #[test]
    fn slow_jobs_do_not_drift_the_schedule() {
        let mut sched = Schedule::new(&[(Job::Snapshot, s(10))], s(0));
        let mut now = s(0);
        let mut runs = Vec::new();
        for _ in 0..100 {
            now += sched.wait(now);
            for _ in sched.take_due(now) {
                runs.push(now);
                now += Duration::from_millis(2_500); // the job takes 2.5 s
            }
        }
        // Every run starts exactly on the 10 s grid despite the 2.5 s each job takes.
        for (i, at) in runs.iter().enumerate() {
            assert_eq!(*at, s(10 * i as u64));
        }
    }

    #[test]
    fn missed_runs_are_skipped_not_replayed() {
        let mut sched = Schedule::new(&[(Job::Snapshot, s(10))], s(0));
        sched.take_due(s(0));
        // The worker was busy for 35 s: one run now, then back on the grid at 40 s.
        assert_eq!(sched.take_due(s(35)), vec![Job::Snapshot]);
        assert!(sched.take_due(s(39)).is_empty());
        assert_eq!(sched.wait(s(35)), s(5));
    }

    #[test]
    fn a_shorter_interval_after_reload_applies_at_once() {
        let mut sched = Schedule::new(&[(Job::Refresh, s(300))], s(0));
        sched.take_due(s(0));
        sched.set_interval(Job::Refresh, s(5));
        assert_eq!(sched.wait(s(2)), s(3));
        assert_eq!(sched.take_due(s(5)), vec![Job::Refresh]);
        assert_eq!(sched.wait(s(5)), s(5));
    }
}
