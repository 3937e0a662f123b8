//! BigLedger as the platform behaves today: no signature and no envelope. Each subscription
//! carries one topic (`<DOC_TYPE>_CREATED|_UPDATED|_DELETED`) and one static header whose name
//! and value the subscriber chose; the body is the record itself, a container such as
//! `{"bl_fi_generic_doc_hdr": {...}, "bl_fi_generic_doc_line": [...]}` keyed by the `guid` of
//! its `..._hdr` object. Some delete topics send `true` or a plain sentence instead.
//!
//! The sender makes one attempt and never retries, so nothing authentic is refused: a body
//! that is not a record is stored as `invalid`, or as an `unhandled` deletion notice on a
//! delete topic. The event id is the topic and the SHA-256 of the body, so an identical
//! re-delivery is a duplicate.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{ct_eq, header, id_text, utf8, AuthError, Envelope, Provider, When};
use crate::config::EndpointConfig;
use crate::projection::{
    col, tomb_for, Kind, Mapping, Outcome, ProjectError, QueuedEvent, Tx, RECORDS,
};
use crate::secret::Secret;

pub struct BigLedgerTopic {
    topic: String,
    header: HeaderName,
    value: Secret,
}

pub fn build(cfg: &EndpointConfig, _secrets: Vec<Secret>) -> Result<Arc<dyn Provider>, String> {
    let topic = cfg
        .topic
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("topic: required for bigledger-topic")?;
    let auth = cfg
        .auth_header
        .as_ref()
        .ok_or("auth_header: required for bigledger-topic ({ name, value })")?;
    let header = HeaderName::from_bytes(auth.name.trim().as_bytes())
        .map_err(|_| format!("auth_header.name: {:?} is not a header name", auth.name))?;
    let value = Secret::resolve(&auth.value).map_err(|e| format!("auth_header.value: {e}"))?;
    Ok(Arc::new(BigLedgerTopic {
        topic: topic.to_ascii_uppercase(),
        header,
        value,
    }))
}

static CUSTOMERS: Mapping = Mapping::new(
    "customers",
    &["id"],
    &[
        col("name", "name", Kind::Text),
        col("email", "email", Kind::Text),
        col("phone", "phone", Kind::Text),
        col("status", "status", Kind::Text),
        col("currency", "ccy_code", Kind::Text),
    ],
);

static INVOICES: Mapping = Mapping::new(
    "invoices",
    &["id"],
    &[
        col("number", "server_doc_1", Kind::Text),
        col("customer_id", "doc_entity_hdr_guid", Kind::Text),
        col("status", "status", Kind::Text),
        col("currency", "doc_ccy", Kind::Text),
        col("total", "amount_txn", Kind::Money),
        col("invoice_date", "date_txn", Kind::Text),
        col("due_date", "due_date", Kind::Text),
    ],
);

/// The record's header object (`..._hdr`) and its guid.
fn record(body: &Value) -> Option<(&str, &Map<String, Value>, String)> {
    body.as_object()?.iter().find_map(|(k, v)| {
        let hdr = v.as_object().filter(|_| k.ends_with("_hdr"))?;
        Some((k.as_str(), hdr, hdr.get("guid").and_then(id_text)?))
    })
}

/// `INTERNAL_SALES_INVOICE_CREATED` → (`INTERNAL_SALES_INVOICE`, `CREATED`).
fn split(topic: &str) -> (&str, &str) {
    topic.rsplit_once('_').unwrap_or((topic, ""))
}

impl Provider for BigLedgerTopic {
    fn kind(&self) -> &'static str {
        "bigledger-topic"
    }

    fn has_tenant(&self) -> bool {
        false
    }

    fn verify(&self, headers: &HeaderMap, _body: &[u8]) -> Result<usize, AuthError> {
        let given = header(headers, self.header.as_str())?;
        if ct_eq(given.as_bytes(), self.value.expose()) {
            Ok(0)
        } else {
            Err(AuthError::Mismatch)
        }
    }

    /// The one topic this endpoint takes.
    fn sample_types(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    /// The record of the endpoint's topic, as the platform sends it.
    fn sample(&self, event_type: &str, v: &super::SampleVars<'_>) -> Result<Vec<u8>, String> {
        if event_type != self.topic {
            return Err(format!("this endpoint takes topic {} only", self.topic));
        }
        let when = v.now.to_string().replace('T', " ");
        let when = when.trim_end_matches('Z');
        let object = format!("test-{}", v.id);
        let body = if self.topic.starts_with("CUSTOMER") {
            serde_json::json!({"bl_fi_mst_entity_hdr": {"guid": object, "name": "Test Customer", "status": "ACTIVE", "updated_date": when}, "bl_fi_mst_entity_line": []})
        } else {
            serde_json::json!({"bl_fi_generic_doc_hdr": {"guid": object, "server_doc_1": "TEST-1", "amount_txn": "100.00", "updated_date": when}, "bl_fi_generic_doc_line": []})
        };
        Ok(body.to_string().into_bytes())
    }

    /// Topic mode sends once and never again.
    fn retries(&self) -> super::Retries {
        super::Retries {
            window: Some(std::time::Duration::ZERO),
            recover: "BigLedger's topic mode sends once: every record changed during the gap must be read from BigLedger",
        }
    }

    /// Topic mode signs nothing: the configured header and value go with every body.
    fn sign(&self, _body: &[u8], _id: &str, _at: i64) -> Vec<(String, String)> {
        let value = String::from_utf8_lossy(self.value.expose()).into_owned();
        vec![(self.header.as_str().to_owned(), value)]
    }

    fn envelope(&self, _headers: &HeaderMap, body: &[u8]) -> Result<Envelope, String> {
        let event_id = format!("{}:{}", self.topic, hex::encode(Sha256::digest(body)));
        let text = utf8(body)?;
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let is_delete = split(&self.topic).1 == "DELETED";
        if let Some((_, hdr, _)) = parsed.as_ref().and_then(record) {
            let occurred_at = When::first(["updated_date", "created_date"].map(|k| hdr.get(k)));
            return Ok(Envelope {
                event_id,
                event_type: self.topic.clone(),
                occurred_at,
                tenant: None,
                payload: text.to_owned(),
                handled: true,
                note: None,
            });
        }
        if !is_delete {
            return Err(format!("{} body is not a record with a guid", self.topic));
        }
        // A delete topic's `true` or sentence: kept as a notice that something was deleted.
        Ok(Envelope {
            event_id,
            event_type: self.topic.clone(),
            occurred_at: When::Absent,
            tenant: None,
            payload: match parsed {
                Some(v) => v.to_string(),
                None => Value::String(text.to_owned()).to_string(),
            },
            handled: false,
            note: Some("deletion notice without a record key".into()),
        })
    }

    fn project(&self, event: &QueuedEvent, tx: &mut Tx<'_>) -> Result<Outcome, ProjectError> {
        let body = event.json()?;
        let (hdr_key, hdr, guid) =
            record(&body).ok_or_else(|| ProjectError::BadEvent("no record with a guid".into()))?;
        // The row holds the header's fields and, beside them, the rest of the container.
        let mut fields = hdr.clone();
        if let Some(all) = body.as_object() {
            for (k, v) in all.iter().filter(|(k, _)| k.as_str() != hdr_key) {
                fields.insert(k.clone(), v.clone());
            }
        }
        // The topic as stored, not this endpoint's: endpoints of one source share the projection.
        let (family, action) = split(event.event_type());
        let tomb = tomb_for(action, event.occurred_at);
        if family.starts_with("CUSTOMER") {
            tx.upsert(&CUSTOMERS, &[&guid], &fields, tomb)?;
        } else if family.contains("INVOICE") {
            tx.upsert(&INVOICES, &[&guid], &fields, tomb)?;
        } else {
            tx.upsert(
                &RECORDS,
                &[&family.to_ascii_lowercase(), &guid],
                &fields,
                tomb,
            )?;
        }
        Ok(tx.outcome())
    }
}
