//! GetBill (debt collection): `X-GetBill-Signature` = hex HMAC-SHA256 of the raw body; the
//! envelope `{id, type, created_at, data, metadata}`; debts, followups, payments, payment plans
//! and account notices.

use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use std::sync::Arc;

use super::{id_text, require_secrets, utf8, verify_hex_hmac, AuthError, Envelope, Provider, When};
use crate::config::EndpointConfig;
use crate::projection::{col, Kind, Mapping, Outcome, ProjectError, QueuedEvent, Tomb, Tx};
use crate::secret::Secret;
use crate::stamp::Stamp;

pub struct GetBill {
    secrets: Vec<Secret>,
}

pub fn build(_cfg: &EndpointConfig, secrets: Vec<Secret>) -> Result<Arc<dyn Provider>, String> {
    Ok(Arc::new(GetBill {
        secrets: require_secrets(secrets)?,
    }))
}

pub const SIGNATURE_HEADER: &str = "x-getbill-signature";

/// Every event type this file projects; others are stored as `unhandled`.
pub const EVENT_TYPES: &[&str] = &[
    "debt.created",
    "debt.updated",
    "debt.deleted",
    "debt.status_changed",
    "followup.created",
    "followup.updated",
    "followup.completed",
    "followup.failed",
    "payment.received",
    "payment.failed",
    "payment_plan.created",
    "payment_plan.completed",
    "payment_plan.canceled",
    "company.credits_low",
    "report.generated",
    "integration.error",
];

static DEBTS: Mapping = Mapping::new(
    "debts",
    &["id"],
    &[
        col("company_id", "company_id", Kind::Text),
        col("firstname", "firstname", Kind::Text),
        col("lastname", "lastname", Kind::Text),
        col("email", "email", Kind::Text),
        col("phone", "phone", Kind::Text),
        col("amount", "amount", Kind::Money),
        col("currency", "currency", Kind::Text),
        col("status", "status", Kind::Text),
        col("internal_id", "internal_id", Kind::Text),
        col("due_date", "due_date", Kind::Text),
        col("invoice_date", "invoice_date", Kind::Text),
        col("created_at", "created_at", Kind::Timestamp),
        col("metadata", "metadata", Kind::Json),
    ],
);

static FOLLOWUPS: Mapping = Mapping::new(
    "followups",
    &["id"],
    &[
        col("debt_id", "debt_id", Kind::Text),
        col("type", "type", Kind::Text),
        col("status", "status", Kind::Text),
        col("summary", "summary", Kind::Text),
        col("failure_reason", "failure_reason", Kind::Text),
        col("call_date", "call_date", Kind::Timestamp),
        col("scheduled_at", "scheduled_at", Kind::Timestamp),
        col("processed_at", "processed_at", Kind::Timestamp),
        col("duration_ms", "duration_ms", Kind::Int),
        col("call_provider", "provider", Kind::Text),
        col("audio_url", "audio_url", Kind::Text),
        col("pdf_url", "pdf_url", Kind::Text),
        col(
            "media_urls_expire_at",
            "media_urls_expire_at",
            Kind::Timestamp,
        ),
    ],
);

/// The payment columns; installments of a plan add the `plan` flag.
macro_rules! payment_cols {
    ($($extra:expr),*) => {
        &[
            col("debt_id", "debt_id", Kind::Text),
            col("amount", "amount", Kind::Money),
            col("currency", "currency", Kind::Text),
            col("payment_date", "payment_date", Kind::Text),
            col("status", "status", Kind::Text),
            col("paid_at", "paid_at", Kind::Timestamp),
            col("failure_reason", "failure_reason", Kind::Text),
            col("method", "method", Kind::Text),
            col("reference", "reference", Kind::Text),
            $($extra),*
        ]
    };
}

static PAYMENTS: Mapping = Mapping::new("payments", &["id"], payment_cols!());

static INSTALLMENTS: Mapping = Mapping::new(
    "payments",
    &["id"],
    payment_cols!(col("plan", "", Kind::Flag)),
);

static PLANS: Mapping = Mapping::new(
    "payment_plans",
    &["debt_id"],
    &[
        col("plan_months", "plan_months", Kind::Int),
        col("plan_start_date", "plan_start_date", Kind::Text),
        col("first_payment_amount", "first_payment_amount", Kind::Money),
        col("status", "status", Kind::Text),
        col("completed_at", "completed_at", Kind::Timestamp),
    ],
);

#[derive(Deserialize)]
struct RawEnvelope {
    id: Option<Value>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    created_at: Option<String>,
    metadata: Option<Company>,
    data: Option<Company>,
}

/// Only the tenant is read from `data` and `metadata` at ingest; the rest waits for the
/// projector.
#[derive(Deserialize)]
struct Company {
    company_id: Option<Value>,
}

/// `send-test`'s bodies, after GetBill's documented examples.
const SAMPLES: &[(&str, &str)] = &[
    (
        "debt.created",
        r#"{"id":"{id}","type":"debt.created","created_at":"{now}","data":{"id":"{object}","company_id":{tenant},"debtor":{"name":"Test Debtor","email":"debtor@example.com"},"amount":"150.00","currency":"EUR","status":"active","due_date":"2024-02-15"},"metadata":{"company_id":{tenant}}}"#,
    ),
    (
        "payment.received",
        r#"{"id":"{id}","type":"payment.received","created_at":"{now}","data":{"id":"{object}","debt_id":"test-debt","company_id":{tenant},"amount":"50.00","currency":"EUR","method":"bank_transfer"},"metadata":{"company_id":{tenant}}}"#,
    ),
];

impl Provider for GetBill {
    fn kind(&self) -> &'static str {
        "getbill"
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, AuthError> {
        verify_hex_hmac(&self.secrets, headers, SIGNATURE_HEADER, "", body)
    }

    fn sample_types(&self) -> Vec<String> {
        SAMPLES.iter().map(|(t, _)| (*t).to_owned()).collect()
    }

    fn sample(&self, event_type: &str, v: &super::SampleVars<'_>) -> Result<Vec<u8>, String> {
        // GetBill's company ids are numbers; another tenant text is written as a string.
        let tenant = v.tenant.unwrap_or("123");
        let literal = if !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_digit()) {
            tenant.to_owned()
        } else {
            serde_json::Value::from(tenant).to_string()
        };
        let template = super::sample_of(SAMPLES, event_type)?.replace("{tenant}", &literal);
        Ok(v.fill(&template, ""))
    }

    /// Retries after 1, 5 and 30 minutes, then gives up.
    fn retries(&self) -> super::Retries {
        super::Retries {
            window: Some(std::time::Duration::from_secs(36 * 60)),
            recover: "GetBill does not send them again: read them from GetBill's API, or ask GetBill to replay them",
        }
    }

    fn sign(&self, body: &[u8], _id: &str, _at: i64) -> Vec<(String, String)> {
        super::hex_hmac_header(&self.secrets, "X-GetBill-Signature", "", body)
    }

    fn envelope(&self, _headers: &HeaderMap, body: &[u8]) -> Result<Envelope, String> {
        let text = utf8(body)?;
        let raw: RawEnvelope =
            serde_json::from_str(text).map_err(|e| format!("not a GetBill envelope: {e}"))?;
        let event_id = raw
            .id
            .as_ref()
            .and_then(id_text)
            .ok_or("envelope has no id")?;
        if event_id.len() > 255 {
            return Err("event id longer than 255 bytes".into());
        }
        let event_type = raw
            .event_type
            .filter(|t| !t.is_empty())
            .ok_or("envelope has no type")?;
        let occurred_at = When::of_text(raw.created_at.as_deref());
        let tenant = [raw.metadata, raw.data]
            .into_iter()
            .flatten()
            .find_map(|c| c.company_id.as_ref().and_then(id_text));
        Ok(Envelope {
            handled: EVENT_TYPES.contains(&event_type.as_str()),
            event_id,
            event_type,
            occurred_at,
            tenant,
            payload: text.to_owned(),
            note: None,
        })
    }

    fn project(&self, event: &QueuedEvent, tx: &mut Tx<'_>) -> Result<Outcome, ProjectError> {
        let mut payload = event.json()?;
        let ty = event.event_type();
        let data = match payload.get_mut("data") {
            Some(Value::Object(m)) => std::mem::take(m),
            _ => return Err(ProjectError::BadEvent("data is not an object".into())),
        };
        let (entity, action) = ty.split_once('.').unwrap_or((ty, ""));
        match entity {
            "debt" => {
                let id = key(&data, "id")?;
                let tomb = match action {
                    "created" => Tomb::Clear,
                    "deleted" => Tomb::Set(time_or(&data, "deleted_at", event.occurred_at)),
                    _ => Tomb::Keep,
                };
                tx.upsert(&DEBTS, &[&id], &data, tomb)?;
            }
            "followup" => {
                let id = key(&data, "id")?;
                let tomb = if action == "created" {
                    Tomb::Clear
                } else {
                    Tomb::Keep
                };
                if let Some(row) = tx.upsert(&FOLLOWUPS, &[&id], &data, tomb)? {
                    // The merged row, so an older event's URL never replaces a newer one.
                    let expires = row
                        .get("media_urls_expire_at")
                        .and_then(Value::as_str)
                        .and_then(Stamp::parse);
                    for (kind, field, _) in crate::media::KINDS {
                        tx.media(&id, kind, row.get(*field).and_then(Value::as_str), expires)?;
                    }
                }
            }
            "payment" => {
                let id = key(&data, "id")?;
                tx.upsert(&PAYMENTS, &[&id], &data, Tomb::Keep)?;
            }
            "payment_plan" => {
                let debt_id = key(&data, "debt_id")?;
                let (status, tomb) = match action {
                    "created" => ("active", Tomb::Clear),
                    "completed" => ("completed", Tomb::Keep),
                    _ => ("canceled", Tomb::Keep),
                };
                for item in data
                    .get("installments")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Value::Object(inst) = item {
                        let mut inst = inst.clone();
                        inst.entry("debt_id")
                            .or_insert_with(|| Value::String(debt_id.clone()));
                        tx.upsert(&INSTALLMENTS, &[&key(&inst, "id")?], &inst, Tomb::Keep)?;
                    }
                }
                let mut fields = data;
                fields.insert("status".into(), Value::String(status.into()));
                tx.upsert(&PLANS, &[&debt_id], &fields, tomb)?;
            }
            _ => {
                let company = data.get("company_id").and_then(id_text).or_else(|| {
                    payload
                        .get("metadata")
                        .and_then(|m| m.get("company_id"))
                        .and_then(id_text)
                });
                tx.notice(ty, company.as_deref(), &Value::Object(data))?;
            }
        }
        Ok(tx.outcome())
    }
}

fn key(data: &Map<String, Value>, field: &str) -> Result<String, ProjectError> {
    data.get(field)
        .and_then(id_text)
        .ok_or_else(|| ProjectError::BadEvent(format!("data.{field} is missing")))
}

fn time_or(data: &Map<String, Value>, field: &str, fallback: Stamp) -> Stamp {
    data.get(field)
        .and_then(Value::as_str)
        .and_then(Stamp::parse)
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::hmac_sha256;

    fn gb(list: &[&str]) -> GetBill {
        GetBill {
            secrets: list.iter().map(|s| Secret::resolve(s).unwrap()).collect(),
        }
    }

    fn signed(secret: &str, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            SIGNATURE_HEADER,
            hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn seed_example_signature() {
        // `echo -n "$PAYLOAD" | openssl dgst -sha256 -hmac "$SECRET_KEY" -hex` from the seed.
        let body = br#"{"id":"evt_test123","type":"debt.created","data":{}}"#;
        let mut h = HeaderMap::new();
        h.insert(
            SIGNATURE_HEADER,
            "699c1d23c5a4ea526bd97e7eecfd66f1a5d2fd83ab1cb65ebad1aa5dd9a971af"
                .parse()
                .unwrap(),
        );
        assert!(gb(&["your_webhook_secret_here"]).verify(&h, body).is_ok());
    }

    #[test]
    fn signatures_are_checked_strictly() {
        let body = br#"{"id":"evt_1","type":"debt.created","data":{"id":"d1"}}"#;
        let keys = gb(&["old", "new"]);
        assert!(keys.verify(&signed("new", body), body).is_ok());
        // The position of the secret that matched, in the order the list gives them.
        assert_eq!(keys.verify(&signed("old", body), body), Ok(0));
        assert_eq!(keys.verify(&signed("new", body), body), Ok(1));
        assert_eq!(
            keys.verify(&signed("other", body), body),
            Err(AuthError::Mismatch)
        );
        let good = hex::encode(hmac_sha256(b"new", &[body]));
        let upper = good.to_uppercase();
        let cases: &[(&str, Result<usize, AuthError>)] = &[
            (&upper, Ok(1)),
            (&good[..63], Err(AuthError::Malformed)),
            (&good[..32], Err(AuthError::Malformed)),
            ("", Err(AuthError::Missing)),
            ("zz", Err(AuthError::Malformed)),
        ];
        for (sig, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
            assert_eq!(keys.verify(&h, body), *want, "signature {sig:?}");
        }
        assert_eq!(
            keys.verify(&HeaderMap::new(), body),
            Err(AuthError::Missing)
        );
        let tampered = br#"{"id":"evt_1","type":"debt.created","data":{"id":"d2"}}"#;
        assert_eq!(
            keys.verify(&signed("new", body), tampered),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn envelope_reads_numeric_ids_and_tenant() {
        let p = gb(&["k"]);
        let h = HeaderMap::new();
        let body = br#"{"id":"evt_x","type":"debt.created","created_at":"2024-01-22T10:30:00+02:00","data":{"id":789,"company_id":123},"metadata":{"company_id":123}}"#;
        let env = p.envelope(&h, body).unwrap();
        assert_eq!(env.event_id, "evt_x");
        assert_eq!(env.tenant.as_deref(), Some("123"));
        assert!(env.handled);
        assert_eq!(
            env.occurred_at.at().unwrap().to_string(),
            "2024-01-22T08:30:00.000000Z"
        );
        assert!(p.envelope(&h, br#"{"type":"debt.created"}"#).is_err());
        assert!(p.envelope(&h, br#"{"id":"e"}"#).is_err());
        assert!(p.envelope(&h, b"not json").is_err());
        assert!(
            !p.envelope(&h, br#"{"id":"e","type":"debt.exploded"}"#)
                .unwrap()
                .handled
        );
    }
}
