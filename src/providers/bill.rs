//! BILL (bill.com v3 webhooks): `x-bill-sha-signature` = base64 HMAC-SHA256 of the raw body with
//! the subscription's security key. The body is the event object, or that same object
//! JSON-escaped into one JSON string. `metadata` names the event (`eventId`, `eventType`,
//! `organizationId`); the entity sits beside it under its kind (`bill`, `vendor`, ...). There is
//! no envelope time: events are ordered by the entity's `updatedTime`.

use std::sync::Arc;

use base64::Engine;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::{
    any_secret_signed, header, id_text, require_secrets, utf8, AuthError, Envelope, Provider, When,
};
use crate::config::EndpointConfig;
use crate::projection::{
    col, tomb_for, Kind, Mapping, Outcome, ProjectError, QueuedEvent, Tx, RECORDS,
};
use crate::secret::Secret;

pub const SIGNATURE_HEADER: &str = "x-bill-sha-signature";

pub struct Bill {
    secrets: Vec<Secret>,
}

pub fn build(_cfg: &EndpointConfig, secrets: Vec<Secret>) -> Result<Arc<dyn Provider>, String> {
    Ok(Arc::new(Bill {
        secrets: require_secrets(secrets)?,
    }))
}

static BILLS: Mapping = Mapping::new(
    "bills",
    &["id"],
    &[
        col("vendor_id", "vendorId", Kind::Text),
        col("invoice_number", "invoice.invoiceNumber", Kind::Text),
        col("invoice_date", "invoice.invoiceDate", Kind::Timestamp),
        col("due_date", "dueDate", Kind::Text),
        col("amount", "amount", Kind::Money),
        col("payment_status", "paymentStatus", Kind::Text),
        col("archived", "archived", Kind::Bool),
    ],
);

static VENDORS: Mapping = Mapping::new(
    "vendors",
    &["id"],
    &[
        col("name", "name", Kind::Text),
        col("email", "email", Kind::Text),
        col("phone", "phone", Kind::Text),
        col("archived", "archived", Kind::Bool),
    ],
);

static INVOICES: Mapping = Mapping::new(
    "invoices",
    &["id"],
    &[
        col("number", "invoiceNumber", Kind::Text),
        col("customer_id", "customerId", Kind::Text),
        col("customer_name", "customer.name", Kind::Text),
        col("status", "status", Kind::Text),
        col("currency", "currency", Kind::Text),
        col("total", "totalAmount", Kind::Money),
        col("amount_due", "dueAmount", Kind::Money),
        col("invoice_date", "invoiceDate", Kind::Text),
        col("due_date", "dueDate", Kind::Text),
        col("archived", "archived", Kind::Bool),
    ],
);

static PAYMENTS: Mapping = Mapping::new(
    "payments",
    &["id"],
    &[
        col("invoice_id", "billId", Kind::Text),
        col("amount", "amount", Kind::Money),
        col("currency", "currency", Kind::Text),
        col("payment_date", "processDate", Kind::Text),
        col("status", "status", Kind::Text),
        col("failure_reason", "failureReason", Kind::Text),
        col("method", "paymentType", Kind::Text),
        col("reference", "referenceNumber", Kind::Text),
    ],
);

/// The body as an object: BILL may send it as a JSON string holding the object.
fn unwrap(text: &str) -> Result<(Map<String, Value>, Option<String>), String> {
    match serde_json::from_str::<Value>(text).map_err(|e| format!("body is not JSON: {e}"))? {
        Value::Object(m) => Ok((m, None)),
        Value::String(inner) => match serde_json::from_str::<Value>(&inner)
            .map_err(|e| format!("escaped body is not JSON: {e}"))?
        {
            Value::Object(m) => Ok((m, Some(inner))),
            _ => Err("escaped body is not an object".into()),
        },
        _ => Err("body is not an object".into()),
    }
}

/// The entity: the one object beside `metadata`, with its key (`bill`, `bankAccount`, ...).
fn entity(event: &Map<String, Value>) -> Option<(&str, &Map<String, Value>)> {
    event.iter().find_map(|(k, v)| match v {
        Value::Object(m) if k != "metadata" => Some((k.as_str(), m)),
        _ => None,
    })
}

/// `send-test`'s bodies, after BILL's documented sample.
const SAMPLES: &[(&str, &str)] = &[
    (
        "bill.created",
        r#"{"metadata":{"eventId":"{id}","subscriptionId":"hooksync-send-test","organizationId":"{tenant}","eventType":"bill.created","version":"1"},"bill":{"id":"{object}","vendorId":"test-vendor","invoice":{"invoiceNumber":"TEST-1","invoiceDate":"{now}"},"amount":228.99,"createdTime":"{now}","updatedTime":"{now}","archived":false,"paymentStatus":"UNPAID"}}"#,
    ),
    (
        "vendor.created",
        r#"{"metadata":{"eventId":"{id}","subscriptionId":"hooksync-send-test","organizationId":"{tenant}","eventType":"vendor.created","version":"1"},"vendor":{"id":"{object}","name":"Test Vendor","createdTime":"{now}","updatedTime":"{now}","archived":false}}"#,
    ),
];

impl Provider for Bill {
    fn kind(&self) -> &'static str {
        "bill"
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, AuthError> {
        let given = base64::engine::general_purpose::STANDARD
            .decode(header(headers, SIGNATURE_HEADER)?)
            .map_err(|_| AuthError::Malformed)?;
        any_secret_signed(&self.secrets, &given, body)
    }

    fn sample_types(&self) -> Vec<String> {
        SAMPLES.iter().map(|(t, _)| (*t).to_owned()).collect()
    }

    fn sample(&self, event_type: &str, v: &super::SampleVars<'_>) -> Result<Vec<u8>, String> {
        Ok(v.fill(
            super::sample_of(SAMPLES, event_type)?,
            "00802DEVKGROHKDIY4zyx",
        ))
    }

    /// Five resends with exponential backoff (the span is not published), then BILL's
    /// dead-letter queue.
    fn retries(&self) -> super::Retries {
        super::Retries {
            window: None,
            recover: "after five resends BILL keeps them in its dead-letter queue: replay them from there, or list them with BILL's events API",
        }
    }

    fn sign(&self, body: &[u8], _id: &str, _at: i64) -> Vec<(String, String)> {
        use base64::Engine;
        self.secrets
            .first()
            .map(|s| {
                let mac = crate::providers::hmac_sha256(s.expose(), &[body]);
                let value = base64::engine::general_purpose::STANDARD.encode(mac);
                ("X-Bill-Sha-Signature".to_owned(), value)
            })
            .into_iter()
            .collect()
    }

    fn envelope(&self, _headers: &HeaderMap, body: &[u8]) -> Result<Envelope, String> {
        let text = utf8(body)?;
        let (event, inner) = unwrap(text)?;
        let meta = event
            .get("metadata")
            .and_then(Value::as_object)
            .ok_or("no metadata object")?;
        let event_id = meta
            .get("eventId")
            .and_then(id_text)
            .ok_or("metadata.eventId is missing")?;
        let event_type = meta
            .get("eventType")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("metadata.eventType is missing")?;
        let occurred_at = entity(&event)
            .map(|(_, e)| When::first(["updatedTime", "createdTime"].map(|k| e.get(k))))
            .unwrap_or(When::Absent);
        Ok(Envelope {
            event_id,
            event_type: event_type.to_owned(),
            occurred_at,
            tenant: meta.get("organizationId").and_then(id_text),
            payload: inner.unwrap_or_else(|| text.to_owned()),
            handled: entity(&event).is_some(),
            note: None,
        })
    }

    fn project(&self, event: &QueuedEvent, tx: &mut Tx<'_>) -> Result<Outcome, ProjectError> {
        let payload = event.json()?;
        let obj = payload
            .as_object()
            .ok_or_else(|| ProjectError::BadEvent("payload is not an object".into()))?;
        let (kind, ent) =
            entity(obj).ok_or_else(|| ProjectError::BadEvent("no entity object".into()))?;
        let id = ent
            .get("id")
            .and_then(id_text)
            .ok_or_else(|| ProjectError::BadEvent(format!("{kind}.id is missing")))?;
        let (family, action) = event
            .event_type()
            .split_once('.')
            .unwrap_or((event.event_type(), ""));
        let mut fields = ent.clone();
        // Archiving is a state, not a delete: it sets and clears a flag.
        match action {
            "archived" => drop(fields.insert("archived".into(), Value::Bool(true))),
            "restored" => drop(fields.insert("archived".into(), Value::Bool(false))),
            _ => {}
        }
        let tomb = tomb_for(action, event.occurred_at);
        let (mapping, key): (&Mapping, Vec<&str>) = match family {
            "bill" => (&BILLS, vec![&id]),
            "vendor" => (&VENDORS, vec![&id]),
            "invoice" => (&INVOICES, vec![&id]),
            "payment" => (&PAYMENTS, vec![&id]),
            _ => (&RECORDS, vec![kind, &id]),
        };
        tx.upsert(mapping, &key, &fields, tomb)?;
        Ok(tx.outcome())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample in docs/providers.md, signed with `test-security-key-0001`.
    pub const SAMPLE: &str = r#"{"metadata":{"eventId":"625947c4-8e6b-48f0-ae72-ea9c9375ec27","subscriptionId":"f6d06930-e3e2-4509-be37-4dbda29efc6i","organizationId":"00802DEVKGROHKDIY4zyx","eventType":"bill.created","version":"1"},"bill":{"id":"00n02JZNIEYMNPY99iz9","vendorId":"00902BILKFECNEV2oji1","invoice":{"invoiceNumber":"202601","invoiceDate":"2026-12-15T00:00:00.000Z"},"amount":228.99,"createdTime":"2026-12-15T23:15:23.127+00:00","updatedTime":"2026-12-15T23:15:23.127+00:00","archived":false,"paymentStatus":"UNPAID"}}"#;
    const SIGNATURE: &str = "emqFVljorzffarPtFViHfXjMmoyqfe+4Ev/gd0oFxJ8=";

    fn bill() -> Bill {
        Bill {
            secrets: vec![Secret::resolve("test-security-key-0001").unwrap()],
        }
    }

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    #[test]
    fn sample_verifies_with_its_key() {
        assert_eq!(bill().verify(&headers(SIGNATURE), SAMPLE.as_bytes()), Ok(0));
        assert_eq!(
            bill().verify(&headers(&SIGNATURE[..20]), SAMPLE.as_bytes()),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            bill().verify(&headers("not base64!"), SAMPLE.as_bytes()),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            bill().verify(&HeaderMap::new(), SAMPLE.as_bytes()),
            Err(AuthError::Missing)
        );
        let other = Bill {
            secrets: vec![Secret::resolve("another-key").unwrap()],
        };
        assert_eq!(
            other.verify(&headers(SIGNATURE), SAMPLE.as_bytes()),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn escaped_body_reads_like_the_object() {
        let escaped = serde_json::to_string(SAMPLE).unwrap();
        let a = bill()
            .envelope(&HeaderMap::new(), SAMPLE.as_bytes())
            .unwrap();
        let b = bill()
            .envelope(&HeaderMap::new(), escaped.as_bytes())
            .unwrap();
        for e in [&a, &b] {
            assert_eq!(e.event_id, "625947c4-8e6b-48f0-ae72-ea9c9375ec27");
            assert_eq!(e.event_type, "bill.created");
            assert_eq!(e.tenant.as_deref(), Some("00802DEVKGROHKDIY4zyx"));
            assert_eq!(
                e.occurred_at.at().unwrap().to_string(),
                "2026-12-15T23:15:23.127000Z"
            );
        }
        assert_eq!(
            a.payload, b.payload,
            "the stored payload is the object either way"
        );
    }
}
