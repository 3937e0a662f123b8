//! When hooksync served: one row per process in `hooksync_runs`, started, kept alive every
//! [`BEAT`] and stopped, from which `hooksync status` reports the gaps when none served. A
//! process killed with `kill -9` or by a power cut leaves its last beat as its end.

use std::time::Duration;

use diesel::sql_types::{Nullable, Text};
use diesel::QueryableByName;
use serde::Serialize;

use crate::stamp::Stamp;
use crate::store::{Db, Stmt, StoreError};

/// How often a serving process says it is alive.
pub const BEAT: Duration = Duration::from_secs(5);

pub fn start(db: &mut Db, id: &str, now: Stamp) -> Result<(), StoreError> {
    db.exec(
        Stmt::new("INSERT INTO hooksync_runs (id, started_at, seen_at) VALUES (?, ?, ?)")
            .text(id)
            .time(now)
            .time(now),
    )
    .map(drop)
}

pub fn beat(db: &mut Db, id: &str, now: Stamp) -> Result<(), StoreError> {
    db.exec(
        Stmt::new("UPDATE hooksync_runs SET seen_at = ? WHERE id = ?")
            .time(now)
            .text(id),
    )
    .map(drop)
}

pub fn stop(db: &mut Db, id: &str, now: Stamp) -> Result<(), StoreError> {
    db.exec(
        Stmt::new("UPDATE hooksync_runs SET seen_at = ?, stopped_at = ? WHERE id = ?")
            .time(now)
            .time(now)
            .text(id),
    )
    .map(drop)
}

/// A time when no hooksync process served; `to` is `None` while none serves now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gap {
    pub from: Stamp,
    pub to: Option<Stamp>,
}

#[derive(QueryableByName)]
struct Run {
    #[diesel(sql_type = Text)]
    started_at: Stamp,
    #[diesel(sql_type = Text)]
    seen_at: Stamp,
    #[diesel(sql_type = Nullable<Text>)]
    stopped_at: Option<Stamp>,
}

/// The gaps since `since`, oldest first: the times no process was serving, whatever how many
/// instances share the database. A process not stopped whose last beat is recent still serves.
pub fn gaps(db: &mut Db, since: Stamp, now: Stamp) -> Result<Vec<Gap>, StoreError> {
    let b = db.backend();
    let sql = format!(
        "SELECT {} AS started_at, {} AS seen_at, {} AS stopped_at FROM hooksync_runs \
         WHERE seen_at >= ? ORDER BY started_at",
        b.time_text("started_at"),
        b.time_text("seen_at"),
        b.time_text("stopped_at")
    );
    let runs: Vec<Run> = db.load(Stmt::new(&sql).time(since))?;
    let alive_after = now.plus(-time::Duration::try_from(BEAT * 3).unwrap_or(time::Duration::ZERO));
    let mut out = Vec::new();
    let mut covered: Option<Stamp> = None;
    for r in runs {
        let end = match r.stopped_at {
            Some(at) => at,
            None if r.seen_at >= alive_after => now,
            None => r.seen_at,
        };
        match covered {
            Some(c) if r.started_at > c => out.push(Gap {
                from: c,
                to: Some(r.started_at),
            }),
            _ => {}
        }
        covered = Some(covered.map_or(end, |c| c.max(end)));
    }
    if let Some(c) = covered.filter(|c| *c < alive_after) {
        out.push(Gap { from: c, to: None });
    }
    Ok(out)
}
