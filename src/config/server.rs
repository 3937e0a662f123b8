//! `[server]`: the webhook listener: addresses, TLS files, and the bounds on what a client may send.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::text;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_key: Option<PathBuf>,
    /// `None` (an empty string in the file) turns the admin listener off.
    #[serde(deserialize_with = "optional_addr")]
    pub admin_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub max_json_depth: usize,
    pub max_future_skew_ms: u64,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls_cert: None,
            tls_key: None,
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_body_bytes: 1 << 20,
            max_connections: 1024,
            max_connections_per_peer: 256,
            max_json_depth: 64,
            max_future_skew_ms: 300_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = text::one(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}
