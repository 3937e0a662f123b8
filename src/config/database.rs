//! `[database]`: where events are stored, and how the single writer commits them.

use serde::Deserialize;

use super::text;

#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// May hold a password: printed only through [`redact_url`].
    #[serde(deserialize_with = "text::one")]
    pub url: String,
    /// Most events one group commit takes.
    pub batch_max: usize,
    /// Requests waiting for a commit before new ones are answered 503.
    pub queue_capacity: usize,
    /// How long a request waits for its commit before it is answered 503.
    pub commit_timeout_ms: u64,
    /// How long a write waits for a lock another process holds before it fails.
    pub busy_timeout_ms: u64,
    /// The nice value the store thread asks for. It commits every batch, and every
    /// acknowledgement waits for it: on two busy cores it otherwise waits for a CPU behind the
    /// HTTP side it serves.
    pub writer_nice: i32,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("batch_max", &self.batch_max)
            .field("queue_capacity", &self.queue_capacity)
            .field("commit_timeout_ms", &self.commit_timeout_ms)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("writer_nice", &self.writer_nice)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://hooksync.db".into(),
            batch_max: 512,
            queue_capacity: 8192,
            commit_timeout_ms: 5_000,
            busy_timeout_ms: 2_000,
            writer_nice: -10,
        }
    }
}

/// A database URL fit for a log line: user and password, and a `password=` parameter, hidden.
pub fn redact_url(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let params: Vec<String> = out[q + 1..]
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], params.join("&"));
    }
    out
}
