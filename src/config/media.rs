//! `[media]`: downloading the recordings and letters followups link to.

use std::path::PathBuf;

use serde::Deserialize;

use super::text;

/// Pre-fetching of call recordings and letters (presigned URLs that expire).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    pub enabled: bool,
    /// Where files go: `<dir>/<source>/<followup>-<kind>[.ext]`.
    #[serde(deserialize_with = "text::path")]
    pub dir: PathBuf,
    /// Hosts media may come from: exact names, or `*.domain` for its subdomains.
    #[serde(deserialize_with = "text::list")]
    pub allowed_hosts: Vec<String>,
    /// Allow loopback, private, link-local and other non-public addresses (tests, labs).
    pub allow_private_networks: bool,
    /// Allow plain `http://` URLs.
    pub allow_http: bool,
    pub max_bytes: u64,
    /// Downloads at once.
    pub concurrency: usize,
    pub connect_timeout_ms: u64,
    /// Whole download, first byte to last.
    pub timeout_ms: u64,
    pub max_redirects: usize,
    /// A PEM file of extra CA certificates to trust (besides the public roots).
    #[serde(deserialize_with = "text::optional_path")]
    pub extra_ca_file: Option<PathBuf>,
    /// First retry delay; doubles per attempt, with jitter, up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often due retries are looked for when nothing announced new media.
    pub poll_interval_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("media"),
            allowed_hosts: vec!["*.cloudfront.net".into()],
            allow_private_networks: false,
            allow_http: false,
            max_bytes: 200 << 20,
            concurrency: 4,
            connect_timeout_ms: 10_000,
            timeout_ms: 600_000,
            max_redirects: 3,
            extra_ca_file: None,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            poll_interval_ms: 5_000,
        }
    }
}
