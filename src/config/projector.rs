//! `[projector]`: applying stored events to the tables.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    pub enabled: bool,
    /// Most events applied in one transaction. Unset, it depends on the backend: see
    /// `projector::chunk_size`.
    pub batch: Option<usize>,
    /// How often the queue is looked at when nothing announced new work.
    pub poll_interval_ms: u64,
    /// How many times an event may fail to apply, with the database otherwise answering,
    /// before it is marked `failed` and the queue goes on without it.
    pub max_attempts: u32,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch: None,
            poll_interval_ms: 1_000,
            max_attempts: 5,
        }
    }
}
