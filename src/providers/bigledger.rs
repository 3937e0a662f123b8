//! BigLedger, signed envelope (the published webhook document): `X-Signature` = hex
//! HMAC-SHA256 of the raw body, with or without a `sha256=` prefix; the envelope
//! `{id, event, timestamp, data: {object, previous_attributes}, context: {companyId}}`, where
//! `data.object` is the object's current state.

use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;

use super::{id_text, require_secrets, utf8, verify_hex_hmac, AuthError, Envelope, Provider, When};
use crate::config::EndpointConfig;
use crate::projection::{
    col, tomb_for, Kind, Mapping, Outcome, ProjectError, QueuedEvent, Tx, RECORDS,
};
use crate::secret::Secret;

pub const SIGNATURE_HEADER: &str = "x-signature";

pub struct BigLedger {
    secrets: Vec<Secret>,
}

pub fn build(_cfg: &EndpointConfig, secrets: Vec<Secret>) -> Result<Arc<dyn Provider>, String> {
    Ok(Arc::new(BigLedger {
        secrets: require_secrets(secrets)?,
    }))
}

static INVOICES: Mapping = Mapping::new(
    "invoices",
    &["id"],
    &[
        col("number", "invoiceNumber", Kind::Text),
        col("customer_id", "customerId", Kind::Text),
        col("customer_name", "customer.name", Kind::Text),
        col("status", "status", Kind::Text),
        col("currency", "currency", Kind::Text),
        col("total", "total", Kind::Money),
        col("amount_due", "amountDue", Kind::Money),
        col("amount_paid", "amountPaid", Kind::Money),
        col("invoice_date", "invoiceDate", Kind::Text),
        col("due_date", "dueDate", Kind::Text),
        col("paid_at", "paidAt", Kind::Timestamp),
    ],
);

static PAYMENTS: Mapping = Mapping::new(
    "payments",
    &["id"],
    &[
        col("invoice_id", "invoiceId", Kind::Text),
        col("customer_id", "customerId", Kind::Text),
        col("amount", "amount", Kind::Money),
        col("currency", "currency", Kind::Text),
        col("payment_date", "paymentDate", Kind::Text),
        col("status", "status", Kind::Text),
        col("method", "paymentMethod", Kind::Text),
        col("reference", "reference", Kind::Text),
    ],
);

static CUSTOMERS: Mapping = Mapping::new(
    "customers",
    &["id"],
    &[
        col("name", "name", Kind::Text),
        col("email", "email", Kind::Text),
        col("phone", "phone", Kind::Text),
        col("status", "status", Kind::Text),
        col("currency", "currency", Kind::Text),
    ],
);

/// `send-test`'s bodies, after BigLedger's documented envelope.
const SAMPLES: &[(&str, &str)] = &[
    (
        "invoice.created",
        r#"{"id":"{id}","event":"invoice.created","timestamp":"{now}","livemode":false,"api_version":"v1","data":{"object":{"id":"{object}","invoiceNumber":"TEST-1","customerId":"test-customer","customer":{"name":"Test Customer"},"status":"draft","total":"100.00","currency":"MYR","invoiceDate":"2024-01-15"},"previous_attributes":{}},"context":{"companyId":"{tenant}","userId":"hooksync","source":"send-test","ip":"127.0.0.1"}}"#,
    ),
    (
        "customer.created",
        r#"{"id":"{id}","event":"customer.created","timestamp":"{now}","livemode":false,"api_version":"v1","data":{"object":{"id":"{object}","name":"Test Customer","email":"customer@example.com"},"previous_attributes":{}},"context":{"companyId":"{tenant}","userId":"hooksync","source":"send-test","ip":"127.0.0.1"}}"#,
    ),
];

impl Provider for BigLedger {
    fn kind(&self) -> &'static str {
        "bigledger"
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, AuthError> {
        verify_hex_hmac(&self.secrets, headers, SIGNATURE_HEADER, "sha256=", body)
    }

    fn sample_types(&self) -> Vec<String> {
        SAMPLES.iter().map(|(t, _)| (*t).to_owned()).collect()
    }

    fn sample(&self, event_type: &str, v: &super::SampleVars<'_>) -> Result<Vec<u8>, String> {
        Ok(v.fill(super::sample_of(SAMPLES, event_type)?, "company_abc123"))
    }

    fn retries(&self) -> super::Retries {
        super::Retries {
            window: None,
            recover: "BigLedger does not publish its resending: compare with BigLedger's records for the gap",
        }
    }

    fn sign(&self, body: &[u8], _id: &str, _at: i64) -> Vec<(String, String)> {
        super::hex_hmac_header(&self.secrets, "X-Signature", "sha256=", body)
    }

    fn envelope(&self, _headers: &HeaderMap, body: &[u8]) -> Result<Envelope, String> {
        let text = utf8(body)?;
        let v: Value = serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))?;
        let event_id = v.get("id").and_then(id_text).ok_or("envelope has no id")?;
        let event_type = v
            .get("event")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("envelope has no event")?;
        let handled = v.pointer("/data/object/id").and_then(id_text).is_some();
        Ok(Envelope {
            event_id,
            event_type: event_type.to_owned(),
            occurred_at: When::of(v.get("timestamp")),
            tenant: v.pointer("/context/companyId").and_then(id_text),
            payload: text.to_owned(),
            handled,
            note: (!handled).then(|| "no data.object with an id".to_string()),
        })
    }

    fn project(&self, event: &QueuedEvent, tx: &mut Tx<'_>) -> Result<Outcome, ProjectError> {
        let payload = event.json()?;
        let object = payload
            .pointer("/data/object")
            .and_then(Value::as_object)
            .ok_or_else(|| ProjectError::BadEvent("data.object is not an object".into()))?;
        let id = object
            .get("id")
            .and_then(id_text)
            .ok_or_else(|| ProjectError::BadEvent("data.object.id is missing".into()))?;
        let (kind, action) = event
            .event_type()
            .split_once('.')
            .unwrap_or((event.event_type(), ""));
        let tomb = tomb_for(action, event.occurred_at);
        let (mapping, key): (&Mapping, Vec<&str>) = match kind {
            "invoice" => (&INVOICES, vec![&id]),
            "payment" => (&PAYMENTS, vec![&id]),
            "customer" => (&CUSTOMERS, vec![&id]),
            // inventory, einvoice, sales_order and whatever comes next
            _ => (&RECORDS, vec![kind, &id]),
        };
        tx.upsert(mapping, &key, object, tomb)?;
        Ok(tx.outcome())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::hmac_sha256;

    #[test]
    fn signature_with_or_without_prefix() {
        let p = BigLedger {
            secrets: vec![Secret::resolve("your-webhook-secret-key").unwrap()],
        };
        let body = br#"{"id":"evt_001","event":"invoice.created","timestamp":"2024-01-15T10:30:00Z","data":{"object":{"id":"inv_1"}}}"#;
        let hex = hex::encode(hmac_sha256(b"your-webhook-secret-key", &[body]));
        for sig in [hex.clone(), format!("sha256={hex}"), hex.to_uppercase()] {
            let mut h = HeaderMap::new();
            h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
            assert_eq!(p.verify(&h, body), Ok(0), "{sig}");
        }
        for sig in [
            "sha256=".to_string(),
            hex[..40].to_string(),
            format!("sha1={hex}"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
            assert!(p.verify(&h, body).is_err(), "{sig}");
        }
    }
}
