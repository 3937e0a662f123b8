//! Logging a failure that repeats for as long as its cause lasts.
//!
//! While the database is down, every batch, every poll and every request fails the same way.
//! A line for each flooded the journal: a 4-second PostgreSQL restart under load wrote over
//! half a million lines, drowning the one that said why. An [`Outage`] tells when a run of
//! failures starts, then at most once per interval how long it has lasted and how many
//! failures there have been, and once when it ends.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a failure that goes on is told again.
pub const RETELL_EVERY: Duration = Duration::from_secs(10);

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    /// The first failure of a run: log it, with its error.
    Start,
    /// The run goes on and was last told at least an interval ago.
    Still { failures: u64, lasted: Duration },
    /// Told recently; count it and say nothing.
    Quiet,
}

/// A run of failures that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub failures: u64,
    pub lasted: Duration,
}

/// One concern's run of failures (the store's commits, the projector's chunks, ...).
#[derive(Debug)]
pub struct Outage {
    /// What fails, for the log: "database writes", "projector", ...
    what: &'static str,
    every: Duration,
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    started: Instant,
    told: Instant,
    failures: u64,
}

impl Outage {
    pub fn new(what: &'static str) -> Self {
        Self::every(what, RETELL_EVERY)
    }

    pub fn every(what: &'static str, every: Duration) -> Self {
        Self {
            what,
            every,
            run: None,
        }
    }

    /// Counts a failure and logs it if the run calls for it.
    pub fn fail(&mut self, error: &dyn Display) {
        let what = self.what;
        match self.failed(Instant::now()) {
            Tell::Start => tracing::warn!(what, %error, "failing; retrying"),
            Tell::Still { failures, lasted } => tracing::warn!(
                what,
                %error,
                failures,
                lasted_s = lasted.as_secs(),
                "still failing; retrying"
            ),
            Tell::Quiet => {}
        }
    }

    /// A success: logs the end of the run of failures, if there was one.
    pub fn recover(&mut self) {
        if let Some(end) = self.succeeded(Instant::now()) {
            tracing::info!(
                what = self.what,
                failures = end.failures,
                lasted_ms = u64::try_from(end.lasted.as_millis()).unwrap_or(u64::MAX),
                "working again"
            );
        }
    }

    /// True between a failure and the next success.
    pub fn is_on(&self) -> bool {
        self.run.is_some()
    }

    /// Counts a failure at `now` and says what to log.
    pub fn failed(&mut self, now: Instant) -> Tell {
        match &mut self.run {
            None => {
                self.run = Some(Run {
                    started: now,
                    told: now,
                    failures: 1,
                });
                Tell::Start
            }
            Some(run) => {
                run.failures += 1;
                if now.saturating_duration_since(run.told) >= self.every {
                    run.told = now;
                    Tell::Still {
                        failures: run.failures,
                        lasted: now.saturating_duration_since(run.started),
                    }
                } else {
                    Tell::Quiet
                }
            }
        }
    }

    /// A success at `now`: the run of failures it ends, if there was one.
    pub fn succeeded(&mut self, now: Instant) -> Option<Ended> {
        self.run.take().map(|run| Ended {
            failures: run.failures,
            lasted: now.saturating_duration_since(run.started),
        })
    }
}

/// An [`Outage`] that many tasks report to (the server's requests). While nothing fails, a
/// success costs one atomic load, not a lock.
#[derive(Debug)]
pub struct SharedOutage {
    on: AtomicBool,
    outage: Mutex<Outage>,
}

impl SharedOutage {
    pub fn new(what: &'static str) -> Self {
        Self {
            on: AtomicBool::new(false),
            outage: Mutex::new(Outage::new(what)),
        }
    }

    pub fn fail(&self, error: &dyn Display) {
        if let Ok(mut o) = self.outage.lock() {
            o.fail(error);
            self.on.store(true, Ordering::Relaxed);
        }
    }

    pub fn recover(&self) {
        if self.on.load(Ordering::Relaxed) {
            if let Ok(mut o) = self.outage.lock() {
                o.recover();
                self.on.store(false, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_told_when_it_starts_then_once_per_interval_then_when_it_ends() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut o = Outage::every("test", Duration::from_secs(10));
        assert!(!o.is_on());
        assert_eq!(o.succeeded(at(0)), None, "no run, nothing ends");

        assert_eq!(o.failed(at(0)), Tell::Start);
        assert!(o.is_on());
        // A thousand failures within the interval say nothing more.
        for i in 1..=1000 {
            assert_eq!(o.failed(at(i * 9)), Tell::Quiet);
        }
        assert_eq!(
            o.failed(at(10_000)),
            Tell::Still {
                failures: 1002,
                lasted: Duration::from_secs(10)
            }
        );
        assert_eq!(
            o.failed(at(19_999)),
            Tell::Quiet,
            "counted from the last telling"
        );
        assert_eq!(
            o.failed(at(20_000)),
            Tell::Still {
                failures: 1004,
                lasted: Duration::from_secs(20)
            }
        );
        assert_eq!(
            o.succeeded(at(25_000)),
            Some(Ended {
                failures: 1004,
                lasted: Duration::from_secs(25)
            })
        );
        assert!(!o.is_on());
        assert_eq!(o.succeeded(at(26_000)), None, "told once");
        // The next failure starts a new run.
        assert_eq!(o.failed(at(27_000)), Tell::Start);
    }
}
