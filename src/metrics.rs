//! Process counters, exposed in Prometheus text format on the admin listener. A handful of
//! atomics is all this needs; no registry, no allocation on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What is waiting on the database (every instance's, when several share it): events stored
/// and not yet projected, and media URLs not yet downloaded. Read at scrape time (`admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub events_queued: i64,
    pub media_pending: i64,
}

#[derive(Default)]
pub struct Metrics {
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub stored_invalid: AtomicU64,
    pub stored_unhandled: AtomicU64,
    pub unauthorized: AtomicU64,
    pub forbidden: AtomicU64,
    pub too_large: AtomicU64,
    pub unavailable: AtomicU64,
    pub bad_requests: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub applied: AtomicU64,
    pub stale: AtomicU64,
    pub failed: AtomicU64,
    /// Events stored with the time of receipt as their order because the time they named was
    /// too far ahead or not a time.
    pub time_replaced: AtomicU64,
    /// Connections closed at once because their peer address had its share already.
    pub peer_limited: AtomicU64,
    /// SQLite write-ahead log checkpoints that failed (a full disk, say).
    pub checkpoint_failures: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = [
            ("stored", &self.stored),
            ("duplicate", &self.duplicates),
            ("unauthorized", &self.unauthorized),
            ("forbidden", &self.forbidden),
            ("too_large", &self.too_large),
            ("unavailable", &self.unavailable),
            ("bad_request", &self.bad_requests),
        ];
        out.push_str("# HELP hooksync_requests_total Webhook requests by outcome.\n# TYPE hooksync_requests_total counter\n");
        for (k, v) in requests {
            let _ = writeln!(
                out,
                "hooksync_requests_total{{outcome=\"{k}\"}} {}",
                v.load(Relaxed)
            );
        }
        out.push_str("# HELP hooksync_events_stored_total Events stored, by status at ingest.\n# TYPE hooksync_events_stored_total counter\n");
        let queued = self.stored.load(Relaxed).saturating_sub(
            self.stored_invalid.load(Relaxed) + self.stored_unhandled.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "hooksync_events_stored_total{{status=\"queued\"}} {queued}"
        );
        let _ = writeln!(
            out,
            "hooksync_events_stored_total{{status=\"invalid\"}} {}",
            self.stored_invalid.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "hooksync_events_stored_total{{status=\"unhandled\"}} {}",
            self.stored_unhandled.load(Relaxed)
        );
        out.push_str("# HELP hooksync_events_projected_total Events the projector finished, by outcome.\n# TYPE hooksync_events_projected_total counter\n");
        for (k, v) in [
            ("applied", &self.applied),
            ("stale", &self.stale),
            ("failed", &self.failed),
        ] {
            let _ = writeln!(
                out,
                "hooksync_events_projected_total{{status=\"{k}\"}} {}",
                v.load(Relaxed)
            );
        }
        out.push_str("# HELP hooksync_event_times_replaced_total Events ordered at their time of receipt because the time they named was too far ahead or not a time (events.time_note says which).\n# TYPE hooksync_event_times_replaced_total counter\n");
        let _ = writeln!(
            out,
            "hooksync_event_times_replaced_total {}",
            self.time_replaced.load(Relaxed)
        );
        out.push_str("# HELP hooksync_connections_refused_total Connections closed at once because their peer address had server.max_connections_per_peer open.\n# TYPE hooksync_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "hooksync_connections_refused_total{{reason=\"per_peer\"}} {}",
            self.peer_limited.load(Relaxed)
        );
        out.push_str("# HELP hooksync_commits_total Group commits of the inbox.\n# TYPE hooksync_commits_total counter\n");
        let _ = writeln!(
            out,
            "hooksync_commits_total{{result=\"ok\"}} {}",
            self.commits.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "hooksync_commits_total{{result=\"error\"}} {}",
            self.commit_failures.load(Relaxed)
        );
        out.push_str("# HELP hooksync_checkpoint_failures_total SQLite write-ahead log checkpoints that failed.\n# TYPE hooksync_checkpoint_failures_total counter\n");
        let _ = writeln!(
            out,
            "hooksync_checkpoint_failures_total {}",
            self.checkpoint_failures.load(Relaxed)
        );
        out
    }

    /// The gauges read from the database at scrape time, after the counters.
    pub fn render_backlog(out: &mut String, b: &Backlog) {
        let _ = write!(
            out,
            "# HELP hooksync_events_queued Events stored and not yet projected (every instance's, on a shared database).\n\
             # TYPE hooksync_events_queued gauge\nhooksync_events_queued {}\n\
             # HELP hooksync_media_pending Media URLs not yet downloaded (nor failed or expired).\n\
             # TYPE hooksync_media_pending gauge\nhooksync_media_pending {}\n",
            b.events_queued, b.media_pending
        );
    }
}
