//! Providers: how each sender signs, what its envelope looks like, and how its events map onto
//! the tables. A provider is one file implementing [`Provider`]; this module holds what they
//! share (HMAC, constant-time comparison, the lifecycle rank, the JSON depth guard) and the
//! [`Endpoint`], which is the only way to turn request bytes into a [`NewEvent`].

pub mod bigledger;
pub mod bigledger_topic;
pub mod bill;
pub mod getbill;
pub mod standard;

use std::sync::Arc;

use crate::stamp::Stamp;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::EndpointConfig;
use crate::event::{EventStatus, NewEvent};
use crate::json::{json_depth_ok, json_keys_unique, json_storable};
use crate::projection::{Outcome, ProjectError, QueuedEvent, Tx};
use crate::secret::Secret;

type Build = fn(&EndpointConfig, Vec<Secret>) -> Result<Arc<dyn Provider>, String>;

/// Every provider kind a config may name, and how an endpoint of that kind is built. Adding a
/// provider is one file plus one line here.
const REGISTRY: &[(&str, Build)] = &[
    ("getbill", getbill::build),
    ("bill", bill::build),
    ("bigledger", bigledger::build),
    ("bigledger-topic", bigledger_topic::build),
    ("standard", standard::build),
];

pub fn kinds() -> Vec<&'static str> {
    REGISTRY.iter().map(|(k, _)| *k).collect()
}

/// Builds the provider for one endpoint, with its resolved secrets.
pub fn build(cfg: &EndpointConfig, secrets: Vec<Secret>) -> Result<Arc<dyn Provider>, String> {
    let (_, build) = REGISTRY
        .iter()
        .find(|(k, _)| *k == cfg.provider)
        .ok_or_else(|| {
            format!(
                "unknown provider {:?} (known: {})",
                cfg.provider,
                kinds().join(", ")
            )
        })?;
    build(cfg, secrets)
}

/// Whether each endpoint's secrets resolve and its provider takes its settings; each problem
/// starts with the key it concerns (`endpoints[0].secrets[1]: ...`).
pub fn check(endpoints: &[EndpointConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        let mut secrets = Vec::new();
        for (j, spec) in ep.secrets.iter().enumerate() {
            match Secret::resolve(spec) {
                Ok(s) => secrets.push(s),
                Err(e) => problems.push(format!("{at}.secrets[{j}]: {e}")),
            }
        }
        if !kinds().contains(&ep.provider.as_str()) {
            problems.push(format!(
                "{at}.provider: unknown provider {:?} (known: {})",
                ep.provider,
                kinds().join(", ")
            ));
        } else if secrets.len() == ep.secrets.len() {
            if let Err(e) = Endpoint::from_parts(ep, secrets) {
                problems.push(format!("{at}.{e}"));
            }
        }
    }
    problems
}

/// `cfg` with a random stand-in for each secret that does not resolve: what a rebuild builds
/// its providers from, since applying stored events verifies nothing (a stand-in verifies
/// nothing either).
pub fn without_secrets(cfg: &EndpointConfig) -> EndpointConfig {
    use base64::Engine;
    let mut cfg = cfg.clone();
    let stand_in = |standard: bool| {
        let bytes = rand::random::<[u8; 24]>();
        if standard {
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        } else {
            hex::encode(bytes)
        }
    };
    let standard = cfg.provider == "standard";
    for s in cfg.secrets.iter_mut() {
        if Secret::resolve(s).is_err() {
            *s = stand_in(standard);
        }
    }
    if let Some(a) = cfg.auth_header.as_mut() {
        if Secret::resolve(&a.value).is_err() {
            a.value = stand_in(false);
        }
    }
    cfg
}

/// For signed providers: at least one secret.
pub fn require_secrets(secrets: Vec<Secret>) -> Result<Vec<Secret>, String> {
    if secrets.is_empty() {
        return Err("secrets: at least one secret is needed".into());
    }
    Ok(secrets)
}

/// Why a request's credentials were not accepted. Never carries the signature or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("signature header missing")]
    Missing,
    #[error("signature header malformed")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp outside tolerance")]
    Stale,
}

/// What a provider reads from an authentic body before it is stored.
#[derive(Debug)]
pub struct Envelope {
    pub event_id: String,
    pub event_type: String,
    /// When the event says it happened: its ordering key.
    pub occurred_at: When,
    pub tenant: Option<String>,
    /// The decoded JSON as text (the body itself unless the provider had to unwrap it).
    pub payload: String,
    /// Whether the projector knows this event type; unknown ones are kept as `unhandled`.
    pub handled: bool,
    /// Why an event is kept but not projected, when that needs saying.
    pub note: Option<String>,
}

/// The time an event says it happened, as its provider's envelope gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    At(Stamp),
    /// The event names no time: it is ordered at the time of receipt.
    Absent,
    /// The event names a time that is not one (the sender's text, for the event's note).
    Unreadable(String),
}

impl When {
    /// Reads a JSON value that should hold a timestamp; null or missing is `Absent`.
    pub fn of(v: Option<&Value>) -> When {
        match v {
            None | Some(Value::Null) => When::Absent,
            Some(Value::String(s)) => match Stamp::parse(s) {
                Some(t) => When::At(t),
                None => When::Unreadable(s.clone()),
            },
            Some(other) => When::Unreadable(other.to_string()),
        }
    }

    /// Reads a field already known to be text.
    pub fn of_text(s: Option<&str>) -> When {
        match s {
            None => When::Absent,
            Some(s) => Stamp::parse(s).map_or_else(|| When::Unreadable(s.to_owned()), When::At),
        }
    }

    /// The first of several fields that names a time.
    pub fn first<'v>(fields: impl IntoIterator<Item = Option<&'v Value>>) -> When {
        fields
            .into_iter()
            .map(When::of)
            .find(|w| *w != When::Absent)
            .unwrap_or(When::Absent)
    }

    /// This, or when the event names no time, what `other` says.
    pub fn or_else(self, other: impl FnOnce() -> When) -> When {
        match self {
            When::Absent => other(),
            named => named,
        }
    }

    pub fn at(&self) -> Option<Stamp> {
        match self {
            When::At(t) => Some(*t),
            _ => None,
        }
    }

    /// The ordering time of an event received at `received`, and why it is not the time the
    /// event names when it is not: one sender's clock error must not order an event after
    /// everything that follows it (a row guarded by a time years ahead takes no update again).
    pub fn ordering(
        self,
        received: Stamp,
        max_future_skew: std::time::Duration,
    ) -> (Stamp, Option<String>) {
        let latest =
            time::Duration::try_from(max_future_skew).map_or(received, |skew| received.plus(skew));
        match self {
            When::At(t) if t > latest => (
                received,
                Some(format!(
                    "occurred_at {} is more than {} s after receipt; ordered at the time of receipt",
                    t,
                    max_future_skew.as_secs()
                )),
            ),
            When::At(t) => (t, None),
            When::Absent => (received, None),
            When::Unreadable(text) => {
                let shown: String = text.chars().take(64).collect();
                (
                    received,
                    Some(format!(
                        "occurred_at {shown:?} is not a time; ordered at the time of receipt"
                    )),
                )
            }
        }
    }
}

pub trait Provider: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Whether events say which tenant they belong to (so `tenant` can be enforced).
    fn has_tenant(&self) -> bool {
        true
    }

    /// Checks the credentials over the raw bytes, before anything parses them; says which of
    /// the endpoint's secrets matched (its position in the list), so an operator can tell
    /// when an old one is no longer used.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, AuthError>;

    /// Reads the envelope of an authentic body; `Err` says why it is not a usable event.
    fn envelope(&self, headers: &HeaderMap, body: &[u8]) -> Result<Envelope, String>;

    /// Applies one stored event to the domain tables.
    fn project(&self, event: &QueuedEvent, tx: &mut Tx<'_>) -> Result<Outcome, ProjectError>;

    /// How long this provider resends an event hooksync did not acknowledge, and what to do
    /// about the events of an outage longer than that (`hooksync status`).
    fn retries(&self) -> Retries;

    /// The event types `send-test` has a sample body for, the first the default.
    fn sample_types(&self) -> Vec<String>;

    /// A sample body of `event_type` as the provider's documentation shows it, with a fresh
    /// id and the current time (`hooksync send-test`).
    fn sample(&self, event_type: &str, v: &SampleVars<'_>) -> Result<Vec<u8>, String>;

    /// The header(s) this provider would send with `body`, signed with the endpoint's first
    /// secret (`hooksync sign`, `hooksync send-test`). `id` and `at` (Unix seconds) are used
    /// by schemes that sign them.
    fn sign(&self, body: &[u8], id: &str, at: i64) -> Vec<(String, String)>;

    /// The headers its signature travels in (lower case), as `sign` writes them: what a
    /// passthrough destination is given as received.
    fn signature_headers(&self) -> Vec<String> {
        self.sign(b"{}", "msg_0", 0)
            .into_iter()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect()
    }
}

/// What a sample body is filled with.
pub struct SampleVars<'a> {
    /// A fresh event id.
    pub id: &'a str,
    pub now: Stamp,
    /// The endpoint's tenant, where it has one (the sample must belong to it).
    pub tenant: Option<&'a str>,
}

impl SampleVars<'_> {
    /// `template` with `{id}`, `{now}`, `{object}` and `{tenant}` filled in (`{tenant}` with
    /// `fallback` when the endpoint has none).
    pub fn fill(&self, template: &str, fallback_tenant: &str) -> Vec<u8> {
        template
            .replace("{id}", self.id)
            .replace("{now}", &self.now.to_string())
            .replace("{object}", &format!("test-{}", self.id))
            .replace("{tenant}", self.tenant.unwrap_or(fallback_tenant))
            .into_bytes()
    }
}

/// The template for `event_type` among `samples`.
pub fn sample_of<'s>(samples: &'s [(&str, &str)], event_type: &str) -> Result<&'s str, String> {
    samples
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, body)| *body)
        .ok_or_else(|| {
            let known: Vec<&str> = samples.iter().map(|(t, _)| *t).collect();
            format!(
                "no sample of type {event_type:?}; there are: {}",
                known.join(", ")
            )
        })
}

/// A provider's resending, as `hooksync status` weighs an outage against it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Retries {
    /// From the first attempt to the last; `None` where the provider does not publish it.
    pub window: Option<std::time::Duration>,
    /// What recovers the events sent while hooksync was away beyond that.
    pub recover: &'static str,
}

/// The hex HMAC-SHA256 of `body` under the first of `secrets`, after `prefix`.
fn hex_hmac_header(
    secrets: &[Secret],
    name: &str,
    prefix: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    secrets
        .first()
        .map(|s| {
            (
                name.to_owned(),
                format!("{prefix}{}", hex::encode(hmac_sha256(s.expose(), &[body]))),
            )
        })
        .into_iter()
        .collect()
}

/// Tie-break for events with the same timestamp: the lifecycle position of the event type.
pub fn lifecycle_rank(event_type: &str) -> i64 {
    let last = event_type
        .rsplit(['.', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match last.as_str() {
        "created" => 0,
        "completed" | "failed" | "paid" | "received" | "canceled" | "cancelled" => 2,
        "deleted" => 3,
        _ => 1,
    }
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality that is false for different lengths, so an empty or truncated
/// signature never passes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A 32-byte MAC written as 64 hex digits, either case.
pub fn decode_hex_mac(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, AuthError> {
    let v = headers.get(name).ok_or(AuthError::Missing)?;
    let s = v.to_str().map_err(|_| AuthError::Malformed)?.trim();
    if s.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(s)
}

/// A body that is JSON text (after the UTF-8 check every provider needs).
pub fn utf8(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())
}

/// Reads a hex HMAC-SHA256 header (optionally after `prefix`) and checks it against every
/// secret; every secret is tried so the time taken does not say which one matched.
pub fn verify_hex_hmac(
    secrets: &[Secret],
    headers: &HeaderMap,
    name: &str,
    prefix: &str,
    body: &[u8],
) -> Result<usize, AuthError> {
    let value = header(headers, name)?;
    let value = value.strip_prefix(prefix).unwrap_or(value);
    let given = decode_hex_mac(value).ok_or(AuthError::Malformed)?;
    any_secret_signed(secrets, &given, body)
}

/// Which of `secrets` `given` is the HMAC-SHA256 of `body` under. Every secret is tried, so
/// the time taken does not say which one matched.
pub fn any_secret_signed(
    secrets: &[Secret],
    given: &[u8],
    body: &[u8],
) -> Result<usize, AuthError> {
    first_match(
        secrets
            .iter()
            .map(|s| ct_eq(&hmac_sha256(s.expose(), &[body]), given)),
    )
}

/// The position of the first `true`, having looked at every one.
pub fn first_match(matches: impl Iterator<Item = bool>) -> Result<usize, AuthError> {
    let mut found = None;
    for (i, m) in matches.enumerate() {
        if m && found.is_none() {
            found = Some(i);
        }
    }
    found.ok_or(AuthError::Mismatch)
}

/// A JSON id as text: strings as they are, numbers as their plain decimal text
/// ([`crate::json::canonical_number`]).
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(crate::json::canonical_number(n.as_str()).into_owned()),
        _ => None,
    }
}

/// A configured endpoint: where it listens and which provider (with its secrets) speaks there.
pub struct Endpoint {
    /// Its `name` in the configuration (the `endpoint` label of metrics and log lines).
    pub name: String,
    /// The `source` of its events and rows.
    pub source: Arc<str>,
    pub path: String,
    pub provider: Arc<dyn Provider>,
    pub tenant: Option<String>,
    /// A passthrough destination takes its events: each keeps its body and signature headers
    /// as received (`original_headers`).
    pub keep_original: bool,
    /// The headers kept with the body: content type and the provider's signature headers.
    kept_headers: Vec<String>,
}

/// Proof that a body passed its endpoint's verification. Only [`Endpoint::verify`] makes one,
/// and only a `Verified` body can become a [`NewEvent`] for the inbox.
pub struct Verified<'a> {
    /// The position of the endpoint's secret that matched.
    pub secret: usize,
    endpoint: &'a Endpoint,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// What bounds how an authentic body becomes an event.
#[derive(Debug, Clone)]
pub struct EventLimits {
    /// Deeper JSON is kept as `invalid` rather than parsed.
    pub max_json_depth: usize,
    /// How far past its receipt an event's own time may lie before it is ordered at the time
    /// of receipt instead.
    pub max_future_skew: std::time::Duration,
}

/// Why an authentic request is still not stored.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("event belongs to another tenant")]
    Tenant,
}

impl Endpoint {
    /// Resolves the endpoint's secrets and builds it (what the daemon does at start).
    pub fn from_config(cfg: &EndpointConfig) -> Result<Endpoint, String> {
        let secrets = cfg
            .secrets
            .iter()
            .map(|s| Secret::resolve(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("endpoint {}: secrets: {e}", cfg.name))?;
        Self::from_parts(cfg, secrets).map_err(|e| format!("endpoint {}: {e}", cfg.name))
    }

    /// Builds the endpoint from resolved secrets. Errors start with the key they concern, so
    /// `check-config` can name it.
    pub fn from_parts(cfg: &EndpointConfig, secrets: Vec<Secret>) -> Result<Endpoint, String> {
        let provider = build(cfg, secrets)?;
        let tenant = cfg.tenant.clone().filter(|t| !t.is_empty());
        if tenant.is_some() && !provider.has_tenant() {
            return Err(format!(
                "tenant: {} events carry no tenant",
                provider.kind()
            ));
        }
        Ok(Endpoint {
            name: cfg.name.clone(),
            source: Arc::from(cfg.source()),
            path: cfg.path.clone(),
            kept_headers: std::iter::once("content-type".to_string())
                .chain(provider.signature_headers())
                .collect(),
            provider,
            tenant,
            keep_original: false,
        })
    }

    /// The headers a passthrough destination is given, as received, as a JSON object.
    fn original_headers(&self, headers: &HeaderMap) -> String {
        let kept: serde_json::Map<String, Value> = self
            .kept_headers
            .iter()
            .filter_map(|name| {
                let v = headers.get(name.as_str())?.to_str().ok()?;
                Some((name.clone(), Value::String(v.to_owned())))
            })
            .collect();
        Value::Object(kept).to_string()
    }

    pub fn verify<'a>(
        &'a self,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Result<Verified<'a>, AuthError> {
        let secret = self.provider.verify(headers, body)?;
        Ok(Verified {
            secret,
            endpoint: self,
            headers,
            body,
        })
    }
}

impl Verified<'_> {
    /// Reads the envelope and decides how the event is stored. Authentic bytes are never
    /// dropped: what cannot be read is kept as `invalid`, under an id derived from its hash.
    pub fn into_event(self, received_at: Stamp, limits: &EventLimits) -> Result<NewEvent, Refusal> {
        let ep = self.endpoint;
        let max_json_depth = limits.max_json_depth;
        let envelope = if json_depth_ok(self.body, max_json_depth) {
            ep.provider
                .envelope(self.headers, self.body)
                .and_then(|env| {
                    json_storable(&env.payload)?;
                    json_keys_unique(&env.payload)?;
                    Ok(env)
                })
        } else {
            Err(format!("JSON nested deeper than {max_json_depth}"))
        };
        let original_headers = ep.keep_original.then(|| ep.original_headers(self.headers));
        match envelope {
            Ok(env) => {
                if let Some(want) = &ep.tenant {
                    if env.tenant.as_deref() != Some(want.as_str()) {
                        return Err(Refusal::Tenant);
                    }
                }
                let (occurred, time_note) = env
                    .occurred_at
                    .ordering(received_at, limits.max_future_skew);
                Ok(NewEvent {
                    source: ep.source.clone(),
                    provider: ep.provider.kind(),
                    rank: lifecycle_rank(&env.event_type),
                    status: if env.handled {
                        EventStatus::Queued
                    } else {
                        EventStatus::Unhandled
                    },
                    event_id: env.event_id,
                    event_type: Some(env.event_type),
                    occurred_at: occurred,
                    received_at,
                    tenant: env.tenant,
                    payload: Some(env.payload),
                    raw_body: ep.keep_original.then(|| self.body.to_vec()),
                    headers: original_headers,
                    last_error: env.note,
                    time_note,
                })
            }
            Err(why) => Ok(NewEvent {
                headers: original_headers,
                ..NewEvent::invalid(
                    ep.source.clone(),
                    ep.provider.kind(),
                    self.body.to_vec(),
                    received_at,
                    why,
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_far_ahead_or_unreadable_are_replaced_by_the_receipt() {
        let received = Stamp::parse("2026-01-01T00:00:00Z").unwrap();
        let skew = std::time::Duration::from_secs(300);
        let within = received.plus(time::Duration::seconds(299));
        assert_eq!(When::At(within).ordering(received, skew), (within, None));
        let (at, note) =
            When::At(Stamp::parse("9999-12-31T00:00:00Z").unwrap()).ordering(received, skew);
        assert_eq!(at, received);
        assert!(note.unwrap().contains("9999-12-31"));
        let (at, note) =
            When::of(Some(&Value::String("yesterday".into()))).ordering(received, skew);
        assert_eq!(at, received);
        assert!(note.unwrap().contains("\"yesterday\" is not a time"));
        assert_eq!(When::Absent.ordering(received, skew), (received, None));
    }

    #[test]
    fn ranks_follow_the_lifecycle() {
        assert!(lifecycle_rank("debt.created") < lifecycle_rank("debt.updated"));
        assert!(lifecycle_rank("debt.status_changed") < lifecycle_rank("payment.received"));
        assert!(lifecycle_rank("followup.completed") < lifecycle_rank("debt.deleted"));
        assert_eq!(lifecycle_rank("CUSTOMER_CREATED"), 0);
        assert_eq!(lifecycle_rank("INVENTORY_DELETED"), 3);
    }

    #[test]
    fn ct_eq_refuses_other_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"abc"));
    }
}
