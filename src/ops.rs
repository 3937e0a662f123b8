//! The operator's view of the event log: what `hooksync status`, `events`, `events show` and
//! `retry` read and change. Each runs on a connection of its own, beside a serving daemon
//! (on SQLite a write waits its turn behind the daemon's, as any other writer does).

use std::collections::BTreeMap;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use serde::Serialize;

use crate::stamp::Stamp;
use crate::store::{Db, Stmt, StoreError};

/// The statuses an event can have, in the order `status` lists them.
pub const STATUSES: &[&str] = &[
    "queued",
    "applied",
    "stale",
    "unhandled",
    "invalid",
    "failed",
];

/// Which events `events` lists (newest first) and `retry` queues again.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub source: Option<String>,
    pub status: Option<String>,
    pub event_type: Option<String>,
    /// Received at or after.
    pub since: Option<Stamp>,
    /// Received before.
    pub until: Option<Stamp>,
}

impl Filter {
    /// The `WHERE` clause and its binds, in the order they appear.
    fn clause(&self) -> String {
        let mut conds = vec!["1 = 1"];
        if self.source.is_some() {
            conds.push("source = ?");
        }
        if self.status.is_some() {
            conds.push("status = ?");
        }
        if self.event_type.is_some() {
            conds.push("event_type = ?");
        }
        if self.since.is_some() {
            conds.push("received_at >= ?");
        }
        if self.until.is_some() {
            conds.push("received_at < ?");
        }
        conds.join(" AND ")
    }

    fn bind<'a>(&'a self, mut s: Stmt<'a>) -> Stmt<'a> {
        for t in [&self.source, &self.status, &self.event_type]
            .into_iter()
            .flatten()
        {
            s = s.text(t);
        }
        for t in [self.since, self.until].into_iter().flatten() {
            s = s.time(t);
        }
        s
    }
}

/// One event as `events` lists it.
#[derive(Debug, QueryableByName, Serialize)]
pub struct EventLine {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub event_type: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Text)]
    pub received_at: Stamp,
    #[diesel(sql_type = Text)]
    pub occurred_at: Stamp,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

fn line_columns(db: &Db) -> String {
    let b = db.backend();
    format!(
        "seq, source, event_id, event_type, status, {} AS received_at, {} AS occurred_at, attempts, last_error",
        b.time_text("received_at"),
        b.time_text("occurred_at")
    )
}

/// The events `filter` selects, newest first, at most `limit`.
pub fn events(db: &mut Db, filter: &Filter, limit: i64) -> Result<Vec<EventLine>, StoreError> {
    let sql = format!(
        "SELECT {} FROM events WHERE {} ORDER BY seq DESC LIMIT ?",
        line_columns(db),
        filter.clause()
    );
    db.load(filter.bind(Stmt::new(&sql)).int(limit))
}

/// One event whole, as `events show` prints it.
#[derive(Debug, Serialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub line: EventLine,
    pub applied_at: Option<Stamp>,
    pub time_note: Option<String>,
    /// The stored payload (JSON text), or for an `invalid` event the body as received.
    pub payload: Option<String>,
    /// The domain rows this event wrote last: (table, row data).
    pub rows: Vec<(String, serde_json::Value)>,
}

#[derive(QueryableByName)]
struct Whole {
    #[diesel(embed)]
    line: EventLine,
    #[diesel(sql_type = Nullable<Text>)]
    applied_at: Option<Stamp>,
    #[diesel(sql_type = Nullable<Text>)]
    time_note: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    payload: Option<String>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Binary>)]
    raw_body: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct Data {
    #[diesel(sql_type = Text)]
    data: String,
}

/// The event `event_id` of `source`, with the rows it wrote last; `None` if there is none.
pub fn event(
    db: &mut Db,
    source: &str,
    event_id: &str,
    tables: &[&str],
) -> Result<Option<EventDetail>, StoreError> {
    let b = db.backend();
    let sql = format!(
        "SELECT {}, {} AS applied_at, time_note, {} AS payload, raw_body FROM events \
         WHERE source = ? AND event_id = ?",
        line_columns(db),
        b.time_text("applied_at"),
        b.json_text("payload")
    );
    let Some(w) = db
        .load::<Whole>(Stmt::new(&sql).text(source).text(event_id))?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let mut rows = Vec::new();
    for table in tables {
        let sql = format!(
            "SELECT {} AS data FROM {table} WHERE source = ? AND last_event_id = ?",
            b.json_text("data")
        );
        for r in db.load::<Data>(Stmt::new(&sql).text(source).text(event_id))? {
            let data = serde_json::from_str(&r.data).unwrap_or(serde_json::Value::String(r.data));
            rows.push(((*table).to_owned(), data));
        }
    }
    Ok(Some(EventDetail {
        line: w.line,
        applied_at: w.applied_at,
        time_note: w.time_note,
        payload: w
            .payload
            .or_else(|| w.raw_body.map(|b| String::from_utf8_lossy(&b).into_owned())),
        rows,
    }))
}

/// Queues the events `filter` selects again (its status is `failed` or `unhandled`); returns
/// how many. The projector applies them in their order, as if they had just arrived.
pub fn retry(db: &mut Db, filter: &Filter) -> Result<usize, StoreError> {
    let sql = format!(
        "UPDATE events SET status = 'queued', attempts = 0, last_error = NULL, applied_at = NULL WHERE {}",
        filter.clause()
    );
    db.exec(filter.bind(Stmt::new(&sql)))
}

/// What `status` says of one source.
#[derive(Debug, Default, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub received: i64,
    pub received_24h: i64,
    pub by_status: BTreeMap<String, i64>,
    pub last: Option<EventLine>,
}

/// What `status` prints.
#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub sources: Vec<SourceStatus>,
    pub queued: i64,
    pub oldest_queued: Option<Stamp>,
    pub media: BTreeMap<String, i64>,
    /// The times no hooksync served in the last week.
    pub downtime: Vec<Downtime>,
    /// Each `[[forward]]` destination's deliveries.
    pub destinations: Vec<crate::deliveries::Summary>,
}

#[derive(QueryableByName)]
struct Group {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Oldest {
    #[diesel(sql_type = Nullable<Text>)]
    at: Option<Stamp>,
}

/// When the oldest event still queued arrived; `None` with none queued.
pub fn oldest_queued(db: &mut Db) -> Result<Option<Stamp>, StoreError> {
    let sql = format!(
        "SELECT {} AS at FROM events WHERE status = 'queued'",
        db.backend().time_text("MIN(received_at)")
    );
    Ok(db
        .load::<Oldest>(Stmt::new(&sql))?
        .into_iter()
        .next()
        .and_then(|o| o.at))
}

/// The counts `status` prints, for `sources` (the configured ones, in their order).
pub fn status(db: &mut Db, sources: &[String], now: Stamp) -> Result<Status, StoreError> {
    let day_ago = now.plus(time::Duration::days(-1));
    let mut out = Status::default();
    for source in sources {
        let mut s = SourceStatus {
            source: source.clone(),
            ..SourceStatus::default()
        };
        let groups: Vec<Group> = db.load(
            Stmt::new(
                "SELECT status AS key, COUNT(*) AS n FROM events WHERE source = ? GROUP BY status",
            )
            .text(source),
        )?;
        for st in STATUSES {
            s.by_status.insert((*st).to_owned(), 0);
        }
        for g in groups {
            s.received += g.n;
            s.by_status.insert(g.key, g.n);
        }
        s.received_24h = db.count(
            Stmt::new("SELECT COUNT(*) AS n FROM events WHERE source = ? AND received_at >= ?")
                .text(source)
                .time(day_ago),
        )?;
        let filter = Filter {
            source: Some(source.clone()),
            ..Filter::default()
        };
        s.last = events(db, &filter, 1)?.into_iter().next();
        out.sources.push(s);
    }
    out.queued = db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'queued'")?;
    out.oldest_queued = oldest_queued(db)?;
    let media: Vec<Group> = db.load(Stmt::new(
        "SELECT status AS key, COUNT(*) AS n FROM media GROUP BY status",
    ))?;
    for st in ["pending", "fetched", "failed", "expired"] {
        out.media.insert(st.to_owned(), 0);
    }
    for g in media {
        out.media.insert(g.key, g.n);
    }
    Ok(out)
}

/// One time no hooksync served, and what it means for each endpoint.
#[derive(Debug, Serialize)]
pub struct Downtime {
    pub from: Stamp,
    /// `None`: none serves now.
    pub to: Option<Stamp>,
    pub seconds: u64,
    pub endpoints: Vec<Exposure>,
}

/// Whether an endpoint's provider resent across a gap.
#[derive(Debug, Serialize)]
pub struct Exposure {
    pub endpoint: String,
    /// `true`: every event sent during the gap was sent again after it; `None`: the provider
    /// does not publish how long it resends.
    pub covered: Option<bool>,
    /// Events first sent between these times may never arrive.
    pub lost_from: Option<Stamp>,
    pub lost_to: Option<Stamp>,
    pub recover: &'static str,
}

/// The gaps of the last `days` with, for each endpoint (name, its provider's resending),
/// whether its events of the gap can still arrive.
pub fn downtime(
    db: &mut Db,
    endpoints: &[(String, crate::providers::Retries)],
    now: Stamp,
    days: i64,
) -> Result<Vec<Downtime>, StoreError> {
    let gaps = crate::runs::gaps(db, now.plus(time::Duration::days(-days)), now)?;
    Ok(gaps
        .into_iter()
        .map(|g| {
            let end = g.to.unwrap_or(now);
            let length = g.from.until(end);
            let endpoints = endpoints
                .iter()
                .map(|(name, r)| {
                    let covered = r.window.map(|w| w >= length);
                    let lost_to = match (covered, r.window) {
                        (Some(false), Some(w)) => {
                            time::Duration::try_from(w).ok().map(|w| end.plus(-w))
                        }
                        _ => None,
                    };
                    Exposure {
                        endpoint: name.clone(),
                        covered,
                        lost_from: lost_to.map(|_| g.from),
                        lost_to,
                        recover: r.recover,
                    }
                })
                .collect();
            Downtime {
                from: g.from,
                to: g.to,
                seconds: length.as_secs(),
                endpoints,
            }
        })
        .collect())
}
