//! The deliveries to the CRM (`[[forward]]` destinations), as tables: `hooksync_deliveries`
//! (one row per event, or per changed row for a `rows` destination, and destination),
//! `hooksync_delivery_attempts` and `hooksync_destinations` (paused or not).
//!
//! The projector creates a chunk's deliveries inside the chunk's own transaction (`plan`), in
//! the order it applied the events, so a delivery exists exactly when its event is applied, and
//! the commit that acknowledged the event to its sender wrote nothing for it. A rebuild applies
//! events again without delivering them again: a delivery is unique per (destination, source,
//! event, object). Events the projector never takes (`unhandled`, `invalid`) are planned for
//! passthrough destinations by the forwarder (`plan_unprojected`).
//!
//! Per destination and object (the row an event is about), one delivery is in flight at a
//! time, in id order: `claim` takes only the first unfinished delivery of each object. On
//! PostgreSQL the claim locks with `FOR UPDATE SKIP LOCKED` and records a lease, so instances
//! sharing the database never send one delivery at once; a lease that runs out (its instance
//! was killed) lets another take it.

use std::collections::HashMap;

use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::QueryableByName;
use serde::Serialize;

use crate::config::{ForwardConfig, ForwardMode};
use crate::projection::{Outcome, Touched};
use crate::stamp::Stamp;
use crate::store::{marks, rows_per_statement, Backend, Db, Sql, Stmt, StoreError};

/// A destination as the projector and the forwarder see it.
#[derive(Debug, Clone)]
pub struct Route {
    pub cfg: ForwardConfig,
    /// The sources of the endpoints it takes; `None`: every source.
    pub sources: Option<Vec<String>>,
}

impl Route {
    /// `endpoints` maps each endpoint name to its source.
    pub fn new(cfg: &ForwardConfig, endpoints: &HashMap<String, String>) -> Route {
        let sources = (!cfg.endpoints.is_empty()).then(|| {
            cfg.endpoints
                .iter()
                .filter_map(|e| endpoints.get(e).cloned())
                .collect()
        });
        Route {
            cfg: cfg.clone(),
            sources,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    fn takes(&self, source: &str, event_type: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == source))
            && self.cfg.takes_type(event_type)
    }
}

/// An event the projector finished in a chunk, with the rows it named.
pub struct Finished<'a> {
    pub seq: i64,
    pub source: &'a str,
    pub event_id: &'a str,
    pub event_type: Option<&'a str>,
    pub outcome: Outcome,
    pub touched: Vec<Touched>,
}

/// One delivery to create.
struct New<'a> {
    destination: &'a str,
    source: &'a str,
    event_id: &'a str,
    seq: i64,
    event_type: Option<&'a str>,
    object: String,
    row_ref: Option<String>,
}

/// The ordering key of a row: deliveries about one object go one at a time.
fn object_of(source: &str, t: &Touched) -> String {
    let mut o = format!("{}/{}", t.table, source.len());
    o.push(':');
    o.push_str(source);
    for k in &t.key {
        o.push_str(&format!("/{}:{k}", k.len()));
    }
    o
}

/// The object of an event that names no row: itself (no order to keep).
fn object_of_event(source: &str, event_id: &str) -> String {
    format!(
        "event/{}:{source}/{}:{event_id}",
        source.len(),
        event_id.len()
    )
}

/// Which row a `rows` delivery sends, as stored in `row_ref`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RowRef {
    pub table: String,
    pub key: Vec<(String, String)>,
}

const INSERT: &str = "INSERT INTO hooksync_deliveries (destination, source, event_id, event_seq, \
     event_type, object, row_ref, status, created_at, next_attempt_at) VALUES ";
const INSERT_WIDTH: usize = 10;

/// Inserts `rows`; one that exists already (the event applied again, by a rebuild) stays as
/// it is, or with `again`, is sent again.
fn insert(db: &mut Db, rows: &[New<'_>], now: Stamp, again: bool) -> Result<usize, StoreError> {
    let on_conflict = if again {
        "DO UPDATE SET status = 'pending', next_attempt_at = excluded.next_attempt_at, \
         first_attempt_at = NULL, delivered_at = NULL"
    } else {
        "DO NOTHING"
    };
    let mut n = 0;
    for part in rows.chunks(rows_per_statement(INSERT_WIDTH, 0)) {
        let sql = format!(
            "{INSERT}{} ON CONFLICT (destination, source, event_id, object) {on_conflict}",
            vec![marks(INSERT_WIDTH); part.len()].join(", ")
        );
        let mut s = Stmt::new(&sql);
        for r in part {
            s = s
                .text(r.destination)
                .text(r.source)
                .text(r.event_id)
                .int(r.seq)
                .opt_text(r.event_type)
                .text(&r.object)
                .opt_text(r.row_ref.as_deref())
                .text("pending")
                .time(now)
                .time(now);
        }
        n += db.exec(s)?;
    }
    Ok(n)
}

/// Creates the deliveries of a chunk's finished events, in the order they were applied;
/// returns how many. Inside the projector's transaction. An event applied again (a rebuild)
/// is not delivered again unless `again`.
pub fn plan(
    db: &mut Db,
    routes: &[Route],
    done: &[Finished<'_>],
    now: Stamp,
    again: bool,
) -> Result<usize, StoreError> {
    let mut rows = Vec::new();
    for ev in done {
        let ty = ev.event_type.unwrap_or_default();
        for r in routes {
            if !r.takes(ev.source, ty) || (ev.outcome == Outcome::Stale && !r.cfg.include_stale) {
                continue;
            }
            let new = |object: String, row_ref: Option<String>| New {
                destination: r.name(),
                source: ev.source,
                event_id: ev.event_id,
                seq: ev.seq,
                event_type: ev.event_type,
                object,
                row_ref,
            };
            match r.cfg.mode {
                ForwardMode::Rows => {
                    for t in ev.touched.iter().filter(|t| t.changed) {
                        let row = RowRef {
                            table: t.table.to_owned(),
                            key: t
                                .key_names
                                .iter()
                                .zip(&t.key)
                                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                                .collect(),
                        };
                        let text = serde_json::to_string(&row).ok();
                        rows.push(new(object_of(ev.source, t), text));
                    }
                }
                ForwardMode::Passthrough | ForwardMode::Standard => {
                    let object = ev.touched.first().map_or_else(
                        || object_of_event(ev.source, ev.event_id),
                        |t| object_of(ev.source, t),
                    );
                    rows.push(new(object, None));
                }
            }
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    insert(db, &rows, now, again)
}

#[derive(QueryableByName)]
struct Unprojected {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    event_type: Option<String>,
}

/// How many unprojected events one call looks at most.
const UNPROJECTED_BATCH: i64 = 256;

/// Where a passthrough destination's scan for `unhandled` and `invalid` events stands: events
/// received since `since`, after `after_seq` in this pass.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    pub since: Stamp,
    pub after_seq: i64,
    /// When this pass began: the next one looks back from there.
    pub began: Stamp,
}

/// How far back a new pass looks before the last one began: longer than any event takes from
/// its receipt (its `received_at`) to its commit.
const SCAN_OVERLAP: time::Duration = time::Duration::minutes(5);

impl Scan {
    /// The first pass: every event within the destination's `give_up_after`.
    pub fn new(route: &Route, now: Stamp) -> Scan {
        let back = time::Duration::try_from(route.cfg.give_up()).unwrap_or(time::Duration::ZERO);
        Scan {
            since: now.plus(-back),
            after_seq: 0,
            began: now,
        }
    }
}

/// Plans the next `unhandled` and `invalid` events of `sources` that a passthrough destination
/// takes and has no delivery for; returns how many, and moves `scan` on. A pass pages through
/// the window by `seq`; the next one starts a little before the last began.
pub fn plan_unprojected(
    db: &mut Db,
    route: &Route,
    sources: &[String],
    scan: &mut Scan,
    now: Stamp,
) -> Result<usize, StoreError> {
    if route.cfg.mode != ForwardMode::Passthrough || sources.is_empty() {
        return Ok(0);
    }
    let sources: Vec<&String> = sources
        .iter()
        .filter(|s| route.sources.as_ref().is_none_or(|r| r.contains(s)))
        .collect();
    if sources.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT e.seq, e.source, e.event_id, e.event_type FROM events e \
         WHERE e.source IN {} AND e.status IN ('unhandled', 'invalid') AND e.received_at >= ? \
         AND e.seq > ? AND NOT EXISTS (SELECT 1 FROM hooksync_deliveries d \
         WHERE d.destination = ? AND d.source = e.source AND d.event_id = e.event_id) \
         ORDER BY e.seq LIMIT ?",
        marks(sources.len())
    );
    let stmt = sources.iter().fold(Stmt::new(&sql), |s, src| s.text(src));
    let found: Vec<Unprojected> = db.load(
        stmt.time(scan.since)
            .int(scan.after_seq)
            .text(route.name())
            .int(UNPROJECTED_BATCH),
    )?;
    match found.last() {
        Some(last) if found.len() as i64 == UNPROJECTED_BATCH => scan.after_seq = last.seq,
        _ => {
            *scan = Scan {
                since: scan.began.plus(-SCAN_OVERLAP),
                after_seq: 0,
                began: now,
            }
        }
    }
    let rows: Vec<New<'_>> = found
        .iter()
        .filter(|e| route.takes(&e.source, e.event_type.as_deref().unwrap_or_default()))
        .map(|e| New {
            destination: route.name(),
            source: &e.source,
            event_id: &e.event_id,
            seq: e.seq,
            event_type: e.event_type.as_deref(),
            object: object_of_event(&e.source, &e.event_id),
            row_ref: None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    insert(db, &rows, now, false)
}

/// A claimed delivery, with what its request is made of.
#[derive(Debug)]
pub struct Job {
    pub d: Claimed,
    /// For a `rows` delivery, the row as it stands.
    pub row: Option<RowNow>,
}

/// A claimed delivery's row and its event's.
#[derive(Debug, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Requests made before this one.
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub first_attempt_at: Option<Stamp>,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub event_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub row_ref: Option<String>,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Text)]
    pub occurred_at: Stamp,
    #[diesel(sql_type = Nullable<Text>)]
    pub payload: Option<String>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub raw_body: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub headers: Option<String>,
}

/// A row as a `rows` delivery sends it.
#[derive(Debug, Clone, Default)]
pub struct RowNow {
    pub table: String,
    pub key: Vec<(String, String)>,
    /// The merged provider object (`data`); `None` when the row is gone.
    pub data: Option<String>,
    pub last_event_id: Option<String>,
    pub deleted: bool,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = Text)]
    data: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_event_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_at: Option<String>,
}

/// The first unfinished delivery of each object, due and not claimed by a live lease, oldest
/// first; locked (PostgreSQL) so that instances claim different ones. "First of its object" is
/// a scalar subquery, one probe of the object index per candidate: written as `NOT EXISTS`,
/// PostgreSQL plans an anti-join over every unfinished delivery, the whole backlog at each claim.
static CLAIMABLE: Sql = Sql::new(|b| {
    let lock = match b {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    format!(
        "SELECT d.id FROM hooksync_deliveries d \
         WHERE d.destination = ? AND d.status IN ('pending', 'failed') AND d.next_attempt_at <= ? \
         AND (d.claimed_until IS NULL OR d.claimed_until <= ?) \
         AND d.id = (SELECT MIN(e.id) FROM hooksync_deliveries e WHERE e.destination = d.destination \
         AND e.object = d.object AND e.status IN ('pending', 'failed')) \
         ORDER BY d.id LIMIT ?{lock}"
    )
});

static JOBS: Sql = Sql::new(|b| {
    format!(
        "SELECT d.id, d.attempts, {} AS first_attempt_at, d.source, d.event_id, d.event_type, \
         d.row_ref, e.provider, {} AS occurred_at, {} AS payload, e.raw_body, e.headers \
         FROM hooksync_deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id IN ",
        b.time_text("d.first_attempt_at"),
        b.time_text("e.occurred_at"),
        b.json_text("e.payload")
    )
});

/// Every table a `rows` delivery may name, with its key columns: what `row_ref` is checked
/// against before it becomes SQL.
const ROW_TABLES: &[(&str, &[&str])] = &[
    ("debts", &["id"]),
    ("followups", &["id"]),
    ("payments", &["id"]),
    ("payment_plans", &["debt_id"]),
    ("notices", &["id"]),
    ("invoices", &["id"]),
    ("customers", &["id"]),
    ("bills", &["id"]),
    ("vendors", &["id"]),
    ("records", &["kind", "id"]),
];

fn read_row(db: &mut Db, source: &str, row_ref: &str) -> Result<RowNow, StoreError> {
    let bad = |why: &str| {
        StoreError::Query(diesel::result::Error::DeserializationError(
            format!("row_ref {why}").into(),
        ))
    };
    let r: RowRef = serde_json::from_str(row_ref).map_err(|_| bad("is not JSON"))?;
    let names: Vec<&str> = r.key.iter().map(|(n, _)| n.as_str()).collect();
    let Some((table, _)) = ROW_TABLES
        .iter()
        .find(|(t, k)| *t == r.table && *k == names.as_slice())
    else {
        return Err(bad("names no domain table"));
    };
    let b = db.backend();
    let mut sql = format!(
        "SELECT {} AS data, last_event_id, {} AS deleted_at FROM {table} WHERE source = ?",
        b.json_text("data"),
        b.time_text("deleted_at")
    );
    for n in &names {
        sql.push_str(&format!(" AND \"{n}\" = ?"));
    }
    let mut s = Stmt::new(&sql).text(source);
    for (_, v) in &r.key {
        s = s.text(v);
    }
    let found: Vec<StoredRow> = db.load(s)?;
    let mut now = RowNow {
        table: r.table.clone(),
        key: r.key.clone(),
        deleted: true,
        ..RowNow::default()
    };
    if let Some(row) = found.into_iter().next() {
        now.deleted = row.deleted_at.is_some();
        now.data = Some(row.data);
        now.last_event_id = row.last_event_id;
    }
    Ok(now)
}

/// Claims up to `n` deliveries of `destination` for `lease` (until that instant), for the
/// process `me`; returns them with what their requests are made of. The caller does not claim
/// for a paused destination (`paused`).
pub fn claim(
    db: &mut Db,
    destination: &str,
    n: i64,
    now: Stamp,
    lease: Stamp,
    me: &str,
) -> Result<Vec<Job>, StoreError> {
    if n <= 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<Id> = db.load(
        Stmt::new(CLAIMABLE.get(db.backend()))
            .text(destination)
            .time(now)
            .time(now)
            .int(n),
    )?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = marks(ids.len());
    let sql = format!(
        "UPDATE hooksync_deliveries SET claimed_by = ?, claimed_until = ? WHERE id IN {list}"
    );
    let s = ids
        .iter()
        .fold(Stmt::new(&sql).text(me).time(lease), |s, i| s.int(i.id));
    db.exec(s)?;
    let sql = format!("{}{list} ORDER BY d.id", JOBS.get(db.backend()));
    let claimed: Vec<Claimed> = db.load(ids.iter().fold(Stmt::new(&sql), |s, i| s.int(i.id)))?;
    let mut jobs = Vec::with_capacity(claimed.len());
    for d in claimed {
        let row = match &d.row_ref {
            Some(r) => Some(read_row(db, &d.source, r)?),
            None => None,
        };
        jobs.push(Job { d, row });
    }
    Ok(jobs)
}

/// Gives back every claim of a SQLite database at start: only one process serves a SQLite
/// file, so a claim there is a killed run's.
pub fn release_all(db: &mut Db) -> Result<usize, StoreError> {
    db.exec(Stmt::new(
        "UPDATE hooksync_deliveries SET claimed_by = NULL, claimed_until = NULL \
         WHERE claimed_by IS NOT NULL",
    ))
}

/// Gives back the claims of the process `me` (it stops).
pub fn release(db: &mut Db, me: &str) -> Result<usize, StoreError> {
    db.exec(
        Stmt::new(
            "UPDATE hooksync_deliveries SET claimed_by = NULL, claimed_until = NULL \
             WHERE claimed_by = ?",
        )
        .text(me),
    )
}

/// What became of one delivery's attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Tried again at this instant.
    Retry(Stamp),
    /// Given up.
    Dead,
    /// The destination answered 410: it is paused, and this delivery waits for the resume.
    Paused,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry(_) => "failed",
            Verdict::Dead => "dead",
            Verdict::Paused => "paused",
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    /// 1 for the first request.
    pub attempt: i64,
    pub at: Stamp,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    /// The start of the answer's body.
    pub response: Option<String>,
    pub verdict: Verdict,
}

/// Records attempts of `destination`'s deliveries made by `me`; a claim another process took
/// over in the meantime (its lease ran out) is left to it.
pub fn record(
    db: &mut Db,
    destination: &str,
    me: &str,
    attempts: &[Attempt],
    now: Stamp,
) -> Result<(), StoreError> {
    for a in attempts {
        let (status, next) = match &a.verdict {
            Verdict::Delivered => ("delivered", a.at),
            Verdict::Retry(at) => ("failed", *at),
            Verdict::Dead => ("dead", a.at),
            Verdict::Paused => ("failed", a.at),
        };
        let n = db.exec(
            Stmt::new(
                "UPDATE hooksync_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, \
                 first_attempt_at = COALESCE(first_attempt_at, ?), last_attempt_at = ?, \
                 delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, \
                 last_status = ?, last_error = ?, claimed_by = NULL, claimed_until = NULL \
                 WHERE id = ? AND claimed_by = ?",
            )
            .text(status)
            .int(a.attempt)
            .time(next)
            .time(a.at)
            .time(a.at)
            .text(status)
            .time(now)
            .bind(crate::store::Bind::Int(a.http_status))
            .opt_text(a.error.as_deref())
            .int(a.id)
            .text(me),
        )?;
        if n == 0 {
            continue;
        }
        db.exec(
            Stmt::new(
                "INSERT INTO hooksync_delivery_attempts (delivery_id, attempt, at, duration_ms, \
                 http_status, error, response) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (delivery_id, attempt) DO NOTHING",
            )
            .int(a.id)
            .int(a.attempt)
            .time(a.at)
            .int(a.duration_ms)
            .bind(crate::store::Bind::Int(a.http_status))
            .opt_text(a.error.as_deref())
            .opt_text(a.response.as_deref()),
        )?;
        if a.verdict == Verdict::Paused {
            pause(
                db,
                destination,
                a.error.as_deref().unwrap_or("HTTP 410"),
                a.at,
            )?;
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Paused {
    #[diesel(sql_type = Nullable<Text>)]
    paused_at: Option<Stamp>,
}

/// When the destination was paused, if it is.
pub fn paused(db: &mut Db, destination: &str) -> Result<Option<Stamp>, StoreError> {
    let sql = format!(
        "SELECT {} AS paused_at FROM hooksync_destinations WHERE name = ?",
        db.backend().time_text("paused_at")
    );
    let rows: Vec<Paused> = db.load(Stmt::new(&sql).text(destination))?;
    Ok(rows.into_iter().next().and_then(|p| p.paused_at))
}

fn pause(db: &mut Db, destination: &str, why: &str, at: Stamp) -> Result<(), StoreError> {
    db.exec(
        Stmt::new(
            "INSERT INTO hooksync_destinations (name, paused_at, paused_why) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at, \
             paused_why = excluded.paused_why",
        )
        .text(destination)
        .time(at)
        .text(why),
    )
    .map(drop)
}

/// Lets a paused destination deliver again; returns whether it was paused.
pub fn resume(db: &mut Db, destination: &str) -> Result<bool, StoreError> {
    let n = db.exec(
        Stmt::new(
            "UPDATE hooksync_destinations SET paused_at = NULL, paused_why = NULL \
             WHERE name = ? AND paused_at IS NOT NULL",
        )
        .text(destination),
    )?;
    Ok(n > 0)
}

/// Which deliveries `deliveries` lists or `redeliver` sends again.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub destination: Option<String>,
    /// `pending` (not delivered yet, retries included), `failed`, `dead` or `delivered`.
    pub status: Option<String>,
    pub since: Option<Stamp>,
    /// One event: (source, event id).
    pub event: Option<(String, String)>,
}

impl Filter {
    fn clause(&self) -> String {
        let mut c = vec!["1 = 1".to_string()];
        if self.destination.is_some() {
            c.push("destination = ?".into());
        }
        match self.status.as_deref() {
            Some("pending") => c.push("status IN ('pending', 'failed')".into()),
            Some(_) => c.push("status = ?".into()),
            None => {}
        }
        if self.since.is_some() {
            c.push("created_at >= ?".into());
        }
        if self.event.is_some() {
            c.push("source = ? AND event_id = ?".into());
        }
        c.join(" AND ")
    }

    fn bind<'a>(&'a self, mut s: Stmt<'a>) -> Stmt<'a> {
        if let Some(d) = &self.destination {
            s = s.text(d);
        }
        if let Some(st) = self.status.as_deref().filter(|s| *s != "pending") {
            s = s.text(st);
        }
        if let Some(t) = self.since {
            s = s.time(t);
        }
        if let Some((src, id)) = &self.event {
            s = s.text(src).text(id);
        }
        s
    }
}

/// A delivery as `hooksync deliveries` shows it.
#[derive(Debug, Serialize, QueryableByName)]
pub struct Line {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub destination: String,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub event_type: Option<String>,
    #[diesel(sql_type = Text)]
    pub object: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = Text)]
    pub created_at: Stamp,
    #[diesel(sql_type = Text)]
    pub next_attempt_at: Stamp,
    #[diesel(sql_type = Nullable<Text>)]
    pub delivered_at: Option<Stamp>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub last_status: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

/// The deliveries `filter` selects, newest first.
pub fn list(db: &mut Db, filter: &Filter, limit: i64) -> Result<Vec<Line>, StoreError> {
    let b = db.backend();
    let sql = format!(
        "SELECT id, destination, source, event_id, event_type, object, status, attempts, \
         {} AS created_at, {} AS next_attempt_at, {} AS delivered_at, last_status, last_error \
         FROM hooksync_deliveries WHERE {} ORDER BY id DESC LIMIT ?",
        b.time_text("created_at"),
        b.time_text("next_attempt_at"),
        b.time_text("delivered_at"),
        filter.clause()
    );
    db.load(filter.bind(Stmt::new(&sql)).int(limit))
}

/// Sends the deliveries `filter` selects again, from now, with a fresh `give_up_after`;
/// returns how many.
pub fn redeliver(db: &mut Db, filter: &Filter, now: Stamp) -> Result<usize, StoreError> {
    let sql = format!(
        "UPDATE hooksync_deliveries SET status = 'pending', next_attempt_at = ?, \
         first_attempt_at = NULL, delivered_at = NULL WHERE {}",
        filter.clause()
    );
    db.exec(filter.bind(Stmt::new(&sql).time(now)))
}

/// One destination's state, as `hooksync status` and the metrics show it.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Summary {
    #[diesel(sql_type = Text)]
    pub destination: String,
    /// Not delivered yet (retries included).
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub oldest_pending: Option<Stamp>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_delivered: Option<Stamp>,
    #[diesel(sql_type = Nullable<Text>)]
    pub paused_at: Option<Stamp>,
}

/// The state of each of `destinations`.
pub fn summary(db: &mut Db, destinations: &[String]) -> Result<Vec<Summary>, StoreError> {
    let b = db.backend();
    let sql = format!(
        "SELECT ? AS destination, \
         (SELECT COUNT(*) FROM hooksync_deliveries WHERE destination = ? AND status IN ('pending', 'failed')) AS pending, \
         (SELECT COUNT(*) FROM hooksync_deliveries WHERE destination = ? AND status = 'dead') AS dead, \
         (SELECT {} FROM hooksync_deliveries WHERE destination = ? AND status IN ('pending', 'failed')) AS oldest_pending, \
         (SELECT {} FROM hooksync_deliveries WHERE destination = ? AND status = 'delivered') AS last_delivered, \
         (SELECT {} FROM hooksync_destinations WHERE name = ?) AS paused_at",
        b.time_text("MIN(created_at)"),
        b.time_text("MAX(delivered_at)"),
        b.time_text("paused_at"),
    );
    let mut out = Vec::new();
    for d in destinations {
        let s = (0..6).fold(Stmt::new(&sql), |s, _| s.text(d));
        out.extend(db.load::<Summary>(s)?);
    }
    Ok(out)
}

/// The attempts of one delivery, oldest first.
#[derive(Debug, Serialize, QueryableByName)]
pub struct AttemptLine {
    #[diesel(sql_type = BigInt)]
    pub attempt: i64,
    #[diesel(sql_type = Text)]
    pub at: Stamp,
    #[diesel(sql_type = BigInt)]
    pub duration_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub http_status: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
}

pub fn attempts(db: &mut Db, id: i64) -> Result<Vec<AttemptLine>, StoreError> {
    let sql = format!(
        "SELECT attempt, {} AS at, duration_ms, http_status, error FROM hooksync_delivery_attempts \
         WHERE delivery_id = ? ORDER BY attempt",
        db.backend().time_text("at")
    );
    db.load(Stmt::new(&sql).int(id))
}
