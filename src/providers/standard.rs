//! Standard Webhooks (many SaaS senders): `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}`, keyed by the decoded bytes of a `whsec_<base64>` secret.
//! Timestamps more than five minutes from now are refused. Events go to `records`, with the
//! first segment of the payload's `type` as their kind.

use std::sync::Arc;

use base64::Engine;
use http::HeaderMap;
use serde_json::Value;

use super::{ct_eq, header, hmac_sha256, id_text, utf8, AuthError, Envelope, Provider, When};
use crate::config::EndpointConfig;
use crate::projection::{tomb_for, Outcome, ProjectError, QueuedEvent, Tx, RECORDS};
use crate::secret::Secret;

/// How far a timestamp may be from now, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

pub struct Standard {
    keys: Vec<Vec<u8>>,
}

pub fn build(_cfg: &EndpointConfig, secrets: Vec<Secret>) -> Result<Arc<dyn Provider>, String> {
    let keys = super::require_secrets(secrets)?
        .iter()
        .enumerate()
        .map(|(i, s)| decode_secret(s.expose()).map_err(|e| format!("secrets[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Standard { keys }))
}

/// `whsec_<base64>` → the key bytes.
pub fn decode_secret(secret: &[u8]) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix(b"whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "not a whsec_<base64> secret".to_string())?;
    if key.is_empty() {
        return Err("secret is empty".into());
    }
    Ok(key)
}

impl Standard {
    pub fn from_keys(keys: Vec<Vec<u8>>) -> Self {
        Self { keys }
    }

    /// Verification at a given time, so the official (old) test vectors can be checked.
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<usize, AuthError> {
        let id = header(headers, "webhook-id")?;
        let ts_text = header(headers, "webhook-timestamp")?;
        let ts: i64 = ts_text.parse().map_err(|_| AuthError::Malformed)?;
        if (now - ts).abs() > TOLERANCE_SECS {
            return Err(AuthError::Stale);
        }
        let list = header(headers, "webhook-signature")?;
        let expected: Vec<[u8; 32]> = self
            .keys
            .iter()
            .map(|k| hmac_sha256(k, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]))
            .collect();
        let mut matched = vec![false; expected.len()];
        for entry in list.split_whitespace() {
            let Some(("v1", sig)) = entry.split_once(',') else {
                continue;
            };
            let Ok(given) = base64::engine::general_purpose::STANDARD.decode(sig) else {
                continue;
            };
            for (m, e) in matched.iter_mut().zip(&expected) {
                *m |= ct_eq(e, &given);
            }
        }
        super::first_match(matched.into_iter())
    }
}

impl Provider for Standard {
    fn kind(&self) -> &'static str {
        "standard"
    }

    fn has_tenant(&self) -> bool {
        false
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, AuthError> {
        self.verify_at(headers, body, crate::stamp::Stamp::now().unix_timestamp())
    }

    fn sample_types(&self) -> Vec<String> {
        vec!["test.created".to_owned()]
    }

    fn sample(&self, event_type: &str, v: &super::SampleVars<'_>) -> Result<Vec<u8>, String> {
        if event_type.is_empty() || event_type.len() > 255 {
            return Err("a Standard Webhooks type is 1 to 255 characters".into());
        }
        let body = serde_json::json!({"type": event_type, "timestamp": v.now.to_string(),
            "data": {"id": format!("test-{}", v.id), "status": "active"}});
        Ok(body.to_string().into_bytes())
    }

    /// Each sender keeps its own schedule (commonly a day or more).
    fn retries(&self) -> super::Retries {
        super::Retries {
            window: None,
            recover: "the sender's own schedule decides: check its delivery log for the gap and replay what failed",
        }
    }

    /// Signed with the decoded bytes of the first `whsec_` secret, never its text.
    fn sign(&self, body: &[u8], id: &str, at: i64) -> Vec<(String, String)> {
        use base64::Engine;
        let ts = at.to_string();
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac);
        vec![
            ("webhook-id".to_owned(), id.to_owned()),
            ("webhook-timestamp".to_owned(), ts),
            ("webhook-signature".to_owned(), format!("v1,{sig}")),
        ]
    }

    fn envelope(&self, headers: &HeaderMap, body: &[u8]) -> Result<Envelope, String> {
        let event_id = header(headers, "webhook-id")
            .map_err(|_| "no webhook-id")?
            .to_owned();
        if event_id.len() > 255 {
            return Err("webhook-id longer than 255 bytes".into());
        }
        let text = utf8(body)?;
        let v: Value = serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))?;
        let event_type = v
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("payload has no type")?;
        let occurred_at = When::of(v.get("timestamp")).or_else(|| {
            header(headers, "webhook-timestamp")
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(crate::stamp::Stamp::new)
                .map_or(When::Absent, When::At)
        });
        Ok(Envelope {
            event_id,
            event_type: event_type.to_owned(),
            occurred_at,
            tenant: None,
            payload: text.to_owned(),
            handled: true,
            note: None,
        })
    }

    fn project(&self, event: &QueuedEvent, tx: &mut Tx<'_>) -> Result<Outcome, ProjectError> {
        let payload = event.json()?;
        let ty = event.event_type();
        let (kind, action) = ty.split_once('.').unwrap_or((ty, ""));
        let action = action.rsplit('.').next().unwrap_or_default();
        // The object the event is about, when it says which; otherwise the event itself.
        let (id, fields) = match payload.get("data") {
            Some(Value::Object(d)) => (
                d.get("id")
                    .and_then(id_text)
                    .unwrap_or_else(|| event.event_id.clone()),
                d.clone(),
            ),
            _ => (
                event.event_id.clone(),
                payload.as_object().cloned().unwrap_or_default(),
            ),
        };
        tx.upsert(
            &RECORDS,
            &[kind, &id],
            &fields,
            tomb_for(action, event.occurred_at),
        )?;
        Ok(tx.outcome())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    fn provider(secret: &str) -> Standard {
        Standard::from_keys(vec![decode_secret(secret.as_bytes()).unwrap()])
    }

    const S1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID1: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS1: i64 = 1614265330;
    const BODY1: &[u8] = br#"{"test": 2432232314}"#;
    const SIG1: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn official_vectors_pass() {
        let p = provider(S1);
        assert_eq!(
            p.verify_at(&headers(ID1, &TS1.to_string(), SIG1), BODY1, TS1),
            Ok(0)
        );
        let p2 = provider("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let body2 = br#"{"email":"test@example.com","username":"test_user"}"#;
        let h = headers(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        );
        assert_eq!(p2.verify_at(&h, body2, 1649367553), Ok(0));
        // Several entries, the valid one last.
        let many = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SIG1}");
        assert_eq!(
            p.verify_at(&headers(ID1, &TS1.to_string(), &many), BODY1, TS1),
            Ok(0)
        );
    }

    #[test]
    fn official_vectors_fail() {
        let p = provider(S1);
        let ts = TS1.to_string();
        let last_changed = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert_eq!(
            p.verify_at(&headers(ID1, &ts, last_changed), BODY1, TS1),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            p.verify_at(&headers(ID1, &ts, "v1,"), BODY1, TS1),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            p.verify_at(&headers(ID1, &ts, &SIG1[..8]), BODY1, TS1),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            p.verify_at(&headers(ID1, &ts, SIG1), BODY1, TS1 + TOLERANCE_SECS + 1),
            Err(AuthError::Stale)
        );
        assert_eq!(
            p.verify_at(&headers(ID1, &ts, SIG1), BODY1, TS1 - TOLERANCE_SECS - 1),
            Err(AuthError::Stale)
        );
        assert_eq!(
            p.verify_at(&headers(ID1, "not-a-number", SIG1), BODY1, TS1),
            Err(AuthError::Malformed)
        );
        for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut h = headers(ID1, &ts, SIG1);
            h.remove(missing);
            assert_eq!(
                p.verify_at(&h, BODY1, TS1),
                Err(AuthError::Missing),
                "{missing}"
            );
        }
        // The same signature under another id or body fails.
        assert_eq!(
            p.verify_at(&headers("msg_other", &ts, SIG1), BODY1, TS1),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            p.verify_at(&headers(ID1, &ts, SIG1), br#"{"test": 2432232315}"#, TS1),
            Err(AuthError::Mismatch)
        );
        // An empty secret is refused when the endpoint is built.
        assert!(decode_secret(b"whsec_").is_err());
        assert!(decode_secret(b"").is_err());
        assert!(decode_secret(b"whsec_%%%").is_err());
    }
}
