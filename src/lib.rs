//! hooksync: verifies billing and collections webhooks, stores each event once and durably,
//! and projects the events, in the order they happened, into plain SQL tables.
//!
//! The flow of one event is `server` (HTTP/TLS, limits) → `providers` (signature over the raw
//! bytes, envelope) → `inbox` (group commit into the `events` table) → `projector` (ordered,
//! guarded upserts into the domain tables described in `projection`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod event;
pub mod inbox;
pub mod json;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod outage;
pub mod projection;
pub mod projector;
pub mod providers;
pub mod rebuild;
pub mod secret;
pub mod server;
pub mod store;
pub mod timefmt;
pub mod tls;

pub mod app;

pub use app::{run, Listeners};
