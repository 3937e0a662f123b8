//! What the inbox takes in: an authentic event, read and bounded, ready to be stored. Only a
//! verified body becomes one (`providers::Verified::into_event`).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::stamp::Stamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Queued,
    Unhandled,
    Invalid,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Queued => "queued",
            EventStatus::Unhandled => "unhandled",
            EventStatus::Invalid => "invalid",
        }
    }
}

/// An authentic event ready for the inbox.
#[derive(Debug)]
pub struct NewEvent {
    pub source: Arc<str>,
    pub provider: &'static str,
    pub event_id: String,
    pub event_type: Option<String>,
    pub occurred_at: Stamp,
    pub rank: i64,
    pub received_at: Stamp,
    pub tenant: Option<String>,
    pub payload: Option<String>,
    /// The body as received: kept when it could not be read as an event, and when a
    /// passthrough destination takes the endpoint's events.
    pub raw_body: Option<Vec<u8>>,
    /// For a passthrough destination: the content type and signature headers as received,
    /// a JSON object.
    pub headers: Option<String>,
    pub status: EventStatus,
    pub last_error: Option<String>,
    /// Why `occurred_at` is the time of receipt rather than the time the event names.
    pub time_note: Option<String>,
}

impl NewEvent {
    /// An authentic body that cannot be stored as an event: kept whole, under the SHA-256 of
    /// its bytes (so a re-delivery is a duplicate), with the reason.
    pub fn invalid(
        source: Arc<str>,
        provider: &'static str,
        body: Vec<u8>,
        received_at: Stamp,
        why: String,
    ) -> NewEvent {
        NewEvent {
            source,
            provider,
            event_id: format!("sha256:{}", hex::encode(Sha256::digest(&body))),
            event_type: None,
            occurred_at: received_at,
            rank: 1,
            received_at,
            tenant: None,
            payload: None,
            raw_body: Some(body),
            headers: None,
            status: EventStatus::Invalid,
            last_error: Some(why),
            time_note: None,
        }
    }
}
