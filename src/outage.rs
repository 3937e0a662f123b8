//! Logging a failure that repeats for as long as its cause lasts.
//!
//! While the database is down, every batch, every poll and every request fails the same way.
//! A line for each flooded the journal: a 4-second PostgreSQL restart under load wrote over
//! half a million lines, drowning the one that said why. An [`Outage`] tells when a run of
//! failures starts, then at most once per interval how long it has lasted and how many
//! failures there have been, and once when it ends.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a failure that goes on is told again.
pub const RETELL_EVERY: Duration = Duration::from_secs(10);

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    /// The first failure of a run: log it, with its error, and the failures of earlier runs
    /// too short to be told.
    Start { earlier: u64 },
    /// The run goes on, and nothing was told for at least an interval.
    Still { failures: u64, lasted: Duration },
    /// Something was told recently; count it and say nothing.
    Quiet,
}

/// A run of failures that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub failures: u64,
    pub lasted: Duration,
}

/// What to log for a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The run whose start was told has ended.
    Ended(Ended),
    /// Failures of runs too short to be told, an interval after the last line. Without this,
    /// they would wait for the next told start to carry them, and if the cause is gone for
    /// good that never comes.
    Brief { failures: u64 },
}

/// One concern's run of failures (the store's commits, the projector's chunks, ...).
///
/// Lines are at most one per interval, whatever the pattern: a cause that comes and goes
/// (a queue full one moment and not the next) would otherwise log a start and an end for
/// each time it flapped. A run that starts within an interval of the last line is not told,
/// nor is its end; its failures are counted into the next start that is.
#[derive(Debug)]
pub struct Outage {
    /// What fails, for the log: "database writes", "projector", "signatures on getbill", ...
    what: Cow<'static, str>,
    every: Duration,
    run: Option<Run>,
    /// When the last line was told.
    told: Option<Instant>,
    /// Failures of runs that ended untold.
    untold: u64,
}

#[derive(Debug)]
struct Run {
    started: Instant,
    failures: u64,
    /// Whether its start was told (then so is its end).
    told: bool,
}

impl Outage {
    pub fn new(what: impl Into<Cow<'static, str>>) -> Self {
        Self::every(what, RETELL_EVERY)
    }

    pub fn every(what: impl Into<Cow<'static, str>>, every: Duration) -> Self {
        Self {
            what: what.into(),
            every,
            run: None,
            told: None,
            untold: 0,
        }
    }

    /// Counts a failure and logs it if the run calls for it.
    pub fn fail(&mut self, error: &dyn Display) {
        match self.failed(Instant::now()) {
            Tell::Start { earlier: 0 } => tracing::warn!(what = &*self.what, %error, "failing"),
            Tell::Start { earlier } => {
                tracing::warn!(what = &*self.what, %error, earlier_failures = earlier, "failing")
            }
            Tell::Still { failures, lasted } => tracing::warn!(
                what = &*self.what,
                %error,
                failures,
                lasted_s = lasted.as_secs(),
                "still failing"
            ),
            Tell::Quiet => {}
        }
    }

    /// A success: logs the end of the run of failures, if there was one and it was told, or
    /// the failures of short runs not told yet.
    pub fn recover(&mut self) {
        match self.succeeded(Instant::now()) {
            Some(Over::Ended(end)) => tracing::info!(
                what = &*self.what,
                failures = end.failures,
                lasted_ms = u64::try_from(end.lasted.as_millis()).unwrap_or(u64::MAX),
                "working again"
            ),
            Some(Over::Brief { failures }) => self.tell_brief(failures),
            None => {}
        }
    }

    /// Whether a success may still have something to tell.
    fn pending(&self) -> bool {
        self.run.is_some() || self.untold > 0
    }

    /// True between a failure and the next success.
    #[cfg(test)]
    fn is_on(&self) -> bool {
        self.run.is_some()
    }

    /// Whether a line may be told at `now`, and if so, notes that one is.
    fn tell(&mut self, now: Instant) -> bool {
        let may = self
            .told
            .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if may {
            self.told = Some(now);
        }
        may
    }

    /// Counts a failure at `now` and says what to log. A run is told, as a start, at its
    /// first failure an interval after the last line; after that, as going on.
    pub fn failed(&mut self, now: Instant) -> Tell {
        let may = self.tell(now);
        let run = self.run.get_or_insert(Run {
            started: now,
            failures: 0,
            told: false,
        });
        run.failures += 1;
        if !may {
            return Tell::Quiet;
        }
        if !run.told {
            run.told = true;
            return Tell::Start {
                earlier: std::mem::take(&mut self.untold),
            };
        }
        Tell::Still {
            failures: run.failures,
            lasted: now.saturating_duration_since(run.started),
        }
    }

    /// A success at `now`: the run of failures it ends, if there was one whose start was told;
    /// else the failures of untold runs, once an interval has passed since the last line.
    pub fn succeeded(&mut self, now: Instant) -> Option<Over> {
        if let Some(end) = self.end_run(now) {
            self.told = Some(now);
            return Some(Over::Ended(end));
        }
        if self.untold > 0 && self.tell(now) {
            return Some(Over::Brief {
                failures: std::mem::take(&mut self.untold),
            });
        }
        None
    }

    /// Takes what has not been told, at `now`, for the last lines.
    pub fn unsaid(&mut self, now: Instant) -> Unsaid {
        Unsaid {
            still: self.end_run(now),
            untold: std::mem::take(&mut self.untold),
        }
    }

    /// Ends the current run at `now`: a told one comes back to be told ended; an untold one's
    /// failures join the untold count.
    fn end_run(&mut self, now: Instant) -> Option<Ended> {
        let run = self.run.take()?;
        if !run.told {
            self.untold += run.failures;
            return None;
        }
        Some(Ended {
            failures: run.failures,
            lasted: now.saturating_duration_since(run.started),
        })
    }

    fn tell_brief(&self, failures: u64) {
        tracing::warn!(
            what = &*self.what,
            failures,
            "failed briefly since the last report"
        );
    }
}

/// What the log does not have yet when an outage's owner stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unsaid {
    /// A told run still going: its end will never come.
    pub still: Option<Ended>,
    /// Failures of runs never told.
    pub untold: u64,
}

/// When its owner stops (at shutdown), an outage tells what the log does not have yet: a run
/// whose end never came, and failures of runs too short to have been told.
impl Drop for Outage {
    fn drop(&mut self) {
        let unsaid = self.unsaid(Instant::now());
        if let Some(run) = unsaid.still {
            tracing::warn!(
                what = &*self.what,
                failures = run.failures,
                lasted_s = run.lasted.as_secs(),
                "still failing when stopped"
            );
        }
        if unsaid.untold > 0 {
            self.tell_brief(unsaid.untold);
        }
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
    pub fn new(what: impl Into<Cow<'static, str>>) -> Self {
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
                // Short runs not told yet keep successes coming here until they are.
                self.on.store(o.pending(), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_run_is_told_when_it_starts_then_once_per_interval_then_when_it_ends() {
        let t0 = Instant::now();
        let at = |ms| at(t0, ms);
        let mut o = Outage::every("test", Duration::from_secs(10));
        assert!(!o.is_on());
        assert_eq!(o.succeeded(at(0)), None, "no run, nothing ends");

        assert_eq!(o.failed(at(0)), Tell::Start { earlier: 0 });
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
            Some(Over::Ended(Ended {
                failures: 1004,
                lasted: Duration::from_secs(25)
            }))
        );
        assert!(!o.is_on());
        assert_eq!(o.succeeded(at(26_000)), None, "told once");
        // A new run long after the last line is told at once.
        assert_eq!(o.failed(at(40_000)), Tell::Start { earlier: 0 });
    }

    #[test]
    fn a_cause_that_comes_and_goes_is_told_at_most_once_per_interval() {
        let t0 = Instant::now();
        let at = |ms| at(t0, ms);
        let mut o = Outage::every("test", Duration::from_secs(10));
        assert_eq!(o.failed(at(0)), Tell::Start { earlier: 0 });
        assert!(o.succeeded(at(1)).is_some(), "the told run's end is told");
        // A thousand short runs within the interval: neither their starts nor their ends.
        for i in 1..=1000 {
            assert_eq!(o.failed(at(i * 9)), Tell::Quiet);
            assert_eq!(o.succeeded(at(i * 9 + 1)), None);
        }
        // The next start after the interval carries them.
        assert_eq!(o.failed(at(10_001)), Tell::Start { earlier: 1000 });
        assert!(matches!(
            o.succeeded(at(10_002)),
            Some(Over::Ended(Ended { failures: 1, .. }))
        ));

        // A run that starts untold and goes on is told, as a start, an interval after the
        // last line; its end then is too.
        assert_eq!(o.failed(at(10_003)), Tell::Quiet);
        assert_eq!(o.failed(at(15_000)), Tell::Quiet);
        assert_eq!(o.failed(at(20_002)), Tell::Start { earlier: 0 });
        assert_eq!(
            o.succeeded(at(21_000)),
            Some(Over::Ended(Ended {
                failures: 3,
                lasted: Duration::from_millis(21_000 - 10_003)
            }))
        );
    }

    #[test]
    fn short_runs_are_told_an_interval_later_when_no_start_carries_them() {
        let t0 = Instant::now();
        let at = |ms| at(t0, ms);
        let mut o = Outage::every("test", Duration::from_secs(10));
        assert_eq!(o.failed(at(0)), Tell::Start { earlier: 0 });
        assert!(o.succeeded(at(100)).is_some());
        // Three short runs, then the cause is gone for good.
        for t in [1_000, 2_000, 3_000] {
            assert_eq!(o.failed(at(t)), Tell::Quiet);
            assert_eq!(o.succeeded(at(t + 1)), None);
        }
        assert!(o.pending(), "successes must keep coming to the outage");
        assert_eq!(
            o.succeeded(at(10_099)),
            None,
            "an interval after the last line"
        );
        assert_eq!(o.succeeded(at(10_100)), Some(Over::Brief { failures: 3 }));
        assert!(!o.pending());
        assert_eq!(o.succeeded(at(30_000)), None, "told once");
        // The line counts as one: a run starting within the interval is not told at once.
        let mut o2 = Outage::every("test", Duration::from_secs(10));
        o2.failed(at(0));
        o2.succeeded(at(1));
        o2.failed(at(2));
        assert_eq!(o2.succeeded(at(10_001)), Some(Over::Brief { failures: 1 }));
        assert_eq!(o2.failed(at(10_002)), Tell::Quiet);
    }

    #[test]
    fn what_was_not_told_is_told_when_the_owner_stops() {
        let t0 = Instant::now();
        let at = |ms| at(t0, ms);
        let mut o = Outage::every("test", Duration::from_secs(10));
        assert_eq!(o.unsaid(at(0)), Unsaid::default(), "nothing happened");
        o.failed(at(0));
        o.succeeded(at(1));
        o.failed(at(2));
        o.succeeded(at(3));
        o.failed(at(4));
        // One short run over, one going on, neither told.
        assert_eq!(
            o.unsaid(at(5)),
            Unsaid {
                still: None,
                untold: 2
            }
        );
        assert_eq!(o.unsaid(at(6)), Unsaid::default(), "told once");
        // A told run still going at the end.
        o.failed(at(20_000));
        o.failed(at(21_000));
        assert_eq!(
            o.unsaid(at(22_000)),
            Unsaid {
                still: Some(Ended {
                    failures: 2,
                    lasted: Duration::from_secs(2)
                }),
                untold: 0
            }
        );
    }

    #[test]
    fn a_shared_outage_stays_listening_until_short_runs_are_told() {
        let o = SharedOutage::new("test");
        o.fail(&"first");
        o.recover();
        assert!(
            !o.on.load(Ordering::Relaxed),
            "the told run ended: nothing left"
        );
        o.fail(&"second, within the interval");
        o.recover();
        assert!(
            o.on.load(Ordering::Relaxed),
            "an untold failure keeps successes coming"
        );
    }
}
