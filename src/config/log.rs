//! `[log]`: level, format and the access log.

use serde::Deserialize;

use super::text;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `hooksync=debug,info`); `RUST_LOG` wins when set.
    #[serde(deserialize_with = "text::one")]
    pub level: String,
    /// `text` or `json`.
    #[serde(deserialize_with = "text::one")]
    pub format: String,
    /// One line per webhook request at info level (target `hooksync::access`).
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            access: true,
        }
    }
}
