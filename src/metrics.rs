//! The daemon's metrics, in Prometheus' text format on the admin listener, kept by the
//! `prometheus` crate: counters and histograms by endpoint and outcome, the standard
//! `process_*` metrics, and gauges read from the database at scrape time.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What is waiting on the database (every instance's, when several share it), read at scrape
/// time (`admin`).
#[derive(Debug, Clone)]
pub struct Backlog {
    pub events_queued: i64,
    /// Age of the oldest queued event, seconds; 0 with none queued.
    pub oldest_queued_seconds: f64,
    pub media_pending: i64,
    /// Each destination's state.
    pub deliveries: Vec<crate::deliveries::Summary>,
}

pub struct Metrics {
    registry: Registry,
    /// Webhook requests by endpoint name (empty for no route) and outcome.
    pub requests: IntCounterVec,
    /// From the request's arrival to its answer, by endpoint.
    pub ack_duration: HistogramVec,
    /// Which of an endpoint's secrets verified a request, by position in its list.
    pub signature_matches: IntCounterVec,
    /// Events stored, by status at ingest.
    pub stored: IntCounterVec,
    /// Events in each group commit.
    pub commit_batch: Histogram,
    /// Events the projector finished, by source and outcome.
    pub applied: IntCounterVec,
    /// From an event's arrival to its projection.
    pub projection_lag: Histogram,
    pub media_downloads: IntCounterVec,
    /// Database operations that failed, by operation (commit, project, checkpoint, ...).
    pub db_errors: IntCounterVec,
    /// Events ordered at their time of receipt (the time they named was too far ahead or
    /// not a time).
    pub time_replaced: IntCounter,
    /// Connections closed at once, by reason.
    pub connections_refused: IntCounterVec,
    /// Delivery attempts to the CRM, by destination and outcome.
    pub deliveries: IntCounterVec,
    /// From a delivery's request to the end of its answer, by destination.
    pub delivery_duration: HistogramVec,
    delivery_backlog: IntGaugeVec,
    delivery_oldest: prometheus::GaugeVec,
    destination_paused: IntGaugeVec,
    events_queued: IntGauge,
    oldest_queued: prometheus::Gauge,
    media_pending: IntGauge,
    database_up: IntGauge,
}

/// Latency buckets from 0.5 ms to 10 s: an acknowledgement is a group commit away.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            // Each name is registered once, by this constructor, so this cannot clash.
            let _ = r.register(Box::new(c.clone()));
            c
        }
        fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
        }
        fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
            HistogramOpts::new(name, help).buckets(buckets)
        }
        let m = Metrics {
            requests: reg(&registry, counters("hooksync_requests_total", "Webhook requests by endpoint and outcome.", &["endpoint", "outcome"])),
            ack_duration: reg(&registry, HistogramVec::new(histogram("hooksync_ack_duration_seconds", "From a webhook request's arrival to its answer.", SECONDS.to_vec()), &["endpoint"]).unwrap_or_else(|e| unreachable!("{e}"))),
            signature_matches: reg(&registry, counters("hooksync_signature_matches_total", "Requests verified, by endpoint and the position of the secret that matched (0 is the first).", &["endpoint", "secret"])),
            stored: reg(&registry, counters("hooksync_events_stored_total", "Events stored, by status at ingest.", &["status"])),
            commit_batch: reg(&registry, Histogram::with_opts(histogram("hooksync_commit_batch_events", "Events per group commit.", vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0])).unwrap_or_else(|e| unreachable!("{e}"))),
            applied: reg(&registry, counters("hooksync_events_applied_total", "Events the projector finished, by source and outcome (applied, stale, failed).", &["source", "outcome"])),
            projection_lag: reg(&registry, Histogram::with_opts(histogram("hooksync_projection_lag_seconds", "From an event's arrival to its projection.", SECONDS.iter().copied().chain([30.0, 60.0, 300.0, 3600.0]).collect())).unwrap_or_else(|e| unreachable!("{e}"))),
            media_downloads: reg(&registry, counters("hooksync_media_downloads_total", "Media downloads by outcome (fetched, retry, failed, expired).", &["outcome"])),
            db_errors: reg(&registry, counters("hooksync_db_errors_total", "Database operations that failed, by operation.", &["operation"])),
            time_replaced: reg(&registry, IntCounter::new("hooksync_event_times_replaced_total", "Events ordered at their time of receipt because the time they named was too far ahead or not a time (events.time_note says which).").unwrap_or_else(|e| unreachable!("{e}"))),
            connections_refused: reg(&registry, counters("hooksync_connections_refused_total", "Connections closed at once, by reason (per_peer: the peer address had server.max_connections_per_peer open).", &["reason"])),
            deliveries: reg(&registry, counters("hooksync_deliveries_total", "Delivery attempts to [[forward]] destinations, by destination and outcome (delivered, failed: to be tried again, dead: given up, paused: answered 410).", &["destination", "outcome"])),
            delivery_duration: reg(&registry, HistogramVec::new(histogram("hooksync_delivery_duration_seconds", "From a delivery's request to the end of its answer (or its error).", SECONDS.iter().copied().chain([30.0, 60.0]).collect()), &["destination"]).unwrap_or_else(|e| unreachable!("{e}"))),
            delivery_backlog: reg(&registry, IntGaugeVec::new(Opts::new("hooksync_delivery_backlog", "Deliveries not yet delivered nor given up, by destination; the last value read while hooksync_database_up is 0."), &["destination"]).unwrap_or_else(|e| unreachable!("{e}"))),
            delivery_oldest: reg(&registry, prometheus::GaugeVec::new(Opts::new("hooksync_delivery_oldest_pending_age_seconds", "Age of the oldest delivery not yet delivered nor given up, 0 with none, by destination."), &["destination"]).unwrap_or_else(|e| unreachable!("{e}"))),
            destination_paused: reg(&registry, IntGaugeVec::new(Opts::new("hooksync_destination_paused", "1 while a destination is paused (it answered 410 Gone; hooksync forward resume NAME)."), &["destination"]).unwrap_or_else(|e| unreachable!("{e}"))),
            events_queued: reg(&registry, IntGauge::new("hooksync_events_queued", "Events stored and not yet projected (every instance's, on a shared database); the last value read while hooksync_database_up is 0.").unwrap_or_else(|e| unreachable!("{e}"))),
            oldest_queued: reg(&registry, prometheus::Gauge::new("hooksync_queue_oldest_age_seconds", "Age of the oldest queued event, 0 with none; the last value read while hooksync_database_up is 0.").unwrap_or_else(|e| unreachable!("{e}"))),
            media_pending: reg(&registry, IntGauge::new("hooksync_media_pending", "Media URLs not yet downloaded (nor failed or expired); the last value read while hooksync_database_up is 0.").unwrap_or_else(|e| unreachable!("{e}"))),
            database_up: reg(&registry, IntGauge::new("hooksync_database_up", "1 when the gauges read from the database were read at this scrape, 0 when it did not answer in time.").unwrap_or_else(|e| unreachable!("{e}"))),
            registry,
        };
        let build = reg(
            &m.registry,
            IntGaugeVec::new(
                Opts::new("hooksync_build_info", "The running build; always 1."),
                &["version"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        // Counters that are 0 still say they exist, so a rate over them is 0, not absent.
        for status in ["queued", "invalid", "unhandled"] {
            m.stored.with_label_values(&[status]);
        }
        m.connections_refused.with_label_values(&["per_peer"]);
        for op in ["commit", "project", "checkpoint"] {
            m.db_errors.with_label_values(&[op]);
        }
        m
    }

    /// Counts one failed database operation.
    pub fn db_error(&self, operation: &str) {
        self.db_errors.with_label_values(&[operation]).inc();
    }

    /// Sets the gauges read from the database; `None` when it did not answer, which keeps the
    /// last values and says so with `hooksync_database_up 0`.
    pub fn set_backlog(&self, b: Option<Backlog>) {
        match b {
            Some(b) => {
                self.events_queued.set(b.events_queued);
                self.oldest_queued.set(b.oldest_queued_seconds);
                self.media_pending.set(b.media_pending);
                let now = crate::stamp::Stamp::now();
                for d in &b.deliveries {
                    let name = [d.destination.as_str()];
                    self.delivery_backlog
                        .with_label_values(&name)
                        .set(d.pending);
                    self.delivery_oldest
                        .with_label_values(&name)
                        .set(d.oldest_pending.map_or(0.0, |t| t.until(now).as_secs_f64()));
                    self.destination_paused
                        .with_label_values(&name)
                        .set(i64::from(d.paused_at.is_some()));
                }
                self.database_up.set(1);
            }
            None => self.database_up.set(0),
        }
    }

    /// Everything, in the text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
