//! How an event becomes rows: a chunk's rows read (and locked) at once, merged in memory by
//! the row guard (`guard`), and written once; the typed columns derived from the merged object.
//!
//! Every typed column is derived from the merged `data`, so columns and `data` cannot disagree.
//! The statements themselves are the store's (`store::rows`); media rows are `media`'s.

mod guard;

use std::collections::HashMap;
use std::sync::OnceLock;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use serde_json::{Map, Value};

use crate::stamp::Stamp;
use crate::store::{rows, rows_per_statement, Backend, Bind, Db, Stmt, StoreError};
use guard::RowState;

/// How a column's value is read from the provider object.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Strings as they are; numbers as PostgreSQL's `jsonb` prints them; objects as JSON text.
    Text,
    /// Exact decimals only, as NUMERIC prints them (`json::canonical_number`, `plain_decimal`).
    Money,
    /// An instant, stored in UTC.
    Timestamp,
    Int,
    /// JSON text of whatever is there.
    Json,
    /// The constant 1: the mapping itself says it (e.g. "this payment is a plan installment").
    Flag,
    /// 1 or 0 from a JSON boolean.
    Bool,
}

#[derive(Debug)]
pub struct Col {
    pub name: &'static str,
    /// A key of the provider object, or a dotted path into it.
    pub path: &'static str,
    pub kind: Kind,
}

pub const fn col(name: &'static str, path: &'static str, kind: Kind) -> Col {
    Col { name, path, kind }
}

/// One provider's view of one table: which columns it fills and from where.
pub struct Mapping {
    pub table: &'static str,
    /// Key columns besides `source`.
    pub key: &'static [&'static str],
    pub cols: &'static [Col],
    select_sql: OnceLock<String>,
    upsert_sql: OnceLock<String>,
}

impl Mapping {
    pub const fn new(
        table: &'static str,
        key: &'static [&'static str],
        cols: &'static [Col],
    ) -> Self {
        Self {
            table,
            key,
            cols,
            select_sql: OnceLock::new(),
            upsert_sql: OnceLock::new(),
        }
    }

    fn col_names(&self) -> Vec<&'static str> {
        self.cols.iter().map(|c| c.name).collect()
    }

    fn select_sql(&self) -> &str {
        self.select_sql
            .get_or_init(|| rows::select_row(self.table, self.key))
    }

    fn upsert_sql(&self) -> &str {
        self.upsert_sql.get_or_init(|| self.upsert_rows_sql(1))
    }

    /// The columns the upsert writes, in the order each row binds them.
    fn upsert_columns(&self) -> Vec<&'static str> {
        rows::upsert_columns(self.key, &self.col_names())
    }

    fn upsert_rows_sql(&self, n: usize) -> String {
        rows::upsert_rows(self.table, self.key, &self.col_names(), n)
    }
}

/// Which row: table, source and key values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    table: &'static str,
    source: String,
    key: Vec<String>,
}

impl RowKey {
    /// Binds the source, then each key value: the order every statement on rows names them in.
    fn bind<'s>(&'s self, mut s: Stmt<'s>) -> Stmt<'s> {
        s = s.text(&self.source);
        for k in &self.key {
            s = s.text(k);
        }
        s
    }
}

impl RowState {
    fn from_row(r: CurrentRow) -> Result<RowState, ProjectError> {
        Ok(RowState {
            data: parse_object(&r.data, "data")?,
            versions: parse_object(&r.versions, "versions")?,
            last_id: r.last_event_id,
            last_at: r.last_event_at,
            deleted_at: r.deleted_at,
        })
    }
}

struct Cached {
    state: RowState,
    /// The mappings that changed the row in this chunk; each writes its own columns.
    dirty: Vec<&'static Mapping>,
}

/// The rows one projector chunk works on. Instead of a read and a write per event, a chunk
/// reads (and on PostgreSQL locks) the rows its events name in one statement per table, merges
/// in memory, and writes each changed row once, in one statement per mapping. On PostgreSQL,
/// where every statement is a round trip to the server, that is most of the projector's time.
#[derive(Default)]
pub struct RowCache {
    rows: HashMap<RowKey, Cached>,
}

#[derive(QueryableByName)]
struct LockedRow {
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    k0: String,
    #[diesel(sql_type = Nullable<Text>)]
    k1: Option<String>,
    #[diesel(embed)]
    row: CurrentRow,
}

impl RowCache {
    /// Creates, locks and reads the rows `wanted` names, a statement or two per table. Rows
    /// the chunk turns out to need beyond these are read one by one (`Tx::upsert`).
    pub fn prefetch(
        &mut self,
        db: &mut Db,
        mut wanted: Vec<(&'static Mapping, RowKey)>,
    ) -> Result<(), ProjectError> {
        if db.backend() != Backend::Postgres {
            return Ok(());
        }
        wanted.sort_by(|a, b| a.1.cmp(&b.1));
        wanted.dedup_by(|a, b| a.1 == b.1);
        let mut i = 0;
        while i < wanted.len() {
            let table = wanted[i].1.table;
            let j = i + wanted[i..]
                .iter()
                .take_while(|w| w.1.table == table)
                .count();
            let keys: Vec<&RowKey> = wanted[i..j].iter().map(|(_, k)| k).collect();
            for (key, state) in lock_rows(db, wanted[i].0, &keys)? {
                let dirty = Vec::new();
                self.rows.insert(key, Cached { state, dirty });
            }
            i = j;
        }
        Ok(())
    }

    /// Writes every changed row: one statement per mapping.
    pub fn flush(&mut self, db: &mut Db, now: Stamp) -> Result<(), ProjectError> {
        let mut by_mapping: Vec<(&'static Mapping, Vec<(&RowKey, &RowState)>)> = Vec::new();
        let mut rows: Vec<(&RowKey, &Cached)> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for (k, c) in rows {
            for m in &c.dirty {
                match by_mapping.iter_mut().find(|(x, _)| std::ptr::eq(*x, *m)) {
                    Some((_, v)) => v.push((k, &c.state)),
                    None => by_mapping.push((m, vec![(k, &c.state)])),
                }
            }
        }
        for (m, rows) in by_mapping {
            let values: Vec<RowValues> = rows
                .iter()
                .map(|(k, st)| RowValues::new(m, k, st))
                .collect::<Result<_, _>>()?;
            for part in values.chunks(rows_per_statement(m.upsert_columns().len(), 0)) {
                let sql = m.upsert_rows_sql(part.len());
                let mut stmt = Stmt::new(&sql);
                for v in part {
                    stmt = v.bind(stmt, now);
                }
                db.exec(stmt)?;
            }
        }
        self.rows.clear();
        Ok(())
    }
}

/// PostgreSQL: creates (empty) the rows of `keys` that are missing, then locks and reads them
/// all, in two statements whatever their number (two per part when they are more than one
/// statement can bind). Keys come sorted, so instances lock in the same order. The claim is a
/// statement of its own so that the read, a later statement, sees rows another transaction
/// created while the claim waited for it.
fn lock_rows(
    db: &mut Db,
    m: &Mapping,
    keys: &[&RowKey],
) -> Result<Vec<(RowKey, RowState)>, ProjectError> {
    let mut out = Vec::with_capacity(keys.len());
    for part in keys.chunks(rows_per_statement(1 + m.key.len(), 0)) {
        let claim = rows::claim_rows(m.table, m.key, part.len());
        let lock = rows::lock_rows(m.table, m.key, part.len());
        db.exec(part.iter().fold(Stmt::new(&claim), |s, k| k.bind(s)))?;
        for r in db.load::<LockedRow>(part.iter().fold(Stmt::new(&lock), |s, k| k.bind(s)))? {
            let mut key = vec![r.k0];
            key.extend(r.k1);
            let row_key = RowKey {
                table: m.table,
                source: r.source,
                key,
            };
            out.push((row_key, RowState::from_row(r.row)?));
        }
    }
    Ok(out)
}

/// One row's values in `Mapping::upsert_sql` order.
struct RowValues<'r> {
    key: &'r RowKey,
    cols: Vec<Val>,
    data: String,
    versions: String,
    state: &'r RowState,
}

impl<'r> RowValues<'r> {
    fn new(m: &Mapping, key: &'r RowKey, state: &'r RowState) -> Result<Self, ProjectError> {
        Ok(RowValues {
            key,
            cols: m
                .cols
                .iter()
                .map(|c| column_value(&state.data, c))
                .collect(),
            data: serde_json::to_string(&state.data)
                .map_err(|e| ProjectError::BadEvent(e.to_string()))?,
            versions: Value::Object(state.versions.clone()).to_string(),
            state,
        })
    }

    fn bind<'s>(&'s self, s: Stmt<'s>, now: Stamp) -> Stmt<'s> {
        let mut s = self.key.bind(s);
        for v in &self.cols {
            s = s.bind(v.bind());
        }
        s.json(&self.data)
            .json(&self.versions)
            .opt_text(self.state.last_id.as_deref())
            .opt_time(self.state.last_at)
            .opt_time(self.state.deleted_at)
            .time(now)
    }
}

/// What an event does to a row's tombstone.
#[derive(Debug, Clone, Copy)]
pub enum Tomb {
    Keep,
    /// A create: clears an older tombstone.
    Clear,
    /// A delete, at this time.
    Set(Stamp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The event cannot be applied as it is; it is marked `failed` and the rest go on.
    #[error("{0}")]
    BadEvent(String),
    /// The database failed; the whole batch is retried later.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A queued event as the projector reads it.
#[derive(Debug, QueryableByName)]
pub struct QueuedEvent {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub event_type: Option<String>,
    #[diesel(sql_type = Text)]
    pub occurred_at: Stamp,
    #[diesel(sql_type = Text)]
    pub received_at: Stamp,
    #[diesel(sql_type = BigInt)]
    pub rank: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub payload: Option<String>,
}

impl QueuedEvent {
    /// The position that orders this event against every other: stored timestamps are fixed
    /// width, so the text compares in time order.
    pub fn position(&self) -> String {
        format!("{}|{}|{:020}", self.occurred_at, self.rank, self.seq)
    }

    pub fn json(&self) -> Result<Value, ProjectError> {
        let text = self
            .payload
            .as_deref()
            .ok_or_else(|| ProjectError::BadEvent("event has no payload".into()))?;
        serde_json::from_str(text)
            .map_err(|e| ProjectError::BadEvent(format!("payload is not JSON: {e}")))
    }

    pub fn event_type(&self) -> &str {
        self.event_type.as_deref().unwrap_or_default()
    }
}

#[derive(QueryableByName)]
struct CurrentRow {
    #[diesel(sql_type = Text)]
    data: String,
    #[diesel(sql_type = Text)]
    versions: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_event_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_event_at: Option<Stamp>,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_at: Option<Stamp>,
}

/// A row an event named, and whether the event changed it: what a delivery to the CRM is
/// about (`deliveries`).
#[derive(Debug, Clone)]
pub struct Touched {
    pub table: &'static str,
    /// The key columns besides `source`, and their values.
    pub key_names: &'static [&'static str],
    pub key: Vec<String>,
    pub changed: bool,
}

/// The projection of one event, inside the projector's transaction.
pub struct Tx<'c> {
    db: &'c mut Db,
    event: &'c QueuedEvent,
    pos: String,
    now: Stamp,
    changed: bool,
    media: bool,
    mode: Mode<'c>,
    touched: Vec<Touched>,
    /// Where each row of `touched` is: an event may name thousands (a plan's installments).
    touched_at: HashMap<(&'static str, Vec<String>), usize>,
}

/// Where `Tx::upsert` reads and writes rows.
pub enum Mode<'c> {
    /// Straight from and to the database, a statement each.
    Direct,
    /// Through the chunk's [`RowCache`], written when the chunk ends.
    Cached(&'c mut RowCache),
    /// Nothing is read or written: only the rows the event names are noted, for
    /// [`RowCache::prefetch`].
    Collect(&'c mut Vec<(&'static Mapping, RowKey)>),
}

enum Val {
    Text(Option<String>),
    Time(Option<Stamp>),
    Money(Option<String>),
    Json(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl Val {
    fn bind(&self) -> Bind<'_> {
        match self {
            Val::Text(t) => Bind::Text(t.as_deref()),
            Val::Time(t) => Bind::Time(*t),
            Val::Money(t) => Bind::Money(t.as_deref()),
            Val::Json(t) => Bind::Json(t.as_deref()),
            Val::Int(i) => Bind::Int(*i),
            Val::Bool(b) => Bind::Bool(*b),
        }
    }
}

impl<'c> Tx<'c> {
    pub fn new(db: &'c mut Db, event: &'c QueuedEvent, now: Stamp, mode: Mode<'c>) -> Self {
        Self {
            pos: event.position(),
            db,
            event,
            now,
            changed: false,
            media: false,
            mode,
            touched: Vec::new(),
            touched_at: HashMap::new(),
        }
    }

    /// The rows the event named, in the order it named them, each once.
    pub fn into_touched(self) -> Vec<Touched> {
        self.touched
    }

    fn touch(&mut self, m: &'static Mapping, key: &[String], changed: bool) {
        let at = (m.table, key.to_vec());
        match self.touched_at.get(&at) {
            Some(&i) => self.touched[i].changed |= changed,
            None => {
                self.touched_at.insert(at, self.touched.len());
                self.touched.push(Touched {
                    table: m.table,
                    key_names: m.key,
                    key: key.to_vec(),
                    changed,
                });
            }
        }
    }

    pub fn outcome(&self) -> Outcome {
        if self.changed {
            Outcome::Applied
        } else {
            Outcome::Stale
        }
    }

    /// Merges `fields` into the row at `key`, field by field, as described in the module docs.
    /// Returns the merged object when the row changed.
    pub fn upsert(
        &mut self,
        m: &'static Mapping,
        key: &[&str],
        fields: &Map<String, Value>,
        tomb: Tomb,
    ) -> Result<Option<Map<String, Value>>, ProjectError> {
        if key.len() != m.key.len() || key.iter().any(|k| k.is_empty()) {
            return Err(ProjectError::BadEvent(format!(
                "{} row without a key",
                m.table
            )));
        }
        let row_key = RowKey {
            table: m.table,
            source: self.event.source.clone(),
            key: key.iter().map(|k| (*k).to_owned()).collect(),
        };
        // Taken out of the chunk's cache (and put back below), or read from the database.
        let cached = match &mut self.mode {
            Mode::Collect(wanted) => {
                wanted.push((m, row_key));
                return Ok(None);
            }
            Mode::Cached(cache) => cache.rows.remove(&row_key),
            Mode::Direct => None,
        };
        let (mut st, mut dirty) = match cached {
            Some(c) => (c.state, c.dirty),
            None => (self.current(m, &row_key)?, Vec::new()),
        };
        let flags = m
            .cols
            .iter()
            .filter(|c| matches!(c.kind, Kind::Flag))
            .map(|c| c.name);
        let writer = guard::Writer {
            pos: &self.pos,
            event_id: &self.event.event_id,
            occurred_at: self.event.occurred_at,
        };
        let changed = guard::merge(&mut st, fields, flags, tomb, &writer);
        let merged = changed.then(|| st.data.clone());
        self.touch(m, &row_key.key, changed);
        match &mut self.mode {
            Mode::Cached(cache) => {
                if changed && !dirty.iter().any(|d| std::ptr::eq(*d, m)) {
                    dirty.push(m);
                }
                cache.rows.insert(row_key, Cached { state: st, dirty });
            }
            Mode::Direct if changed => {
                let v = RowValues::new(m, &row_key, &st)?;
                self.db.exec(v.bind(Stmt::new(m.upsert_sql()), self.now))?;
            }
            Mode::Direct | Mode::Collect(_) => {}
        }
        self.changed |= changed;
        Ok(merged)
    }

    /// The row at `key` as it is (empty when there is none), locked on PostgreSQL.
    fn current(&mut self, m: &Mapping, key: &RowKey) -> Result<RowState, ProjectError> {
        if self.db.backend() == Backend::Postgres {
            let row = lock_rows(self.db, m, &[key])?.into_iter().next();
            return Ok(row.map(|(_, st)| st).unwrap_or_default());
        }
        let select = key.bind(Stmt::new(m.select_sql()));
        match self.db.load::<CurrentRow>(select)?.into_iter().next() {
            Some(r) => RowState::from_row(r),
            None => Ok(RowState::default()),
        }
    }

    /// Keeps the media row for a followup's URL current (see `media::seen`).
    pub fn media(
        &mut self,
        followup_id: &str,
        kind: &str,
        url: Option<&str>,
        expires_at: Option<Stamp>,
    ) -> Result<(), ProjectError> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return Ok(());
        };
        if let Mode::Collect(_) = self.mode {
            return Ok(());
        }
        if crate::media::seen(
            self.db,
            &self.event.source,
            followup_id,
            kind,
            url,
            expires_at,
            self.now,
        )? {
            self.media = true;
        }
        Ok(())
    }

    /// Whether this event left media to fetch.
    pub fn media_touched(&self) -> bool {
        self.media
    }

    /// Records an account-level event; notices never change once written.
    pub fn notice(
        &mut self,
        kind: &str,
        company_id: Option<&str>,
        data: &Value,
    ) -> Result<(), ProjectError> {
        if let Mode::Collect(_) = self.mode {
            return Ok(());
        }
        let data_text = data.to_string();
        let e = self.event;
        let n = self.db.exec(
            Stmt::new(rows::INSERT_NOTICE)
                .text(&e.source)
                .text(&e.event_id)
                .text(kind)
                .opt_text(company_id)
                .time(e.occurred_at)
                .json(&data_text)
                .text(&e.event_id)
                .time(e.occurred_at)
                .time(self.now),
        )?;
        self.changed |= n > 0;
        self.touch(&NOTICES, std::slice::from_ref(&e.event_id), n > 0);
        Ok(())
    }
}

/// Notices as a delivery names them: keyed by the event that recorded them.
static NOTICES: Mapping = Mapping::new("notices", &["id"], &[]);

fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>, ProjectError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ProjectError::BadEvent(format!(
            "stored {what} is not a JSON object"
        ))),
    }
}

/// Looks up a top-level key, or a dotted path into nested objects.
pub fn get_path<'v>(data: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = data.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = data.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn column_value(data: &Map<String, Value>, c: &Col) -> Val {
    let v = get_path(data, c.path).filter(|v| !v.is_null());
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => crate::json::canonical_number(n.as_str()).into_owned(),
        other => other.to_string(),
    };
    match c.kind {
        Kind::Text => Val::Text(v.map(text)),
        // Only a plain decimal reaches the column (`data` keeps whatever arrived): NUMERIC
        // would refuse anything else, and a column of amounts must hold amounts.
        Kind::Money => Val::Money(v.map(text).and_then(|t| plain_decimal(&t))),
        Kind::Json => Val::Json(v.map(Value::to_string)),
        Kind::Timestamp => Val::Time(v.and_then(Value::as_str).and_then(Stamp::parse)),
        Kind::Int => Val::Int(v.and_then(|v| match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.to_string()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })),
        Kind::Flag => Val::Bool(Some(true)),
        Kind::Bool => Val::Bool(v.and_then(Value::as_bool)),
    }
}

/// A money value as both backends store it: a plain decimal (`-12.50`, `1250`) in the form
/// PostgreSQL's NUMERIC prints it, no leading zeros, no sign on zero, the fraction's digits as
/// given; `None` for anything else (an exponent, `NaN`, `12,50`, more than 100 characters).
/// SQLite keeps the text, PostgreSQL the number; both then read back the same.
fn plain_decimal(t: &str) -> Option<String> {
    if t.len() > 100 {
        return None;
    }
    let (negative, unsigned) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, Some(f)),
        Some(_) => return None,
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !frac.is_none_or(digits) {
        return None;
    }
    let int = match int.trim_start_matches('0') {
        "" => "0",
        rest => rest,
    };
    let zero = int == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    let mut out = String::with_capacity(t.len());
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int);
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

/// Any object kind a provider has no table for: keyed by (source, kind, id).
pub static RECORDS: Mapping = Mapping::new("records", &["kind", "id"], &[]);

/// The tombstone effect of a lifecycle action (`created`, `CREATED`, ...): creates clear an
/// older tombstone, deletes set one at `at`, everything else leaves it alone.
pub fn tomb_for(action: &str, at: Stamp) -> Tomb {
    if action.eq_ignore_ascii_case("created") {
        Tomb::Clear
    } else if action.eq_ignore_ascii_case("deleted") {
        Tomb::Set(at)
    } else {
        Tomb::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_its_digits() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"amount": 1250.00, "tiny": 0.1000000000000000055511151231257827}"#,
        )
        .unwrap();
        match column_value(&data, &col("amount", "amount", Kind::Money)) {
            Val::Money(Some(s)) => assert_eq!(s, "1250.00"),
            _ => panic!("amount lost"),
        }
        match column_value(&data, &col("tiny", "tiny", Kind::Money)) {
            Val::Money(Some(s)) => assert_eq!(s, "0.1000000000000000055511151231257827"),
            _ => panic!("digits lost"),
        }
    }

    #[test]
    fn only_plain_decimals_reach_a_money_column() {
        for (given, stored) in [
            ("0", "0"),
            ("-12.50", "-12.50"),
            ("+3", "3"),
            ("1250.00", "1250.00"),
            ("007.50", "7.50"),
            ("-0", "0"),
            ("-0.00", "0.00"),
            ("-00.10", "-0.10"),
        ] {
            assert_eq!(plain_decimal(given).as_deref(), Some(stored), "{given}");
        }
        for bad in [
            "", "-", "+", "12,50", "1.", ".5", "NaN", "Infinity", "1e", "1e99999", "1e+999",
            "1.5e3", "2E-2", "12 EUR", "0x10", "--1", "1.2.3", " 1",
        ] {
            assert_eq!(plain_decimal(bad), None, "{bad}");
        }
        assert_eq!(plain_decimal(&"9".repeat(101)), None);
        let data: Map<String, Value> = serde_json::from_str(r#"{"amount": "N/A"}"#).unwrap();
        assert!(matches!(
            column_value(&data, &col("amount", "amount", Kind::Money)),
            Val::Money(None)
        ));
    }

    #[test]
    fn dotted_paths_reach_nested_fields() {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"invoice": {"invoiceNumber": "202601"}}"#).unwrap();
        assert_eq!(
            get_path(&data, "invoice.invoiceNumber").and_then(Value::as_str),
            Some("202601")
        );
        assert!(get_path(&data, "invoice.nope").is_none());
    }
}
