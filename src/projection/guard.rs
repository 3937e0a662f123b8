//! The row guard: the shared, order-independent merge of an event into a row.
//!
//! Each domain row keeps the merged provider object in `data` and, in `versions`, the position
//! `(occurred_at, lifecycle rank, arrival seq)` of the event that last wrote each top-level
//! field, of the tombstone (`$del`) and of the row (`$last`). A field is written only by an
//! event whose position is newer than the field's. That makes applying events commutative and
//! idempotent: whatever order events arrive in, and however often, every row ends as if the
//! events had been applied one by one in time order. An event none of whose fields is newer
//! changes nothing and is marked `stale`. Deletes set a tombstone that only a newer create
//! clears, so a late update cannot resurrect a deleted row.

use serde_json::{Map, Value};

use super::Tomb;
use crate::stamp::Stamp;

/// A row as the merge sees it; empty `versions` means the row does not exist yet.
#[derive(Debug, Clone, Default)]
pub(super) struct RowState {
    pub(super) data: Map<String, Value>,
    pub(super) versions: Map<String, Value>,
    pub(super) last_id: Option<String>,
    pub(super) last_at: Option<Stamp>,
    pub(super) deleted_at: Option<Stamp>,
}

/// The event writing to a row: its position, id and time.
pub(super) struct Writer<'a> {
    pub(super) pos: &'a str,
    pub(super) event_id: &'a str,
    pub(super) occurred_at: Stamp,
}

/// Merges `fields` into `st` field by field, as the module docs say, with the mapping's flags
/// (set once, whatever the order) and the event's effect on the tombstone. True when the row
/// changed.
pub(super) fn merge<'f>(
    st: &mut RowState,
    fields: &Map<String, Value>,
    flags: impl Iterator<Item = &'f str>,
    tomb: Tomb,
    w: &Writer<'_>,
) -> bool {
    let pos = w.pos;
    let newer = |versions: &Map<String, Value>, k: &str| {
        versions
            .get(k)
            .and_then(Value::as_str)
            .is_none_or(|p| pos > p)
    };
    let mut changed = st.versions.is_empty();
    for (k, v) in fields {
        if newer(&st.versions, k) {
            st.data.insert(k.clone(), v.clone());
            st.versions.insert(k.clone(), Value::String(pos.to_owned()));
            changed = true;
        }
    }
    for name in flags {
        let k = format!("$flag:{name}");
        if !st.versions.contains_key(&k) {
            st.versions.insert(k, Value::String(pos.to_owned()));
            changed = true;
        }
    }
    let tomb_value = match tomb {
        Tomb::Keep => None,
        Tomb::Clear => Some(None),
        Tomb::Set(at) => Some(Some(at)),
    };
    if let Some(value) = tomb_value {
        if newer(&st.versions, "$del") {
            st.deleted_at = value;
            st.versions
                .insert("$del".into(), Value::String(pos.to_owned()));
            changed = true;
        }
    }
    if newer(&st.versions, "$last") {
        st.last_id = Some(w.event_id.to_owned());
        st.last_at = Some(w.occurred_at);
        st.versions
            .insert("$last".into(), Value::String(pos.to_owned()));
        changed = true;
    }
    changed
}
