//! `[[forward]]`: the CRM's own webhook handlers that events are delivered on to.

use serde::Deserialize;

use super::text;

/// What a destination receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardMode {
    /// The provider's own body and signature headers, as received.
    #[default]
    Passthrough,
    /// A Standard Webhooks request signed with the destination's secret, the stored payload in it.
    Standard,
    /// The domain rows an event changed, as they stand when delivered, signed as `standard`.
    Rows,
}

impl<'de> Deserialize<'de> for ForwardMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = text::one(d)?;
        [
            ForwardMode::Passthrough,
            ForwardMode::Standard,
            ForwardMode::Rows,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected \"passthrough\", \"standard\" or \"rows\", found {text:?}"
            ))
        })
    }
}

impl ForwardMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Passthrough => "passthrough",
            ForwardMode::Standard => "standard",
            ForwardMode::Rows => "rows",
        }
    }
}

/// `Debug` is written by hand below: `secrets` may hold literal secrets.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    #[serde(deserialize_with = "text::one")]
    pub name: String,
    #[serde(deserialize_with = "text::one")]
    pub url: String,
    /// `passthrough` by default.
    #[serde(default)]
    pub mode: ForwardMode,
    /// The endpoint names whose events it takes; empty: every endpoint.
    #[serde(default, deserialize_with = "text::list")]
    pub endpoints: Vec<String>,
    /// Event types it takes: exact (`payment.received`) or a prefix and `*` (`debt.*`);
    /// empty: every type.
    #[serde(default, deserialize_with = "text::list")]
    pub events: Vec<String>,
    /// `standard` and `rows`: secret specs (`whsec_...`, `env:VAR`, `file:/path`); the first signs.
    #[serde(default, deserialize_with = "text::list")]
    pub secrets: Vec<String>,
    /// Also events older than what their object already shows.
    #[serde(default)]
    pub include_stale: bool,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight at once (to different objects).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// How long after its first attempt a delivery is given up (`dead`): `90s`, `30m`, `12h`, `3d`.
    #[serde(default = "defaults::give_up_after", deserialize_with = "text::one")]
    pub give_up_after: String,
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        10_000
    }
    pub fn concurrency() -> usize {
        8
    }
    pub fn retry_base_ms() -> u64 {
        1_000
    }
    pub fn retry_max_ms() -> u64 {
        600_000
    }
    pub fn give_up_after() -> String {
        "3d".into()
    }
}

/// A span of time written as a number and a unit: `s`, `m`, `h` or `d`.
pub fn parse_span(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let unit = t.chars().last()?;
    let n: u64 = t[..t.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3_600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

impl ForwardConfig {
    /// Whether it takes events of this type.
    pub fn takes_type(&self, event_type: &str) -> bool {
        self.events.is_empty()
            || self.events.iter().any(|f| match f.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => f == event_type,
            })
    }

    /// How long a delivery is retried; the default when `give_up_after` does not parse (which
    /// `check-config` refuses).
    pub fn give_up(&self) -> std::time::Duration {
        parse_span(&self.give_up_after).unwrap_or(std::time::Duration::from_secs(3 * 86_400))
    }

    /// The problems of the `i`th destination that need nothing beyond the file, each starting
    /// with its key.
    pub fn problems(&self, i: usize, endpoint_names: &[&str]) -> Vec<String> {
        let at = format!("forward[{i}]");
        let mut p = Vec::new();
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            p.push(format!(
                "{at}.name: letters, digits, '-' and '_' only, found {:?}",
                self.name
            ));
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => p.push(format!(
                "{at}.url: an http:// or https:// URL with a host is needed, found scheme {:?}",
                u.scheme()
            )),
            Err(e) => p.push(format!("{at}.url: does not parse: {e}")),
        }
        for e in &self.endpoints {
            if !endpoint_names.contains(&e.as_str()) {
                p.push(format!("{at}.endpoints: no endpoint is named {e:?}"));
            }
        }
        for f in &self.events {
            if f.is_empty() || f[..f.len().saturating_sub(1)].contains('*') {
                p.push(format!(
                    "{at}.events: {f:?} is neither a type nor a prefix followed by '*'"
                ));
            }
        }
        if self.mode != ForwardMode::Passthrough && self.secrets.is_empty() {
            p.push(format!(
                "{at}.secrets: a {} destination signs its requests and needs a secret",
                self.mode.as_str()
            ));
        }
        for (key, v) in [
            ("concurrency", self.concurrency as u64),
            ("timeout_ms", self.timeout_ms),
            ("retry_base_ms", self.retry_base_ms),
        ] {
            if v == 0 {
                p.push(format!("{at}.{key}: must be greater than 0"));
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            p.push(format!("{at}.retry_max_ms: less than retry_base_ms"));
        }
        if parse_span(&self.give_up_after).is_none() {
            p.push(format!(
                "{at}.give_up_after: a number and a unit (s, m, h, d), found {:?}",
                self.give_up_after
            ));
        }
        p
    }
}

impl std::fmt::Debug for ForwardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("mode", &self.mode)
            .field("endpoints", &self.endpoints)
            .field("events", &self.events)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("include_stale", &self.include_stale)
            .field("timeout_ms", &self.timeout_ms)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_type_filters() {
        assert_eq!(parse_span("3d").map(|d| d.as_secs()), Some(259_200));
        assert_eq!(parse_span("90s").map(|d| d.as_secs()), Some(90));
        for bad in ["", "3", "d", "3w", "-1h", "1.5h"] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
        let cfg: ForwardConfig = serde_json::from_value(serde_json::json!({
            "name": "crm", "url": "http://127.0.0.1:1/h", "mode": "passthrough",
            "events": ["debt.*", "payment.received"], "give_up_after": "3d"
        }))
        .unwrap();
        assert!(cfg.takes_type("debt.created"));
        assert!(cfg.takes_type("payment.received"));
        assert!(!cfg.takes_type("payment.failed"));
        assert!(!cfg.takes_type("debtor.created"));
    }
}
