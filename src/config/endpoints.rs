//! `[[endpoints]]`: one per webhook subscription.

use serde::Deserialize;

use super::text;

/// `Debug` is written by hand below: `secrets` and `auth_header.value` may hold literal secrets.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    #[serde(deserialize_with = "text::one")]
    pub name: String,
    /// The `source` column of its rows; defaults to `name`. Endpoints that describe one system
    /// (one BigLedger subscription per topic) share a source, so their rows meet.
    #[serde(default, deserialize_with = "text::optional")]
    pub source: Option<String>,
    #[serde(deserialize_with = "text::one")]
    pub path: String,
    #[serde(deserialize_with = "text::one")]
    pub provider: String,
    #[serde(default, deserialize_with = "text::list")]
    pub secrets: Vec<String>,
    #[serde(default, deserialize_with = "text::optional")]
    pub tenant: Option<String>,
    /// bigledger-topic: the one topic this subscription carries.
    #[serde(default, deserialize_with = "text::optional")]
    pub topic: Option<String>,
    /// bigledger-topic: the static header the subscription sends; `value` is a secret spec.
    #[serde(default)]
    pub auth_header: Option<AuthHeaderConfig>,
}

impl EndpointConfig {
    /// The `source` of the endpoint's rows: `source` if set, else `name`.
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthHeaderConfig {
    #[serde(deserialize_with = "text::one")]
    pub name: String,
    #[serde(deserialize_with = "text::one")]
    pub value: String,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("tenant", &self.tenant)
            .field("topic", &self.topic)
            .field(
                "auth_header",
                &self
                    .auth_header
                    .as_ref()
                    .map(|h| format!("{}: <redacted>", h.name)),
            )
            .finish()
    }
}
