//! hooksync: verifies billing and collections webhooks, stores each event once and durably,
//! and projects the events, in the order they happened, into plain SQL tables.
//!
//! The flow of one event is `listener` (connections, TLS) → `server` (routes, body limits) →
//! `providers` (signature over the raw bytes, envelope) → `inbox` (group commit into the
//! `events` table) → `projector` (ordered, guarded upserts into the domain tables described in
//! `projection`). docs/architecture.md has the whole picture.
#![forbid(unsafe_code)]

mod admin;
pub mod cli;
pub mod config;
pub mod deliveries;
pub mod event;
mod fetcher;
mod forwarder;
pub mod inbox;
pub mod json;
mod listener;
pub mod media;
pub mod metrics;
pub mod ops;
mod outage;
mod projection;
pub mod projector;
pub mod providers;
pub mod rebuild;
mod runs;
mod secret;
mod server;
pub mod stamp;
pub mod store;
mod systemd;
pub mod tls;

pub mod app;

/// What benchmarks and tests reach that the daemon keeps to itself: the store thread's commit
/// timed on its own, and the statement the projector takes its work with. Nothing else in the
/// crate uses this module.
pub mod testkit {
    use crate::event::NewEvent;
    use crate::store::{Backend, Db, StoreError};

    /// The store thread's commit of one batch: durable, skipping known ids; for each event,
    /// whether it was new.
    pub fn store_batch(db: &mut Db, evs: &[&NewEvent]) -> Result<Vec<bool>, StoreError> {
        crate::inbox::store_batch(db, evs)
    }

    /// The store thread's rule for finishing a checkpoint after its `commits`th commit.
    pub fn checkpoint_if_due(db: &mut Db, commits: u64) -> Result<(), StoreError> {
        crate::inbox::checkpoint_if_due(db, commits)
    }

    /// The statement the projector takes its next chunk with.
    pub fn next_queued_sql(backend: Backend) -> &'static str {
        crate::projector::next_queued_sql(backend)
    }
}

pub use app::{run, Listeners};
